//! The previous-boot verdict: did the box go down cleanly (the UPS shut it down: the
//! 30-minute timeline) or was it a hard cut (add hours: filesystem repair, journal recovery,
//! model re-verification)?
//!
//! [`EVIDENCE_COMMAND`] is one read-only shell command that gathers every piece of evidence in
//! one go, each under a `@@ NAME` line and closed by `@@ NAME exit N`; [`judge`] reads its
//! output. Pure: nothing here waits, prints or touches the outside world, and nothing panics
//! on what the target printed.
//!
//! The evidence, strongest first:
//! - journald in the **current** boot: `File ... corrupted or uncleanly shut down, renaming
//!   and replacing.`: the previous boot's journal files were never closed (unclean).
//! - the file system: the kernel's `EXT4-fs (...): recovery complete` or the initramfs fsck's
//!   `recovering journal` (`/run/initramfs/fsck.log`): the root was not unmounted (unclean);
//!   orphan clean-up lines corroborate.
//! - the **previous** boot's journal: systemd's "System shutdown initiated" record
//!   (`MESSAGE_ID=98268866d1d54a499c4e98921d93bc40`) and journald's own stop at the end
//!   (`Journal stopped`): both present is a clean shutdown; a journal that ends without them
//!   was cut off.
//! - `last -x`: wtmp's `shutdown` record before the current boot's `reboot` (clean), or a
//!   `crash`, or two `reboot` records with no `shutdown` between them (unclean): corroboration
//!   only.
//!
//! Without a persistent journal (no earlier boot in `journalctl --list-boots`) and without
//! file-system evidence, the verdict is unknown: a clean shutdown cannot be proved.

use std::fmt;

/// The `MESSAGE_ID` systemd logs when a shutdown begins ("System shutdown initiated").
pub const SHUTDOWN_MESSAGE_ID: &str = "98268866d1d54a499c4e98921d93bc40";

/// The read-only command run on the target (as the step's user; `journalctl` needs the
/// `systemd-journal` or `adm` group, or sudo). Each section is `@@ NAME`, the command's
/// output (stderr merged), then `@@ NAME exit N`.
pub const EVIDENCE_COMMAND: &str = "e() { n=$1; shift; echo \"@@ $n\"; \"$@\" 2>&1; echo \"@@ $n exit $?\"; }; \
e boot_id cat /proc/sys/kernel/random/boot_id; \
e boots sh -c 'journalctl --no-pager --list-boots | tail -n 3'; \
e unclean journalctl --no-pager -b 0 -t systemd-journald -g 'corrupted or uncleanly shut down'; \
e shutdown journalctl --no-pager -b -1 -o short-iso MESSAGE_ID=98268866d1d54a499c4e98921d93bc40; \
e journald_stop journalctl --no-pager -b -1 -o short-iso -t systemd-journald -n 5; \
e last last -x -F -n 6 shutdown reboot; \
e ext4 journalctl --no-pager -b 0 -k -o short-iso -g 'EXT4-fs .*(recovery complete|orphan)'; \
e fsck_log cat /run/initramfs/fsck.log";

/// What the evidence says, all sources together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Clean,
    Unclean,
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Clean => "clean",
            State::Unclean => "unclean",
            State::Unknown => "unknown",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way one piece of evidence points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Points {
    Clean,
    Unclean,
    /// Says why the evidence is missing (no journal, no permission).
    Neither,
}

/// One line of evidence: where it came from and the line itself (escaped, bounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub source: &'static str,
    pub points: Points,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootVerdict {
    pub state: State,
    /// One sentence: why this verdict.
    pub reason: String,
    pub evidence: Vec<Evidence>,
    /// The current boot id, when the output had it.
    pub boot_id: Option<String>,
}

/// One section of the evidence command's output.
#[derive(Debug, Clone, Default)]
struct Section {
    lines: Vec<String>,
    exit: Option<i32>,
}

/// The sections of the output by name; a name seen twice keeps the first.
fn sections(out: &str) -> Vec<(String, Section)> {
    let mut all: Vec<(String, Section)> = Vec::new();
    let mut current: Option<(String, Section)> = None;
    for raw in out.lines() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = line.strip_prefix("@@ ") {
            if let Some((name, code)) = rest.split_once(" exit ")
                && let Some((open, mut sec)) = current.take()
            {
                if open == name {
                    sec.exit = code.trim().parse().ok();
                }
                all.push((open, sec));
                continue;
            }
            if !rest.contains(' ') {
                if let Some(done) = current.take() {
                    all.push(done);
                }
                current = Some((rest.to_string(), Section::default()));
                continue;
            }
        }
        if let Some((_, sec)) = current.as_mut() {
            sec.lines.push(line.to_string());
        }
    }
    if let Some(done) = current.take() {
        all.push(done);
    }
    all
}

/// journalctl's informational lines (`-- No entries --`, `-- Boot ... --`) are not entries.
fn entries(sec: &Section) -> impl Iterator<Item = &str> {
    sec.lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("-- "))
}

/// journalctl could not read the system journal (not in `systemd-journal`/`adm`, no sudo).
fn no_permission(sec: &Section) -> bool {
    sec.lines.iter().any(|l| {
        l.contains("insufficient permissions")
            || l.contains("not seeing messages from other users and the system")
    })
}

/// journalctl says the previous boot is not in the journal. Without a persistent journal,
/// journalctl ignores `-b -1` and shows the *current* boot: its lines prove nothing.
fn no_previous_boot(sec: &Section) -> bool {
    sec.lines.iter().any(|l| {
        l.contains("is not available") || l.contains("No such boot ID") || volatile_line(l)
    })
}

fn volatile_line(l: &str) -> bool {
    l.contains("no persistent journal was found")
}

const LINE_MAX: usize = 200;

/// An evidence line as shown: control characters escaped, at most [`LINE_MAX`] characters.
fn shown(line: &str) -> String {
    let mut out = String::new();
    for c in line.trim().chars() {
        if out.chars().count() >= LINE_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Judges the output of [`EVIDENCE_COMMAND`].
pub fn judge(out: &str) -> BootVerdict {
    let secs = sections(out);
    let get = |name: &str| secs.iter().find(|(n, _)| n == name).map(|(_, s)| s);
    let empty = Section::default();
    let boot_id = get("boot_id")
        .and_then(|s| s.lines.first())
        .map(|l| l.trim().to_string())
        .filter(|l| l.len() >= 32 && l.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    let mut evidence = Vec::new();
    let mut push = |source, points, line: &str| {
        evidence.push(Evidence {
            source,
            points,
            line: shown(line),
        })
    };

    // The strong signs of a cut, each enough on its own.
    let unclean_sec = get("unclean").unwrap_or(&empty);
    let journald_unclean: Vec<&str> = entries(unclean_sec)
        .filter(|l| l.contains("uncleanly shut down"))
        .collect();
    for l in &journald_unclean {
        push("journald, this boot", Points::Unclean, l);
    }
    let ext4_sec = get("ext4").unwrap_or(&empty);
    let mut fs_unclean = false;
    for l in entries(ext4_sec) {
        if l.contains("recovery complete") {
            fs_unclean = true;
            push("kernel, this boot", Points::Unclean, l);
        } else if l.contains("orphan") {
            push("kernel, this boot", Points::Unclean, l);
        }
    }
    let fsck_sec = get("fsck_log").unwrap_or(&empty);
    for l in entries(fsck_sec) {
        if l.contains("recovering journal") {
            fs_unclean = true;
            push("initramfs fsck, this boot", Points::Unclean, l);
        } else if l.contains("Permission denied") {
            push(
                "initramfs fsck, this boot",
                Points::Neither,
                "cannot read /run/initramfs/fsck.log without sudo",
            );
        }
    }

    // The previous boot's journal.
    let shutdown_sec = get("shutdown").unwrap_or(&empty);
    let stop_sec = get("journald_stop").unwrap_or(&empty);
    let boots_sec = get("boots").unwrap_or(&empty);
    let denied = [unclean_sec, shutdown_sec, stop_sec, boots_sec]
        .iter()
        .any(|s| no_permission(s));
    let listed_boots = entries(boots_sec)
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<i64>().is_ok())
        })
        .count();
    let previous_in_journal = !denied
        && get("shutdown").is_some()
        && !no_previous_boot(shutdown_sec)
        && !no_previous_boot(stop_sec)
        && listed_boots >= 2;
    let volatile = [shutdown_sec, stop_sec]
        .iter()
        .any(|s| s.lines.iter().any(|l| volatile_line(l)));
    let shutdown_line = entries(shutdown_sec).last();
    let stop_line = entries(stop_sec)
        .filter(|l| l.contains("Journal stopped"))
        .last();
    if previous_in_journal {
        match shutdown_line {
            Some(l) => push("journal, previous boot", Points::Clean, l),
            None => push(
                "journal, previous boot",
                Points::Unclean,
                "no \"System shutdown initiated\" record (MESSAGE_ID=98268866d1d54a499c4e98921d93bc40)",
            ),
        }
        match stop_line {
            Some(l) => push("journal, previous boot", Points::Clean, l),
            None => push(
                "journal, previous boot",
                Points::Unclean,
                "journald's last lines do not include \"Journal stopped\"",
            ),
        }
    } else if denied {
        push(
            "journal",
            Points::Neither,
            "journalctl cannot read the system journal: run the step with sudo, or add the user to the systemd-journal group",
        );
    } else if volatile {
        push(
            "journal",
            Points::Neither,
            "no persistent journal (journalctl: \"no persistent journal was found\"): nothing of the previous boot was kept",
        );
    } else {
        push(
            "journal",
            Points::Neither,
            "the journal holds no earlier boot (the first boot, or the journal was emptied)",
        );
    }

    // wtmp, as corroboration.
    let mut last_clean = false;
    let mut last_crash = false;
    let last_sec = get("last").unwrap_or(&empty);
    let records: Vec<&str> = entries(last_sec)
        .filter(|l| l.starts_with("reboot") || l.starts_with("shutdown"))
        .collect();
    // Newest first: the current boot's `reboot` record, then what ended the one before.
    if let Some(pos) = records.iter().position(|l| l.starts_with("reboot")) {
        match records.get(pos + 1) {
            Some(l) if l.starts_with("shutdown") => {
                last_clean = true;
                push("last -x", Points::Clean, l);
            }
            Some(l) if l.contains("crash") => {
                last_crash = true;
                push("last -x", Points::Unclean, l);
            }
            // Two boots with no shutdown record between them: the older one never shut down.
            Some(l) if l.starts_with("reboot") => {
                last_crash = true;
                push("last -x", Points::Unclean, l);
            }
            _ => {}
        }
    }

    let journal_clean = previous_in_journal && shutdown_line.is_some() && stop_line.is_some();
    let (state, reason) = if !journald_unclean.is_empty() {
        (
            State::Unclean,
            "journald found the previous boot's journal files uncleanly shut down: the power was cut"
                .to_string(),
        )
    } else if fs_unclean {
        (
            State::Unclean,
            "the root file system's journal had to be replayed at boot: it was not unmounted cleanly"
                .to_string(),
        )
    } else if previous_in_journal && shutdown_line.is_none() {
        (
            State::Unclean,
            "the previous boot's journal ends without a shutdown: the power was cut".to_string(),
        )
    } else if previous_in_journal && stop_line.is_none() {
        (
            State::Unclean,
            "the previous boot began a shutdown but journald never stopped: the power went during the shutdown"
                .to_string(),
        )
    } else if journal_clean && last_crash {
        (
            State::Unknown,
            "the journal records a clean shutdown but wtmp (last -x) records a crash: check by hand"
                .to_string(),
        )
    } else if journal_clean {
        let also = if last_clean { ", and wtmp agrees" } else { "" };
        (
            State::Clean,
            format!(
                "the previous boot shut down cleanly (shutdown initiated, journal stopped{also})"
            ),
        )
    } else if denied {
        (
            State::Unknown,
            "journalctl cannot read the system journal: no evidence either way".to_string(),
        )
    } else {
        let hint = if last_crash {
            " (wtmp says crash, which alone proves nothing)"
        } else if last_clean {
            " (wtmp says shutdown, which alone proves nothing)"
        } else {
            ""
        };
        let what = if volatile {
            "no persistent journal"
        } else {
            "no earlier boot in the journal"
        };
        (
            State::Unknown,
            format!(
                "{what} and no file-system evidence: a clean shutdown cannot be told from a cut{hint}"
            ),
        )
    };
    BootVerdict {
        state,
        reason,
        evidence,
        boot_id,
    }
}

/// The verdict as a person types it: an `awk` program over the saved output of
/// [`EVIDENCE_COMMAND`] (`file`) that reads the sections as [`judge`] does and prints one line,
/// `CLEAN`, `UNCLEAN: <the sign>` or `UNKNOWN: <why>`, after an `UNREADABLE: ...` line for each
/// sign it could not read. `tests/binder_replay.rs` holds it to [`judge`] on every fixture.
pub fn typed_verdict(file: &str) -> String {
    let program = r#"{ sub(/\r$/, "") }
/^@@ / { q = substr($0, 4)
  if (s != "" && index(q, " exit ")) { s = ""; next }
  if (q !~ / /) { s = (q in seen) ? "@" : q; seen[q] = 1; next } }
s == "" { next }
s ~ /^(unclean|shutdown|journald_stop|boots)$/ && /insufficient permissions|not seeing messages from other users and the system/ { d = 1 }
s ~ /^(shutdown|journald_stop)$/ && /is not available|No such boot ID|no persistent journal was found/ { np = 1 }
s ~ /^(shutdown|journald_stop)$/ && /no persistent journal was found/ { v = 1 }
/^[[:space:]]*$/ || /^-- / { next }
s == "unclean" && /uncleanly shut down/ && !j { j = $0 }
(s == "ext4" && /recovery complete/ || s == "fsck_log" && /recovering journal/) && !f { f = $0 }
s == "fsck_log" && /Permission denied/ && !/recovering journal/ { fd = 1 }
s == "boots" && $1 ~ /^[+-]?[0-9]+$/ { b++ }
s == "shutdown" { sd = 1 }
s == "journald_stop" && /Journal stopped/ { st = 1 }
s == "last" && /^(reboot|shutdown)/ { r[++n] = $0 }
END { p = !d && ("shutdown" in seen) && !np && b >= 2; c = p && sd && st
  for (i = 1; i <= n; i++) if (r[i] ~ /^reboot/) { x = r[i + 1]; break }
  k = x !~ /^shutdown/ && (x ~ /crash/ || x ~ /^reboot/)
  if (fd) print "UNREADABLE: /run/initramfs/fsck.log (the step needs sudo: true)"
  if (d) print "UNREADABLE: the system journal (the step needs sudo: true)"
  if (j) print "UNCLEAN: " j; else if (f) print "UNCLEAN: " f
  else if (p && !sd) print "UNCLEAN: no shutdown in the journal of the previous boot"
  else if (p && !st) print "UNCLEAN: the previous boot began a shutdown, journald never stopped"
  else if (c && k) print "UNKNOWN: a clean shutdown in the journal, but a crash in wtmp"
  else if (c) print "CLEAN"; else if (d) print "UNKNOWN: cannot read the system journal"
  else if (v) print "UNKNOWN: no persistent journal, and no file-system sign"
  else print "UNKNOWN: no earlier boot in the journal, and no file-system sign" }"#;
    // Single-quoted as a whole: the program holds no single quote.
    debug_assert!(!program.contains('\''));
    format!("awk '{program}' {file}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/fixtures/lab/previous-boot-{name}.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn lines(v: &BootVerdict, points: Points) -> Vec<&str> {
        v.evidence
            .iter()
            .filter(|e| e.points == points)
            .map(|e| e.line.as_str())
            .collect()
    }

    #[test]
    fn the_fixtures_were_captured_with_the_evidence_command() {
        let tsv = include_str!("../fixtures/lab/commands-heal.tsv");
        let mut seen = 0;
        for line in tsv.lines() {
            let mut cols = line.splitn(3, '\t');
            let (Some(name), Some(exit), Some(cmd)) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            if name.starts_with("previous-boot-") {
                assert_eq!(cmd, EVIDENCE_COMMAND, "{name}");
                assert_eq!(exit, "0", "{name}");
                seen += 1;
            }
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn after_a_clean_shutdown_it_is_clean() {
        let v = judge(&fixture("after-shutdown"));
        assert_eq!(v.state, State::Clean, "{v:#?}");
        assert!(v.reason.contains("wtmp agrees"), "{}", v.reason);
        let clean = lines(&v, Points::Clean);
        assert!(
            clean
                .iter()
                .any(|l| l.ends_with("System is powering down.")),
            "{clean:?}"
        );
        assert!(
            clean.iter().any(|l| l.ends_with("Journal stopped")),
            "{clean:?}"
        );
        assert!(
            clean.iter().any(|l| l.starts_with("shutdown system down")),
            "{clean:?}"
        );
        assert!(lines(&v, Points::Unclean).is_empty(), "{v:#?}");
        assert_eq!(
            v.boot_id.as_deref(),
            Some("6c2636e4-5f36-4f66-800f-086a4949e3c8")
        );
    }

    #[test]
    fn after_a_power_cut_it_is_unclean() {
        let v = judge(&fixture("after-powercut"));
        assert_eq!(v.state, State::Unclean, "{v:#?}");
        assert!(v.reason.contains("uncleanly shut down"), "{}", v.reason);
        let unclean = lines(&v, Points::Unclean);
        assert!(
            unclean
                .iter()
                .any(|l| l.contains("system.journal corrupted or uncleanly shut down")),
            "{unclean:?}"
        );
        assert!(
            unclean
                .iter()
                .any(|l| l.contains("no \"System shutdown initiated\""))
        );
        assert!(unclean.iter().any(|l| l.contains("Journal stopped")));
        // wtmp: two boots with no shutdown between them.
        assert!(
            unclean.iter().any(|l| l.starts_with("reboot ")),
            "{unclean:?}"
        );
        assert!(lines(&v, Points::Clean).is_empty(), "{v:#?}");
    }

    #[test]
    fn without_a_persistent_journal_it_is_unknown() {
        let v = judge(&fixture("no-persistent-journal"));
        assert_eq!(v.state, State::Unknown, "{v:#?}");
        assert!(
            v.reason.starts_with("no persistent journal"),
            "{}",
            v.reason
        );
        // journalctl ignored -b -1 there: nothing it printed counts for the previous boot.
        assert!(lines(&v, Points::Clean).is_empty(), "{v:#?}");
        assert!(v.reason.contains("wtmp says crash"), "{}", v.reason);
    }

    #[test]
    fn on_the_first_boot_it_is_unknown() {
        let v = judge(&fixture("first-boot"));
        assert_eq!(v.state, State::Unknown, "{v:#?}");
        assert!(
            v.reason.starts_with("no earlier boot in the journal"),
            "{}",
            v.reason
        );
        assert!(
            lines(&v, Points::Neither)
                .iter()
                .any(|l| l.contains("fsck.log without sudo"))
        );
    }

    #[test]
    fn file_system_recovery_alone_is_unclean() {
        let out = "@@ boots\n  0 abc Thu\n@@ boots exit 0\n@@ fsck_log\nspark-root: recovering journal\nspark-root: clean, 1/2 files\n@@ fsck_log exit 0\n@@ ext4\n2026-12-03T13:56:01+0000 spark-lab kernel: EXT4-fs (vda): 1 orphan inode deleted\n@@ ext4 exit 0\n";
        let v = judge(out);
        assert_eq!(v.state, State::Unclean, "{v:#?}");
        assert!(v.reason.contains("replayed"), "{}", v.reason);
        assert_eq!(lines(&v, Points::Unclean).len(), 2);
    }

    #[test]
    fn a_shutdown_cut_short_is_unclean() {
        let text = fixture("after-shutdown").replace("Journal stopped", "Journal flushed");
        let v = judge(&text);
        assert_eq!(v.state, State::Unclean, "{v:#?}");
        assert!(v.reason.contains("during the shutdown"), "{}", v.reason);
    }

    #[test]
    fn without_permission_it_is_unknown_and_says_why() {
        let out = "@@ boots\nHint: You are currently not seeing messages from other users and the system.\n@@ boots exit 0\n@@ shutdown\nNo journal files were opened due to insufficient permissions.\n@@ shutdown exit 1\n";
        let v = judge(out);
        assert_eq!(v.state, State::Unknown, "{v:#?}");
        assert!(
            v.reason.contains("cannot read the system journal"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn garbage_never_panics_and_is_unknown() {
        for out in [
            "",
            "@@",
            "@@ \n@@ x exit\n@@ exit 1",
            "\u{1b}[31m@@ boots\n\0\n",
            "@@ unclean exit 0",
        ] {
            assert_eq!(judge(out).state, State::Unknown, "{out:?}");
        }
        let long = format!(
            "@@ unclean\n{} uncleanly shut down\x07\n",
            "x".repeat(10_000)
        );
        let v = judge(&long);
        assert_eq!(v.state, State::Unclean);
        assert!(v.evidence[0].line.chars().count() <= LINE_MAX + 1);
        assert!(!v.evidence[0].line.contains('\x07'));
    }
}
