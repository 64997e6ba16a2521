//! Templates in runbooks: `{{ vars.X }}`, `{{ env.X }}`, `{{ target.host }}`, `{{ run.elapsed }}`.
//!
//! Rendering is strict: an undefined name is an error, never an empty string. In shell
//! commands every substituted value is quoted for a POSIX shell.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, Value};

/// Names a template may use, checked before anything runs.
pub const TOP_LEVEL: [&str; 4] = ["vars", "env", "target", "run"];
pub const TARGET_FIELDS: [&str; 4] = ["name", "host", "user", "port"];
pub const RUN_FIELDS: [&str; 2] = ["elapsed", "events"];

/// Quote `s` for a POSIX shell: left alone when it is made only of safe characters.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Where a value is substituted: a shell command line, or plain text (URLs, messages, JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Shell,
    Text,
}

pub struct Templates {
    shell: Environment<'static>,
    text: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut shell = Environment::new();
        shell.set_undefined_behavior(UndefinedBehavior::Strict);
        shell.set_formatter(|out, _state, value| {
            let text = if let Some(s) = value.as_str() {
                s.to_owned()
            } else {
                value.to_string()
            };
            out.write_str(&shell_quote(&text)).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        });
        let mut text = Environment::new();
        text.set_undefined_behavior(UndefinedBehavior::Strict);
        Templates { shell, text }
    }

    fn env(&self, ctx: Context) -> &Environment<'static> {
        match ctx {
            Context::Shell => &self.shell,
            Context::Text => &self.text,
        }
    }

    /// The dotted names a template reads (`vars.api`, `env.TOKEN`), or a syntax error.
    pub fn names(&self, src: &str) -> Result<Vec<String>, String> {
        if !src.contains("{{") && !src.contains("{%") {
            return Ok(Vec::new());
        }
        let tmpl = self.text.template_from_str(src).map_err(|e| describe(&e))?;
        let mut names: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
        names.sort();
        Ok(names)
    }

    pub fn render(&self, src: &str, ctx: Context, values: &Values) -> Result<String, String> {
        if !src.contains("{{") && !src.contains("{%") {
            return Ok(src.to_owned());
        }
        self.env(ctx)
            .render_str(src, values.to_value())
            .map_err(|e| describe(&e))
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line()
        && line > 1
    {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

/// What a template can see.
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub vars: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub target: BTreeMap<String, String>,
    pub run: BTreeMap<String, String>,
}

impl Values {
    fn to_value(&self) -> Value {
        let mut top = BTreeMap::new();
        top.insert("vars", Value::from(self.vars.clone()));
        top.insert("env", Value::from(self.env.clone()));
        top.insert("target", Value::from(self.target.clone()));
        top.insert("run", Value::from(self.run.clone()));
        Value::from(top)
    }
}

/// Check one dotted name against what the runbook defines; `Err` says what is wrong.
pub fn check_name(name: &str, vars: &[&str], late_ok: bool) -> Result<(), String> {
    let (head, rest) = match name.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (name, None),
    };
    let fields: Vec<&str> = match head {
        "vars" => vars.to_vec(),
        "env" => {
            return rest.map(|_| ()).ok_or_else(|| {
                "`env` needs a variable name, like `env.RECOVER_WEBHOOK`".to_owned()
            });
        }
        "target" => TARGET_FIELDS.to_vec(),
        "run" => {
            if !late_ok {
                return Err(format!(
                    "`{name}` is only known while the run is going: use it in notify and abort messages"
                ));
            }
            RUN_FIELDS.to_vec()
        }
        _ => {
            return Err(format!(
                "`{name}` is not defined: templates can read {}",
                TOP_LEVEL.map(|t| format!("`{t}.…`")).join(", ")
            ));
        }
    };
    let Some(field) = rest else {
        return Err(format!(
            "`{head}` needs a field, like `{head}.{}`",
            fields.first().unwrap_or(&"name")
        ));
    };
    let field = field.split('.').next().unwrap_or(field);
    if fields.contains(&field) {
        Ok(())
    } else if fields.is_empty() {
        Err(format!(
            "`{name}` is not defined: this runbook has no `{head}`"
        ))
    } else {
        Err(format!(
            "`{name}` is not defined: {head} has {}",
            fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_words_alone_and_quotes_the_rest() {
        assert_eq!(shell_quote("/dev/nvme0n1p1"), "/dev/nvme0n1p1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quote("x;rm -rf /"), "'x;rm -rf /'");
    }

    #[test]
    fn shell_context_quotes_substituted_values_only() {
        let t = Templates::new();
        let mut v = Values::default();
        v.vars.insert("dev".into(), "/dev/sda 1; reboot".into());
        let out = t
            .render("fsck -n {{ vars.dev }} | tail", Context::Shell, &v)
            .unwrap();
        assert_eq!(out, "fsck -n '/dev/sda 1; reboot' | tail");
        let out = t.render("{{ vars.dev }}", Context::Text, &v).unwrap();
        assert_eq!(out, "/dev/sda 1; reboot");
    }

    #[test]
    fn undefined_names_are_errors_when_rendering() {
        let t = Templates::new();
        let err = t
            .render("{{ vars.nope }}", Context::Text, &Values::default())
            .unwrap_err();
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn names_lists_dotted_paths() {
        let t = Templates::new();
        let names = t.names("{{ vars.api }}/x {{ env.TOKEN }}").unwrap();
        assert_eq!(names, vec!["env.TOKEN", "vars.api"]);
        assert!(t.names("{{ vars.api ").is_err());
    }

    #[test]
    fn check_name_explains() {
        assert!(check_name("vars.api", &["api"], false).is_ok());
        let e = check_name("vars.apj", &["api"], false).unwrap_err();
        assert!(e.contains("`api`"), "{e}");
        assert!(check_name("run.elapsed", &[], false).is_err());
        assert!(check_name("run.elapsed", &[], true).is_ok());
        assert!(check_name("secrets.x", &[], true).is_err());
        assert!(check_name("target.host", &[], false).is_ok());
        assert!(check_name("env.X", &[], false).is_ok());
        assert!(check_name("env", &[], false).is_err());
    }
}
