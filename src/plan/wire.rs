//! The wire format: the exact line a target receives, the marker that finds it again, and
//! the line that kills it. The marker is formatted here and only here.

use std::time::Duration;

use super::Command;
use crate::template::shell_quote;

/// Grace the remote `timeout` gives a command between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// The command that reads the target's boot id: proof of a working SSH session.
pub const BOOT_ID_COMMAND: &str = "cat /proc/sys/kernel/random/boot_id";
/// `sync`, then drop the page cache, printing the cache size before and after as proof.
pub const DROP_CACHES_COMMAND: &str = "sync && grep ^Cached: /proc/meminfo && echo 3 > /proc/sys/vm/drop_caches && grep ^Cached: /proc/meminfo";

/// `recover:<runbook>:<step>`: a word unique to one step's remote processes.
pub fn marker(runbook: &str, step: usize) -> String {
    format!("recover:{runbook}:{step}")
}

/// `[sudo -n ]timeout -k 5s 60s sh -c 'CMD' MARKER`: the remote side dies at its deadline.
pub fn remote_wire(script: &str, sudo: bool, timeout: Duration, marker: &str) -> String {
    let mut s = String::new();
    if sudo {
        s.push_str("sudo -n ");
    }
    s.push_str(&format!(
        "timeout -k {}s {}s sh -c {} {}",
        KILL_GRACE.as_secs(),
        timeout.as_secs().max(1),
        shell_quote(script),
        marker
    ));
    s
}

/// `[sudo -n ]sh -c 'pkill -TERM -f PAT; sleep 1; pkill -KILL -f PAT; true'` where PAT
/// matches the marker at the end of a command line but not itself (`[r]ecover:...`).
pub fn kill_line(marker: &str, sudo: bool) -> String {
    let escaped = regex::escape(marker);
    let pat = match escaped.split_at_checked(1) {
        Some((first, rest)) => format!("[{first}]{rest}$"),
        None => escaped,
    };
    let q = shell_quote(&pat);
    let inner = format!("pkill -TERM -f {q}; sleep 1; pkill -KILL -f {q}; true");
    let script = format!("sh -c {}", shell_quote(&inner));
    if sudo {
        format!("sudo -n {script}")
    } else {
        script
    }
}

impl Command {
    /// A command run on the target: wrapped with its remote timeout, killable by its marker.
    pub fn remote(script: String, sudo: bool, timeout: Duration, marker: &str) -> Command {
        Command {
            wire: remote_wire(&script, sudo, timeout, marker),
            kill: Some(kill_line(marker, sudo)),
            script,
            sudo,
            marker: marker.to_owned(),
        }
    }

    /// A command run on the management host (`local:`), killed as a process group.
    pub fn local(script: String, marker: &str) -> Command {
        Command {
            wire: format!("sh -c {}", shell_quote(&script)),
            kill: None,
            script,
            sudo: false,
            marker: marker.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_line_does_not_match_itself() {
        let line = kill_line("recover:spark-power:4", true);
        assert_eq!(
            line,
            r#"sudo -n sh -c 'pkill -TERM -f '\''[r]ecover:spark\-power:4$'\''; sleep 1; pkill -KILL -f '\''[r]ecover:spark\-power:4$'\''; true'"#
        );
        let c = Command::remote(
            "true".into(),
            false,
            Duration::from_secs(3),
            &marker("x", 2),
        );
        assert_eq!(c.wire, "timeout -k 5s 3s sh -c true recover:x:2");
        assert_eq!(
            c.kill.as_deref(),
            Some(kill_line("recover:x:2", false).as_str())
        );
    }
}
