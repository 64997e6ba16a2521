//! What `rehearse` does with each step: read-only steps run, state-changing ones do not, and
//! some are checked instead by read-only lines decided here, shown by `--dry-run`.

use std::time::Duration;

use super::{Action, Command, Rehearse, Step};
use crate::template::shell_quote;

/// How long a rehearsal check may take on the target.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The rehearsal of a step with this action.
pub fn policy(action: &Action, mutates: bool) -> Rehearse {
    if !mutates {
        return Rehearse::Run;
    }
    match action {
        Action::Start { unit, start, .. } => {
            Rehearse::InspectUnit(unit_inspect(unit, &start.marker))
        }
        // A command that holds a secret: its words are not sent in a command line.
        Action::Run(c) if c.stdin.is_some() => Rehearse::WouldRun,
        Action::Run(c) => match path_check(&c.script, &c.marker) {
            Some(check) => Rehearse::CheckPaths(check),
            None => Rehearse::WouldRun,
        },
        _ => Rehearse::WouldRun,
    }
}

/// `systemctl show` with the unit's ordering and dependencies: the unit must exist and its
/// `After=` must agree with the runbook's order.
fn unit_inspect(unit: &str, marker: &str) -> Command {
    Command::remote(
        format!(
            "systemctl show -p LoadState -p ActiveState -p SubState -p Result -p After -p Requires -p Wants {}",
            shell_quote(unit)
        ),
        false,
        CHECK_TIMEOUT,
        marker,
    )
}

/// `sudo -n -l ARGS` for every argument list the step runs with sudo, which asks sudo whether
/// the target's sudoers permits it and runs nothing; prints each one it does not permit. Not
/// `recover drill`'s SIGKILL: a run never sends it, and only `recover sudoers --drill` permits
/// it.
pub fn sudo_check(step: &Step) -> Option<Command> {
    let mut seen: Vec<&Vec<String>> = Vec::new();
    let mut lines = Vec::new();
    let mut marker = None;
    let drill_kill = match &step.action {
        Action::Start { drill, .. } => Some(&drill.kill),
        _ => None,
    };
    for c in step.commands() {
        if drill_kill.is_some_and(|k| std::ptr::eq(k, c)) {
            continue;
        }
        for (i, argv) in c.sudo_argvs.iter().enumerate() {
            if seen.contains(&argv) {
                continue;
            }
            seen.push(argv);
            marker.get_or_insert(c.marker.as_str());
            let label = if i == 0 {
                format!("`{}`", c.script.lines().next().unwrap_or("").trim())
            } else {
                let signal = argv.get(1).map_or("", |s| s.trim_start_matches('-'));
                format!("its kill ({signal})")
            };
            let args: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
            lines.push(format!(
                "sudo -n -l {} >/dev/null 2>&1 || echo {}",
                args.join(" "),
                shell_quote(&label)
            ));
        }
    }
    let marker = marker?;
    Some(Command::remote(
        lines.join("; "),
        false,
        CHECK_TIMEOUT,
        marker,
    ))
}

/// Prints each absolute path `script` names that does not exist on the target.
fn path_check(script: &str, marker: &str) -> Option<Command> {
    let paths = absolute_paths(script);
    if paths.is_empty() {
        return None;
    }
    let quoted: Vec<String> = paths.iter().map(|p| shell_quote(p)).collect();
    let check = format!(
        "for p in {}; do [ -e \"$p\" ] || echo \"$p\"; done",
        quoted.join(" ")
    );
    Some(Command::remote(check, false, CHECK_TIMEOUT, marker))
}

/// Absolute paths named in a shell command (`/dev/nvme0n1p1`, `/opt/bin/reset`), outside /proc,
/// /sys and /tmp.
pub fn absolute_paths(script: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in script.split(|c: char| c.is_whitespace() || "'\";|&<>()=".contains(c)) {
        let ok = word.len() > 1
            && word.starts_with('/')
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._+-@:".contains(c))
            && !["/proc/", "/sys/", "/tmp/"]
                .iter()
                .any(|p| word.starts_with(p));
        if ok && !out.iter().any(|w| w == word) {
            out.push(word.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::absolute_paths;

    #[test]
    fn absolute_paths_finds_devices_and_files_but_not_proc() {
        assert_eq!(
            absolute_paths(
                "fsck -n /dev/nvme0n1p1 && cat /proc/meminfo > /tmp/x; /opt/bin/reset --all"
            ),
            vec!["/dev/nvme0n1p1", "/opt/bin/reset"]
        );
        assert!(absolute_paths("echo 3 > /proc/sys/vm/drop_caches").is_empty());
        assert_eq!(absolute_paths("mount '/srv/models'"), vec!["/srv/models"]);
    }
}
