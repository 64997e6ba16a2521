//! Values from the environment that must never be shown.

/// Values from the environment that must never be shown.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// (variable name, value) for each `env.X` used.
    pub values: Vec<(String, String)>,
    /// Variables used by the runbook but not set.
    pub missing: Vec<String>,
}

impl Secrets {
    /// Replace every secret value in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        self.replace(text, |_| "***".to_owned())
    }

    /// Replace every secret value with the variable to read, `$NAME`, for printed copies.
    pub fn as_variables(&self, text: &str) -> String {
        self.replace(text, |name| format!("${name}"))
    }

    fn replace(&self, text: &str, with: impl Fn(&str) -> String) -> String {
        let mut out = text.to_owned();
        let mut vals: Vec<&(String, String)> = self.values.iter().collect();
        vals.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        for (name, value) in vals {
            if value.len() >= 3 {
                out = out.replace(value.as_str(), &with(name));
            }
            out = out.replace(&placeholder(name), &with(name));
        }
        out
    }
}

/// What a missing environment variable renders as in a plan that is only shown.
pub fn placeholder(name: &str) -> String {
    format!("${{{name}}}")
}
