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

/// Where the programs a command sent with sudo names live on the target, written in full: sudo
/// looks a relative name up in the caller's `PATH` where its sudoers has no `secure_path`
/// (sudo's own default), so the account could put its own `sh` first and every rule would run
/// it as root. These are the paths of Debian, Ubuntu and DGX OS (`/bin` is `/usr/bin` there).
pub const TIMEOUT: &str = "/usr/bin/timeout";
pub const SH: &str = "/bin/sh";
pub const BASE64: &str = "/usr/bin/base64";
pub const PKILL: &str = "/usr/bin/pkill";
/// The `PATH` sudo gives the commands it runs for the drop-in's user (`Defaults:USER
/// secure_path=...`, written by `recover sudoers`): what the runbook's sudo commands find their
/// programs in. Debian's and Ubuntu's own `secure_path` (tools installed by hand live in
/// /usr/local/bin): directories only root can write. A program elsewhere is named in full.
pub const SECURE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `timeout -k 5s 60s sh -c 'CMD' MARKER`: the remote side dies at its deadline. A command
/// sent with sudo is `sudo -n` and [`sudo_argv`] instead.
pub fn remote_wire(script: &str, timeout: Duration, marker: &str) -> String {
    format!(
        "timeout -k {}s {}s sh -c {} {}",
        KILL_GRACE.as_secs(),
        timeout.as_secs().max(1),
        shell_quote(script),
        marker
    )
}

/// The `sh -c` program of a command that holds an `env` secret: it reads the command from its
/// stdin (to the end), gives the command `/dev/null` as stdin, as every command has, and runs
/// it. So the secret is never in a command line (`ps` shows every user of the box every command
/// line, `/proc/PID/cmdline`); it travels on the SSH channel (or the local pipe) and lives in
/// the shell's memory. A program the command hands it to as an argument shows it in its own
/// command line: have such programs read it from stdin or a file (`curl --config -`).
pub const STDIN_PROGRAM: &str = r#"s=$(cat; echo .) && s=${s%.} && exec </dev/null && eval "$s""#;

/// The `sh -c` program of every command sent with sudo: it decodes its `$0`, the command in
/// base64, and evaluates it. `${IFS}` stands for a blank: no argument of a sudo command holds
/// whitespace, so a sudoers rule matches it exactly (sudo compares the arguments joined by
/// spaces, which could not tell `sh -c 'a b'` from `sh -c a b`) and `recover sudoers` can
/// permit each command and nothing else.
/// `printf` and `eval` are built into `sh`; `base64` is named in full ([`BASE64`]).
pub const SUDO_PROGRAM: &str = r#"eval${IFS}"$(printf${IFS}%s${IFS}"$0"|/usr/bin/base64${IFS}-d)""#;

/// What `sudo -n` runs for `script`: `/usr/bin/timeout -k 5s T /bin/sh -c PROGRAM BASE64
/// MARKER`, every program named in full.
pub fn sudo_argv(script: &str, timeout: Duration, marker: &str) -> Vec<String> {
    [
        TIMEOUT,
        "-k",
        &format!("{}s", KILL_GRACE.as_secs()),
        &format!("{}s", timeout.as_secs().max(1)),
        SH,
        "-c",
        SUDO_PROGRAM,
        &base64(script.as_bytes()),
        marker,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `/usr/bin/pkill -SIGNAL -f PATTERN`: one signal to a step's remote processes, as sent with
/// sudo.
pub fn kill_argv(signal: &str, marker: &str) -> Vec<String> {
    [PKILL, &format!("-{signal}"), "-f", &kill_pattern(marker)]
        .map(str::to_owned)
        .to_vec()
}

/// The marker at the end of a command line, as a pattern that does not match the kill's own
/// command line (`[r]ecover:spark-power:4$`) and holds no backslash (sudoers).
pub fn kill_pattern(marker: &str) -> String {
    let mut out = String::new();
    for (i, c) in marker.chars().enumerate() {
        if i > 0 && (c.is_ascii_alphanumeric() || "-_:".contains(c)) {
            out.push(c);
        } else {
            out.extend(['[', c, ']']);
        }
    }
    out.push('$');
    out
}

/// `sudo -n ARG...`, each argument quoted for the login shell that receives the line.
pub fn sudo_line(argv: &[String]) -> String {
    let mut s = String::from("sudo -n");
    for a in argv {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

/// [`base64`], for tests elsewhere in the crate.
#[cfg(test)]
pub fn tests_base64(bytes: &[u8]) -> String {
    base64(bytes)
}

/// Standard base64 (RFC 4648, with padding, no line breaks): what `base64 -d` reads.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The line that kills a step's remote process tree (`timeout` passes the signal to it): TERM,
/// a second of grace, KILL. With sudo, each signal is its own `sudo -n pkill`, as the drop-in
/// permits it.
pub fn kill_line(marker: &str, sudo: bool) -> String {
    if sudo {
        format!(
            "{}; sleep 1; {}; true",
            sudo_line(&kill_argv("TERM", marker)),
            sudo_line(&kill_argv("KILL", marker))
        )
    } else {
        let q = shell_quote(&kill_pattern(marker));
        let inner = format!("pkill -TERM -f {q}; sleep 1; pkill -KILL -f {q}; true");
        format!("sh -c {}", shell_quote(&inner))
    }
}

impl Command {
    /// A command run on the target: wrapped with its remote timeout, killable by its marker.
    pub fn remote(script: String, sudo: bool, timeout: Duration, marker: &str) -> Command {
        let (wire, sudo_argvs) = if sudo {
            let argv = sudo_argv(&script, timeout, marker);
            let wire = sudo_line(&argv);
            let kills = [kill_argv("TERM", marker), kill_argv("KILL", marker)];
            (wire, [vec![argv], kills.to_vec()].concat())
        } else {
            (remote_wire(&script, timeout, marker), Vec::new())
        };
        Command {
            wire,
            kill: Some(kill_line(marker, sudo)),
            script,
            sudo,
            marker: marker.to_owned(),
            sudo_argvs,
            stdin: None,
        }
    }

    /// A command run on the target that holds an `env` secret: `timeout -k 5s T sh -c
    /// PROGRAM MARKER` ([`STDIN_PROGRAM`]), the command itself sent on its stdin. Never with
    /// sudo (the resolver refuses a secret there: a rule must name the exact command).
    pub fn remote_secret(script: String, timeout: Duration, marker: &str) -> Command {
        Command {
            wire: remote_wire(STDIN_PROGRAM, timeout, marker),
            kill: Some(kill_line(marker, false)),
            stdin: Some(script.clone()),
            script,
            sudo: false,
            marker: marker.to_owned(),
            sudo_argvs: Vec::new(),
        }
    }

    /// A command run on the management host (`local:`), killed as a process group. One that
    /// holds an `env` secret is `sh -c PROGRAM`, the command on its stdin, as on the target.
    pub fn local(script: String, marker: &str, secret: bool) -> Command {
        let (wire, stdin) = if secret {
            (
                format!("sh -c {}", shell_quote(STDIN_PROGRAM)),
                Some(script.clone()),
            )
        } else {
            (format!("sh -c {}", shell_quote(&script)), None)
        };
        Command {
            wire,
            kill: None,
            script,
            sudo: false,
            marker: marker.to_owned(),
            sudo_argvs: Vec::new(),
            stdin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_line_does_not_match_itself() {
        assert_eq!(
            kill_pattern("recover:spark-power.v2:4"),
            "[r]ecover:spark-power[.]v2:4$"
        );
        let line = kill_line("recover:spark-power:4", true);
        assert_eq!(
            line,
            "sudo -n /usr/bin/pkill -TERM -f '[r]ecover:spark-power:4$'; sleep 1; sudo -n /usr/bin/pkill -KILL -f '[r]ecover:spark-power:4$'; true"
        );
        let c = Command::remote(
            "true".into(),
            false,
            Duration::from_secs(3),
            &marker("x", 2),
        );
        assert_eq!(c.wire, "timeout -k 5s 3s sh -c true recover:x:2");
        assert!(c.sudo_argvs.is_empty());
        assert_eq!(
            c.kill.as_deref(),
            Some(kill_line("recover:x:2", false).as_str())
        );
    }

    #[test]
    fn a_sudo_command_has_no_blank_in_any_argument_and_its_kill_is_permitted_too() {
        let script = "dmesg | tail -50\nprintf '%s\\n' \"a b\"";
        let c = Command::remote(script.into(), true, Duration::from_secs(30), "recover:x:4");
        assert_eq!(c.sudo_argvs.len(), 3);
        for argv in &c.sudo_argvs {
            assert!(
                argv.iter().all(|a| !a.is_empty()
                    && !a.contains(char::is_whitespace)
                    && !a.contains('\\')),
                "{argv:?}"
            );
        }
        assert_eq!(c.wire, sudo_line(&c.sudo_argvs[0]));
        assert!(
            c.wire
                .starts_with("sudo -n /usr/bin/timeout -k 5s 30s /bin/sh -c "),
            "{}",
            c.wire
        );
        assert!(c.wire.ends_with(" recover:x:4"), "{}", c.wire);
        assert_eq!(
            c.sudo_argvs[1],
            ["/usr/bin/pkill", "-TERM", "-f", "[r]ecover:x:4$"]
        );
        // Every program a sudo command runs as root is named in full: none is looked up in
        // the caller's PATH (where sudo has no secure_path).
        for argv in &c.sudo_argvs {
            assert!(argv[0].starts_with('/'), "{argv:?}");
        }
        assert_eq!(c.sudo_argvs[0][4], SH);
        assert!(c.sudo_argvs[0][6].contains("|/usr/bin/base64${IFS}-d"));
    }

    #[test]
    fn base64_is_what_coreutils_decodes() {
        for text in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "dmesg | tail -50",
            "é\n\t\\%$'\"",
        ] {
            let out = std::process::Command::new("sh")
                .args([
                    "-c",
                    "printf %s \"$1\" | base64 -d",
                    "sh",
                    &base64(text.as_bytes()),
                ])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), text);
        }
        assert_eq!(base64(b"dmesg | tail -50"), "ZG1lc2cgfCB0YWlsIC01MA==");
    }

    #[test]
    fn the_sudo_program_runs_the_script_as_sh_would() {
        let script = "printf '%s|' \"a  b\" '$HOME' && echo \"$((6 * 7))\" \\\n  more; exit 3";
        let argv = sudo_argv(script, Duration::from_secs(5), "recover:x:1");
        // What `sudo -n` would run, without sudo.
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        let direct = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a  b|$HOME|42 more\n");
        assert_eq!(out.stdout, direct.stdout);
        assert_eq!(out.status.code(), Some(3));
    }
}
