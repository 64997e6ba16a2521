//! `recover sudoers`: a sudoers drop-in that permits exactly the commands a Plan sends with
//! `sudo -n`, and nothing else.
//!
//! Every program a rule names is written in full (`/usr/bin/timeout`, which runs `/bin/sh`,
//! which runs `/usr/bin/base64`), and the drop-in sets `Defaults:USER secure_path=...`, so
//! nothing a sudo command runs is looked up in the account's own `PATH`, even where the box's
//! sudoers has no `secure_path` of its own. `recover drill`'s SIGKILL of a unit's main process
//! is permitted only with `--drill`.
//!
//! sudo matches a rule's arguments against the command's arguments joined by single spaces, so
//! a rule is exact only if no argument contains whitespace (otherwise `sh -c 'a b'` and
//! `sh -c a b` would be the same command to sudo). The wire format guarantees that for every
//! command it sends with sudo (see `plan`'s wire module); [`Rule::new`] refuses any other.

use std::fmt::Write as _;

use crate::plan::wire::{PKILL, SECURE_PATH, TIMEOUT};
use crate::plan::{Action, Plan};

/// The programs the wire sends with sudo, each by its full path on the target.
pub const PROGRAMS: &[&str] = &[TIMEOUT, PKILL];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SudoersError {
    #[error("`{0}` is not a user name sudoers can hold: use letters, digits, `_`, `-` and `.`")]
    User(String),
    #[error("{what}: `{program}` is not a program recover sends with sudo")]
    Program { what: String, program: String },
    #[error(
        "{what}: an argument contains whitespace or a backslash, so no sudoers rule can match it exactly"
    )]
    Argument { what: String },
    #[error("target `{target}` has no `user:`, so the rules have nobody to name: give --user NAME")]
    NoUser { target: String },
}

/// One command sent with `sudo -n`, as a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it is, for the comment above the rule: `step 3 (Last kernel messages) on spark`.
    pub what: String,
    /// The command as the operator wrote it, shown in the comment (may span lines).
    pub plain: String,
    /// The program's absolute path on the target, as sent.
    pub path: String,
    /// The arguments after the program, each free of whitespace and backslashes.
    pub args: Vec<String>,
}

impl Rule {
    /// The rule for `sudo -n ARGV...` (`argv[0]` is the program's full path as sent).
    pub fn new(what: &str, plain: &str, argv: &[String]) -> Result<Rule, SudoersError> {
        let (program, args) = argv.split_first().ok_or_else(|| SudoersError::Program {
            what: what.to_owned(),
            program: String::new(),
        })?;
        let path = PROGRAMS
            .iter()
            .find(|path| **path == program.as_str())
            .map(|path| (*path).to_owned())
            .ok_or_else(|| SudoersError::Program {
                what: what.to_owned(),
                program: program.clone(),
            })?;
        if args
            .iter()
            .any(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c == '\\'))
        {
            return Err(SudoersError::Argument {
                what: what.to_owned(),
            });
        }
        Ok(Rule {
            what: what.to_owned(),
            plain: plain.to_owned(),
            path,
            args: args.to_vec(),
        })
    }

    /// The command as sudoers writes it: the path, then each argument with the characters
    /// sudoers gives a meaning (`,` `:` `=` `#`, and the wildcards `*` `?` `[` `]`) escaped.
    pub fn command(&self) -> String {
        let mut s = self.path.clone();
        for a in &self.args {
            s.push(' ');
            for c in a.chars() {
                if ",:=#*?[]!".contains(c) {
                    s.push('\\');
                }
                s.push(c);
            }
        }
        s
    }
}

/// A user name that can stand in a sudoers rule as it is.
pub fn valid_user(user: &str) -> Result<(), SudoersError> {
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
    if first_ok && rest_ok && user.len() <= 32 {
        Ok(())
    } else {
        Err(SudoersError::User(user.to_owned()))
    }
}

/// A comment line: control characters shown as `?`, never ending in a backslash (a line
/// continuation to sudoers).
fn comment(out: &mut String, text: &str) {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if line.ends_with('\\') {
        line.push_str(" (end of line)");
    }
    let _ = writeln!(out, "#{}{line}", if line.is_empty() { "" } else { " " });
}

/// The drop-in: a header, per user its `Defaults:USER secure_path=...`, then per rule its
/// comment and `USER ALL=(root) NOPASSWD: COMMAND`. A command already permitted to the same
/// user is written once.
pub fn render(header: &[String], rules: &[(String, Rule)]) -> Result<String, SudoersError> {
    let mut out = String::new();
    for line in header {
        comment(&mut out, line);
    }
    let mut users: Vec<&str> = Vec::new();
    for (user, _) in rules {
        valid_user(user)?;
        if !users.contains(&user.as_str()) {
            users.push(user);
        }
    }
    for user in users {
        out.push('\n');
        comment(
            &mut out,
            "What the commands below find their programs in, whatever PATH the account has.",
        );
        let _ = writeln!(out, "Defaults:{user} secure_path=\"{SECURE_PATH}\"");
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    for (user, rule) in rules {
        let key = (user.clone(), rule.command());
        if seen.contains(&key) {
            continue;
        }
        out.push('\n');
        comment(&mut out, &format!("{}:", rule.what));
        for line in rule.plain.lines() {
            comment(&mut out, &format!("    {line}"));
        }
        let _ = writeln!(out, "{user} ALL=(root) NOPASSWD: {}", key.1);
        seen.push(key);
    }
    if rules.is_empty() {
        out.push('\n');
        comment(
            &mut out,
            "The runbook sends no command with sudo: this file permits nothing.",
        );
    }
    Ok(out)
}

/// The drop-in for `plan`: every argument list its commands run with `sudo -n`, for `user`
/// (default: each target's own user). `recover drill`'s SIGKILL of each unit's main process
/// only with `drill` (the same command as a gate's `remedy: kill` is permitted for the remedy).
pub fn drop_in(plan: &Plan, user: Option<&str>, drill: bool) -> Result<String, SudoersError> {
    let mut rules = Vec::new();
    for step in plan.phases.iter().flat_map(|p| &p.steps) {
        let target = plan.targets.get(step.target);
        let on = target.map(|t| t.name.as_str()).unwrap_or("the target");
        let drill_kill = match &step.action {
            Action::Start { drill: d, .. } if !drill => Some(&d.kill),
            _ => None,
        };
        for c in step.commands() {
            if drill_kill.is_some_and(|k| std::ptr::eq(k, c)) {
                continue;
            }
            let Some((command, kills)) = c.sudo_argvs.split_first() else {
                continue;
            };
            let who = match (user, target.and_then(|t| t.user.as_deref())) {
                (Some(u), _) | (None, Some(u)) => u.to_owned(),
                (None, None) => {
                    return Err(SudoersError::NoUser {
                        target: on.to_owned(),
                    });
                }
            };
            let what = format!("step {} ({}) on {on}", step.number, step.name);
            rules.push((who.clone(), Rule::new(&what, &c.script, command)?));
            for kill in kills {
                let signal = kill.get(1).map_or("", |s| s.trim_start_matches('-'));
                let what = format!(
                    "step {}: its remote kill ({signal}), on a timeout or Ctrl-C",
                    step.number
                );
                rules.push((who.clone(), Rule::new(&what, "", kill)?));
            }
        }
    }
    let file = format!("recover-{}", plan.name.replace('.', "-"));
    let header = [
        format!(
            "Generated by recover {} from {} (sha256 {}).",
            env!("CARGO_PKG_VERSION"),
            plan.source.display(),
            plan.sha256
        ),
        format!(
            "It permits exactly the commands runbook `{}` sends with `sudo -n`, each with its exact",
            plan.name
        ),
        "arguments (deadline, command, kill marker), and nothing else. Check it and install it:"
            .into(),
        format!("  visudo -cf {file} && sudo install -m 0440 {file} /etc/sudoers.d/{file}"),
        "Generate it again when the runbook's sudo commands change: `recover rehearse` lists"
            .into(),
        "every command the installed drop-in no longer permits.".into(),
        if drill {
            "With --drill: it also permits `recover drill`'s SIGKILL of each unit's main process."
                .into()
        } else {
            "`recover drill` needs its SIGKILL rules too: `recover sudoers --drill`.".into()
        },
    ];
    render(&header, &rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn a_rule_escapes_what_sudoers_gives_a_meaning() {
        let r = Rule::new(
            "kill",
            "",
            &argv(&["/usr/bin/pkill", "-TERM", "-f", "[r]ecover:a,b=c#d*e?$"]),
        )
        .unwrap();
        assert_eq!(
            r.command(),
            r"/usr/bin/pkill -TERM -f \[r\]ecover\:a\,b\=c\#d\*e\?$"
        );
    }

    #[test]
    fn a_rule_refuses_what_it_cannot_match_exactly() {
        for bad in [
            argv(&["/usr/bin/timeout", "sh", "-c", "a b"]),
            argv(&["/usr/bin/timeout", "sh", "-c", "a\tb"]),
            argv(&["/usr/bin/timeout", "sh", "-c", r"a\b"]),
            argv(&["/usr/bin/timeout", ""]),
        ] {
            assert!(
                matches!(Rule::new("x", "", &bad), Err(SudoersError::Argument { .. })),
                "{bad:?}"
            );
        }
        // A program by name (looked up in PATH where sudo has no secure_path), or one the
        // wire never sends with sudo, has no rule.
        for bad in [
            argv(&["sh", "-c", "id"]),
            argv(&["timeout", "5s", "/bin/sh", "-c", "id"]),
            argv(&["pkill", "-f", "x"]),
            argv(&["/bin/sh", "-c", "id"]),
        ] {
            assert!(
                matches!(Rule::new("x", "", &bad), Err(SudoersError::Program { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn users_that_could_inject_rules_are_refused() {
        for bad in [
            "",
            "ALL",
            "ops ALL=(ALL) ALL",
            "ops,root",
            "%sudo",
            "1ops",
            "o:ps",
        ] {
            assert!(valid_user(bad).is_err(), "{bad}");
        }
        for ok in ["ops", "recover", "_svc", "ops-1", "a.b"] {
            assert!(valid_user(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn comments_cannot_continue_onto_the_rule() {
        let r = Rule::new(
            "step 1",
            "echo a \\\nb\u{7}",
            &argv(&["/usr/bin/pkill", "-f", "x"]),
        )
        .unwrap();
        let rules = [("ops".to_owned(), r.clone()), ("ops".to_owned(), r)];
        let text = render(&["head".into()], &rules).unwrap();
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with('#') && l.ends_with('\\')),
            "{text}"
        );
        assert!(text.contains("#     b?\n"), "{text}");
        assert_eq!(text.matches("NOPASSWD").count(), 1, "{text}");
    }

    fn plan(text: &str) -> Plan {
        let loaded = crate::runbook::parse(std::path::Path::new("d.yaml"), text, String::new())
            .expect("parses");
        crate::plan::resolve(&loaded, &crate::plan::Options::default()).expect("resolves")
    }

    const DRILLED: &str = r#"
name: d
budget: 10m
targets:
  box: { host: box.local, user: ops }
phases:
  - name: All
    window: 0m-10m
    steps:
      - start: api.service
        health:
          run: "true"
      - start: web.service
        health:
          run: "true"
          remedy: kill
"#;

    #[test]
    fn the_drills_sigkill_is_permitted_only_with_drill_and_secure_path_is_set() {
        let p = plan(DRILLED);
        let kill_of = |unit: &str| {
            let s = p
                .phases
                .iter()
                .flat_map(|ph| &ph.steps)
                .find(|s| matches!(&s.action, Action::Start { unit: u, .. } if u == unit))
                .unwrap();
            let Action::Start { drill, .. } = &s.action else {
                unreachable!()
            };
            Rule::new("k", "", &drill.kill.sudo_argvs[0])
                .unwrap()
                .command()
        };
        let (api, web) = (kill_of("api.service"), kill_of("web.service"));
        let without = drop_in(&p, None, false).unwrap();
        let with = drop_in(&p, None, true).unwrap();
        assert!(!without.contains(&api), "{without}");
        assert!(with.contains(&api), "{with}");
        // web's remedy is the same SIGKILL: permitted for the remedy, drill or not.
        assert!(without.contains(&web) && with.contains(&web), "{without}");
        assert!(without.contains("recover sudoers --drill"), "{without}");
        for text in [&without, &with] {
            let line = format!("Defaults:ops secure_path=\"{SECURE_PATH}\"\n");
            assert_eq!(text.matches(&line).count(), 1, "{text}");
            assert!(
                text.find(&line) < text.find("NOPASSWD"),
                "the Defaults line comes before the rules:\n{text}"
            );
            for rule in text.lines().filter(|l| l.contains("NOPASSWD")) {
                let cmd = rule.split("NOPASSWD: ").nth(1).unwrap();
                assert!(
                    cmd.starts_with("/usr/bin/timeout -k 5s ")
                        && cmd.contains(" /bin/sh -c ")
                        && cmd.contains("|/usr/bin/base64${IFS}-d)")
                        || cmd.starts_with("/usr/bin/pkill -"),
                    "{rule}"
                );
            }
        }
        // The rehearsal asks sudo about every command but the drill's SIGKILL.
        for s in p.phases.iter().flat_map(|ph| &ph.steps) {
            let Action::Start { drill, unit, .. } = &s.action else {
                continue;
            };
            let check = s.sudo_check.as_ref().unwrap();
            let kill = crate::template::shell_quote(&drill.kill.sudo_argvs[0][7]);
            assert_eq!(
                check.script.contains(&kill),
                unit == "web.service",
                "{}",
                check.script
            );
        }
    }
}
