//! Command lines for a person to type: secrets as shell variables, sudo without the wrapper.

use crate::plan::Command;
use crate::secrets::{Needle, Secrets};
use crate::template::shell_quote;

/// Replace every secret in a shell command line (its value, or the placeholder of an unset
/// one) with a reference to its environment variable, quoted so that the line still does the
/// same thing when typed: always `"$NAME"`, closing and reopening the quotes around it.
///
/// The line is read the way a POSIX shell reads it, so a secret inside the quoted remote
/// command of an `ssh` line is expanded on the management host and reaches the target
/// exactly where the value stood.
pub fn secrets_as_variables(line: &str, secrets: &Secrets) -> String {
    let needles = secrets.needles();
    if needles.is_empty() {
        return line.to_owned();
    }

    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut out = String::with_capacity(line.len());
    let mut quote = Quote::None;
    // Where the text of the current single-quoted run starts in `out`.
    let mut opened_at = 0;
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        if let Some(Needle { text: needle, name }) =
            needles.iter().find(|n| rest.starts_with(n.text.as_str()))
        {
            i += needle.len();
            let close = match quote {
                Quote::None => None,
                Quote::Single => Some('\''),
                Quote::Double => Some('"'),
            };
            let Some(q) = close else {
                out.push_str(&format!("\"${name}\""));
                continue;
            };
            // Close the quotes (or drop them if nothing is in them yet), put the variable in
            // double quotes, and reopen them unless they were about to close anyway.
            if out.len() == opened_at {
                out.pop();
            } else {
                out.push(q);
            }
            out.push_str(&format!("\"${name}\""));
            if line[i..].starts_with(q) {
                i += 1;
                quote = Quote::None;
            } else {
                out.push(q);
                opened_at = out.len();
            }
            continue;
        }
        let Some(c) = rest.chars().next() else { break };
        i += c.len_utf8();
        out.push(c);
        match (&quote, c) {
            (Quote::None, '\'') => {
                quote = Quote::Single;
                opened_at = out.len();
            }
            (Quote::None, '"') => {
                quote = Quote::Double;
                opened_at = out.len();
            }
            (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::None,
            (Quote::None | Quote::Double, '\\') => {
                if let Some(n) = line[i..].chars().next() {
                    out.push(n);
                    i += n.len_utf8();
                }
            }
            _ => {}
        }
    }
    out
}

/// The command as a person types it once logged in: `sudo` in front when it needs root
/// (through `sh -c` when the script uses the shell, so pipes and redirections run as root
/// too), without the remote timeout and kill marker the tool adds.
pub fn as_typed(c: &Command) -> String {
    if !c.sudo {
        return c.script.clone();
    }
    let plain = c
        .script
        .chars()
        .all(|ch| !"|&;<>()$`\\*?[]{}~!#\n".contains(ch));
    if plain {
        format!("sudo {}", c.script)
    } else {
        format!("sudo sh -c {}", shell_quote(&c.script))
    }
}

/// The remote command as one argument of the login function: `'sudo sh -c "a | b"'`,
/// single quotes outside and, when `sudo` needs a shell, double quotes inside, so that no
/// `'\''` appears unless the script itself has quotes or expansions.
pub fn remote_arg(c: &Command) -> String {
    let typed = as_typed(c);
    let simple = !c.script.chars().any(|ch| "'\"$`\\!".contains(ch));
    if c.sudo && simple && typed.starts_with("sudo sh -c ") {
        return format!("'sudo sh -c \"{}\"'", c.script);
    }
    if typed.contains('\'') {
        shell_quote(&typed)
    } else {
        format!("'{typed}'")
    }
}

/// A name for the login function of a target: its name when that is a shell identifier.
pub fn function_name(target: &str) -> String {
    let mut f: String = target
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !f.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        f.insert(0, '_');
    }
    f
}

#[cfg(test)]
mod tests {
    #[test]
    fn remote_arguments_avoid_nested_single_quotes() {
        assert_eq!(
            remote_arg(&cmd("dmesg | tail -50", true)),
            r#"'sudo sh -c "dmesg | tail -50"'"#
        );
        assert_eq!(
            remote_arg(&cmd("fsck -n /dev/vda", true)),
            "'sudo fsck -n /dev/vda'"
        );
        assert_eq!(
            remote_arg(&cmd("echo $HOME | cat", true)),
            r"'sudo sh -c '\''echo $HOME | cat'\'''"
        );
        assert_eq!(function_name("spark-lab"), "spark_lab");
        assert_eq!(function_name("1box"), "_1box");
    }

    use super::*;
    use std::time::Duration;

    fn secrets() -> Secrets {
        Secrets {
            values: vec![("TOKEN".into(), "s3cr3t-value".into())],
            missing: vec!["RECOVER_WEBHOOK".into()],
            ..Secrets::default()
        }
    }

    #[test]
    fn a_whole_quoted_secret_becomes_a_double_quoted_variable() {
        let line = "curl -sS -X POST '${RECOVER_WEBHOOK}'";
        assert_eq!(
            secrets_as_variables(line, &secrets()),
            "curl -sS -X POST \"$RECOVER_WEBHOOK\""
        );
    }

    #[test]
    fn a_secret_inside_single_quotes_closes_and_reopens_them() {
        let line = "curl -H 'Authorization: Bearer s3cr3t-value' -H 'X: s3cr3t-value!'";
        assert_eq!(
            secrets_as_variables(line, &secrets()),
            "curl -H 'Authorization: Bearer '\"$TOKEN\" -H 'X: '\"$TOKEN\"'!'"
        );
    }

    #[test]
    fn unquoted_and_double_quoted_secrets() {
        assert_eq!(
            secrets_as_variables(
                "curl s3cr3t-value \"a s3cr3t-value\" \"s3cr3t-value\"",
                &secrets()
            ),
            "curl \"$TOKEN\" \"a \"\"$TOKEN\" \"$TOKEN\""
        );
    }

    #[test]
    fn escaped_quotes_are_followed_like_a_shell_does() {
        // ssh HOST 'sh -c '\''echo s3cr3t-value'\'''
        let line = r"ssh h 'sh -c '\''echo s3cr3t-value'\'''";
        let out = secrets_as_variables(line, &secrets());
        assert_eq!(out, r#"ssh h 'sh -c '\''echo '"$TOKEN"\'''"#);
        assert!(!out.contains("s3cr3t"));
    }

    #[test]
    fn lines_without_secrets_are_unchanged() {
        let line = r"ssh -p 22 ops@spark.local 'sudo -n sh -c '\''dmesg | tail'\'''";
        assert_eq!(secrets_as_variables(line, &secrets()), line);
        assert_eq!(secrets_as_variables(line, &Secrets::default()), line);
    }

    fn cmd(script: &str, sudo: bool) -> Command {
        Command::remote(script.into(), sudo, Duration::from_secs(10), "recover:x:1")
    }

    #[test]
    fn sudo_goes_through_a_shell_only_when_the_script_needs_one() {
        assert_eq!(
            as_typed(&cmd("fsck -n /dev/nvme0n1p1", true)),
            "sudo fsck -n /dev/nvme0n1p1"
        );
        assert_eq!(
            as_typed(&cmd("dmesg | tail -50", true)),
            "sudo sh -c 'dmesg | tail -50'"
        );
        assert_eq!(
            as_typed(&cmd("echo 3 > /proc/sys/vm/drop_caches", true)),
            "sudo sh -c 'echo 3 > /proc/sys/vm/drop_caches'"
        );
        assert_eq!(as_typed(&cmd("dmesg | tail", false)), "dmesg | tail");
    }
}
