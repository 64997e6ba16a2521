//! `recover sudoers`: the drop-in, tried with the real sudo of this machine (issue 11, item 4).
//!
//! As root, each test creates a throwaway user and installs the generated drop-in in
//! /etc/sudoers.d (removed again when the test ends, pass or fail). Every line the Plan sends
//! with `sudo -n` (from `--dry-run`, not from the drop-in) must be permitted, and the user may
//! run nothing else as root: `sudo -n id`, another timeout, another script, the old wire format
//! are refused. Through the real sshd of tests/common, a run as that user runs its sudo steps
//! and Ctrl-C kills the remote root process with the drop-in's kill rules alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::process::{Background, eventually, text};
use common::skip::require_tool;
use common::{Sshd, recover_in};

static USERS: AtomicUsize = AtomicUsize::new(0);

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A user made for one test, with no rights but the drop-ins it is given. Dropping it removes
/// the drop-ins, its processes and the user.
struct SudoUser {
    name: String,
    dropins: Vec<PathBuf>,
}

impl SudoUser {
    fn create() -> Option<SudoUser> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            common::skip::skipped_unless_ci(
                "needs root (creates a user and installs a sudoers drop-in)",
            );
            return None;
        }
        require_tool(&["sudo"])?;
        require_tool(&["visudo", "/usr/sbin/visudo"])?;
        require_tool(&["useradd", "/usr/sbin/useradd"])?;
        let name = format!(
            "rcvt{}{}",
            std::process::id(),
            USERS.fetch_add(1, Ordering::SeqCst)
        );
        let out = run("useradd", &["--create-home", "--shell", "/bin/sh", &name]);
        assert!(out.status.success(), "useradd {name}:\n{}", show(&out));
        let user = SudoUser {
            name,
            dropins: Vec::new(),
        };
        // No password, not a locked one: sshd without PAM refuses key logins to locked accounts.
        let out = run("usermod", &["-p", "*", &user.name]);
        assert!(out.status.success(), "{}", show(&out));
        Some(user)
    }

    /// Installs `text` as a drop-in, after visudo accepted it.
    fn install(&mut self, text: &str) {
        let file = format!("zz-recover-test-{}", self.name);
        self.install_as(&file, text);
    }

    /// Installs `text` as /etc/sudoers.d/FILE (sudo reads them in the order of their names).
    fn install_as(&mut self, file: &str, text: &str) {
        let path = PathBuf::from(format!("/etc/sudoers.d/{file}"));
        let staged = std::env::temp_dir().join(format!("recover-test-{file}.sudoers"));
        std::fs::write(&staged, text).unwrap();
        let out = run("visudo", &["-cf", staged.to_str().unwrap()]);
        assert!(out.status.success(), "visudo -cf:\n{}\n{text}", show(&out));
        let out = run(
            "install",
            &[
                "-m",
                "0440",
                staged.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", show(&out));
        let _ = std::fs::remove_file(&staged);
        self.dropins.push(path);
        let out = run("visudo", &["-c"]);
        assert!(
            out.status.success(),
            "the machine's sudoers:\n{}",
            show(&out)
        );
    }

    /// `line` run by this user's shell, as sshd would run it.
    fn shell(&self, line: &str) -> Output {
        run("sudo", &["-u", &self.name, "sh", "-c", line])
    }

    /// Removes every drop-in installed so far.
    fn uninstall(&mut self) {
        for p in self.dropins.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }

    fn home(&self) -> PathBuf {
        PathBuf::from(format!("/home/{}", self.name))
    }
}

impl Drop for SudoUser {
    fn drop(&mut self) {
        for p in &self.dropins {
            let _ = std::fs::remove_file(p);
        }
        let _ = run("pkill", &["-KILL", "-u", &self.name]);
        let _ = run("userdel", &["--remove", &self.name]);
    }
}

/// Every `sudo -n ...` the dry-run shows (the kill lines hold two, joined by `; `), but the
/// rehearsal's `sudo -n -l` questions about them and `recover drill`'s lines (`sudoers
/// --drill` permits them, see [`drill_lines`]).
fn sudo_lines(dry_run: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in dry_run.lines() {
        if line.trim_start().starts_with("drill ") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("sudo -n ") {
            let seg = &rest[i..];
            let end = seg.find("; ").unwrap_or(seg.len());
            let cmd = seg[..end].trim_end().to_owned();
            if !cmd.starts_with("sudo -n -l ") && !out.contains(&cmd) {
                out.push(cmd);
            }
            rest = &seg[end..];
        }
    }
    out
}

/// The `sudo -n` lines of `recover drill` (its SIGKILL of the unit's main process).
fn drill_lines(dry_run: &str) -> Vec<String> {
    dry_run
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("drill "))
        .map(str::trim)
        .filter(|l| l.starts_with("sudo -n "))
        .map(str::to_owned)
        .collect()
}

/// `sudo -n ARGS` as `sudo -n -l ARGS`: asks whether it is permitted, runs nothing.
fn listed(line: &str) -> String {
    line.replacen("sudo -n ", "sudo -n -l ", 1)
}

const STEPS: &str = r#"
      - name: whoami
        run: id -u
        sudo: true
        timeout: 30s
      - name: quoting
        run: |
          printf '%s|%s\n' "a, b: c=d" '#x*?[y]!'
          echo "$((6 * 7))"  \
            done
        sudo: true
        timeout: 40s
      - drop_caches: {}
      - previous_boot: { on_unclean: continue }
        sudo: true
        timeout: 30s
      - start: recover-test-nonexistent.service
        timeout: 1m
        health:
          run: systemctl is-active recover-test-nonexistent.service
          every: 1s
          timeout: 10s
      - name: not root
        run: id -un
"#;

fn runbook(dir: &Path, name: &str, target: &str, steps: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nbudget: 10m\ntargets:\n{target}phases:\n  - name: All\n    window: 0m-10m\n    steps:{steps}"
        ),
    )
    .unwrap();
    path
}

fn stdout_of(state: &Path, args: &[&str]) -> String {
    let out = recover_in(state).args(args).output().unwrap();
    assert!(out.status.success(), "recover {args:?}:\n{}", show(&out));
    text(&out.stdout)
}

#[test]
fn the_drop_in_permits_every_sudo_line_of_the_plan_and_nothing_else() {
    let Some(mut user) = SudoUser::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = format!("  box:\n    host: 127.0.0.1\n    user: {}\n", user.name);
    let rb = runbook(dir.path(), "sudo-t", &target, STEPS);
    let rb = rb.to_str().unwrap();

    let dropin = stdout_of(dir.path(), &["sudoers", rb]);
    let dry = stdout_of(dir.path(), &["run", "--dry-run", rb]);
    let lines = sudo_lines(&dry);
    // Per sudo command its line and two kill signals: the two run steps, drop_caches,
    // previous_boot, the
    // start, its gate's state read, probe and journal read, sharing the start's kill.
    assert!(lines.len() >= 10, "{lines:#?}\n{dry}");
    assert!(!dry.contains("sudo -n id -un"), "{dry}");

    for line in &lines {
        let out = user.shell(&listed(line));
        assert!(
            !out.status.success(),
            "permitted before the drop-in: {line}"
        );
    }
    user.install(&dropin);
    assert_eq!(
        dropin.matches("NOPASSWD").count(),
        lines.len(),
        "one rule per distinct sudo line:\n{dropin}\n{lines:#?}"
    );
    for line in &lines {
        let out = user.shell(&listed(line));
        assert!(
            out.status.success(),
            "not permitted: {line}\n{}",
            show(&out)
        );
        let out = root_lists(&user, line);
        assert!(out.status.success(), "sudo -l -U: {line}\n{}", show(&out));
    }
    // The drill's SIGKILL only with `--drill`.
    let drills = drill_lines(&dry);
    assert_eq!(drills.len(), 1, "{dry}");
    let out = user.shell(&listed(&drills[0]));
    assert!(
        !out.status.success(),
        "permitted without --drill: {}",
        drills[0]
    );
    let with_drill = stdout_of(dir.path(), &["sudoers", "--drill", rb]);
    assert_eq!(
        with_drill.matches("NOPASSWD").count(),
        lines.len() + 1,
        "{with_drill}"
    );
    user.uninstall();
    user.install(&with_drill);
    for line in lines.iter().chain(&drills) {
        let out = user.shell(&listed(line));
        assert!(
            out.status.success(),
            "not permitted: {line}\n{}",
            show(&out)
        );
    }

    // The lines really run as root, with the runbook's quoting intact.
    let whoami = lines
        .iter()
        .find(|l| l.ends_with("recover:sudo-t:1"))
        .unwrap();
    let out = user.shell(whoami);
    assert_eq!(text(&out.stdout), "0\n", "{}", show(&out));
    let quoting = lines
        .iter()
        .find(|l| l.ends_with("recover:sudo-t:2"))
        .unwrap();
    let out = user.shell(quoting);
    assert_eq!(
        text(&out.stdout),
        "a, b: c=d|#x*?[y]!\n42 done\n",
        "{}",
        show(&out)
    );

    // Nothing else.
    let longer = whoami.replace(" 30s ", " 31s ");
    assert_ne!(&longer, whoami);
    let other_script = whoami.replace(&base64_of("id -u"), &base64_of("id"));
    assert_ne!(&other_script, whoami);
    for refused in [
        "sudo -n id".to_owned(),
        "sudo -n sh -c id".to_owned(),
        longer,
        other_script,
        "sudo -n timeout -k 5s 30s sh -c 'id -u' recover:sudo-t:1".to_owned(),
        "sudo -n pkill -KILL -f '.*'".to_owned(),
        "sudo -n timeout -k 5s 30s sh -c id".to_owned(),
    ] {
        let out = user.shell(&refused);
        assert!(
            !out.status.success(),
            "permitted: {refused}\n{}",
            show(&out)
        );
        assert!(
            text(&out.stderr).contains("password is required"),
            "{refused}: refused by sudo, not by something else:\n{}",
            show(&out)
        );
        let out = root_lists(&user, &refused);
        assert!(!out.status.success(), "sudo -l -U lists it: {refused}");
    }
}

/// As root, `sudo -l -U USER ARGS` for the line `sudo -n ARGS`: whether USER may run it.
fn root_lists(user: &SudoUser, line: &str) -> Output {
    let args = line.strip_prefix("sudo -n ").expect("a sudo -n line");
    run("sh", &["-c", &format!("sudo -l -U {} {args}", user.name)])
}

/// The base64 the wire carries a sudo command in.
fn base64_of(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | base64 -w0", "sh", script])
        .output()
        .unwrap();
    text(&out.stdout)
}

/// Programs an account could plant first in its PATH, to be run as root by a sudo rule that
/// names a program sudo (or what it runs) looks up in that PATH.
const PLANTED: &[&str] = &[
    "sh",
    "dash",
    "bash",
    "base64",
    "timeout",
    "pkill",
    "id",
    "printf",
    "echo",
    "sync",
    "grep",
    "systemctl",
    "journalctl",
    "cat",
    "env",
    "sleep",
    "tail",
];

/// `~/bin/NAME` for each of [`PLANTED`]: each leaves `MARKS/NAME-UID` behind, then runs the
/// real program. The names of what ran as root: those ending in `-0`.
struct Planted {
    marks: tempfile::TempDir,
    bin: PathBuf,
}

impl Planted {
    fn plant(user: &SudoUser) -> Planted {
        use std::os::unix::fs::PermissionsExt;
        let marks = tempfile::tempdir().unwrap();
        std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let bin = user.home().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in PLANTED {
            let real = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
                .iter()
                .map(|d| format!("{d}/{name}"))
                .find(|p| Path::new(p).exists())
                .unwrap_or_else(|| "/bin/false".into());
            let path = bin.join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\n/usr/bin/touch \"{}/{name}-$(/usr/bin/id -u)\"\nexec {real} \"$@\"\n",
                    marks.path().display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = run(
            "chown",
            &["-R", &format!("{0}:{0}", user.name), bin.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", show(&out));
        Planted { marks, bin }
    }

    /// `line` run by `user` with the planted programs first in its PATH.
    fn shell(&self, user: &SudoUser, line: &str) -> Output {
        user.shell(&format!(
            "PATH={}:$PATH; export PATH; {line}",
            self.bin.display()
        ))
    }

    /// The planted programs that ran as root since the last call (and forgets them).
    fn ran_as_root(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.marks.path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(program) = name.strip_suffix("-0") {
                out.push(program.to_owned());
            }
            let _ = std::fs::remove_file(e.path());
        }
        out.sort();
        out
    }
}

/// Issue 20: where the box's sudo has no `secure_path` (sudo's own default; here
/// `Defaults:USER !secure_path`, read before the drop-in), the account's PATH reaches what sudo
/// runs. With programs planted first in that PATH, every sudo line of the Plan, run with only
/// the generated drop-in, never runs a planted file as root: the wire names `/usr/bin/timeout`,
/// `/bin/sh` and `/usr/bin/base64` in full, and the drop-in's `Defaults:USER secure_path` is
/// what the runbook's own commands (`id`, `systemctl`) are found in. Two controls show the
/// planted files would run: a rule for a program by name (the wire before this fix), and the
/// drop-in without its `Defaults` line.
#[test]
fn a_planted_sh_first_in_path_never_runs_as_root_where_sudo_has_no_secure_path() {
    let Some(mut user) = SudoUser::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = format!("  box:\n    host: 127.0.0.1\n    user: {}\n", user.name);
    let rb = runbook(dir.path(), "sudo-p", &target, STEPS);
    let rb = rb.to_str().unwrap();
    let dropin = stdout_of(dir.path(), &["sudoers", rb]);
    let defaults = format!(
        "Defaults:{} secure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n",
        user.name
    );
    assert_eq!(dropin.matches(&defaults).count(), 1, "{dropin}");
    let lines = sudo_lines(&stdout_of(dir.path(), &["run", "--dry-run", rb]));
    assert!(lines.len() >= 10, "{lines:#?}");
    let whoami = lines
        .iter()
        .find(|l| l.ends_with("recover:sudo-p:1"))
        .unwrap()
        .clone();
    let planted = Planted::plant(&user);
    // Sorted before the drop-in: the box's sudoers, without secure_path for this account.
    let no_secure_path = format!("zz-recover-test-0nosp-{}", user.name);
    let nosp = format!("Defaults:{} !secure_path\n", user.name);

    // Control 1: a rule whose command runs `sh` by name (as the wire did) runs the planted sh
    // as root. (sudo itself finds `timeout` by PATH too: the planted one would not match the
    // rule, so an attacker plants only what comes after it.)
    user.install_as(&no_secure_path, &nosp);
    user.install(&format!(
        "{} ALL=(root) NOPASSWD: /usr/bin/timeout 5s sh -c true\n",
        user.name
    ));
    let out = planted.shell(&user, "sudo -n /usr/bin/timeout 5s sh -c true");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        planted.ran_as_root(),
        ["sh"],
        "the setup cannot catch a planted sh"
    );
    user.uninstall();

    // Control 2: the drop-in without its secure_path runs the planted `id` as root, not the
    // wire's programs: those are named in full.
    user.install_as(&no_secure_path, &nosp);
    user.install(&dropin.replace(&defaults, ""));
    let out = planted.shell(&user, &whoami);
    assert_eq!(text(&out.stdout), "0\n", "{}", show(&out));
    assert_eq!(planted.ran_as_root(), ["id"], "{}", show(&out));
    user.uninstall();

    // The drop-in alone: nothing planted runs as root, and every line does what it did.
    user.install_as(&no_secure_path, &nosp);
    user.install(&dropin);
    for line in &lines {
        let out = planted.shell(&user, &listed(line));
        assert!(
            out.status.success(),
            "not permitted: {line}\n{}",
            show(&out)
        );
        let out = planted.shell(&user, line);
        assert_eq!(
            planted.ran_as_root(),
            Vec::<String>::new(),
            "{line}\n{}",
            show(&out)
        );
    }
    let out = planted.shell(&user, &whoami);
    assert_eq!(text(&out.stdout), "0\n", "{}", show(&out));
    // The planted PATH was in force: the account's own `id` is the planted one.
    let out = planted.shell(&user, "sh -c true; id -u");
    assert!(out.status.success(), "{}", show(&out));
    let names: Vec<String> = std::fs::read_dir(planted.marks.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("id-") && n != "id-0"),
        "the planted PATH was not in force: {names:?}"
    );
}

#[test]
fn a_run_with_only_the_drop_in_runs_its_sudo_steps_and_ctrl_c_kills_the_root_process() {
    let Some(mut user) = SudoUser::create() else {
        return;
    };
    let sshd = Sshd::start();
    let target = let_in(&sshd, &user);
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"
      - name: whoami
        run: id -u
        sudo: true
        timeout: 30s
        expect: { stdout: '^0$' }
      - name: long
        run: sleep 300
        sudo: true
        timeout: 10m
"#;
    let rb = runbook(dir.path(), "sudo-k", &target, steps);
    let rb = rb.to_str().unwrap();
    user.install(&stdout_of(dir.path(), &["sudoers", rb]));

    let state = dir.path().join("state");
    let mut bg = Background::start(&state, &["run", "--yes", rb], &[]);
    let marker = "[r]ecover:sudo-k:2$";
    let root_sleep = || run("pgrep", &["-u", "root", "-f", marker]).status.success();
    assert!(
        eventually(Duration::from_secs(60), root_sleep),
        "step 2 never ran as root:\n{}",
        bg.output()
    );
    assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
    let status = bg
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running 30 s after SIGINT:\n{}", bg.output()));
    assert_eq!(status.code(), Some(130), "{}", bg.output());
    assert!(
        eventually(Duration::from_secs(10), || !root_sleep()),
        "the root process of step 2 survived Ctrl-C:\n{}",
        show(&run("pgrep", &["-a", "-f", marker]))
    );
    let output = bg.output();
    assert!(output.contains("whoami"), "{output}");
}

/// The user logs in to `sshd` with its key, as the README's `restrict` key line allows.
fn let_in(sshd: &Sshd, user: &SudoUser) -> String {
    let keys = sshd.dir().join("authorized_keys");
    let key = std::fs::read_to_string(&keys).unwrap();
    if !key.starts_with("restrict ") {
        std::fs::write(&keys, format!("restrict {key}")).unwrap();
    }
    for (mode, path) in [("0711", sshd.dir()), ("0644", keys.as_path())] {
        let out = run("chmod", &[mode, path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", show(&out));
    }
    let target = sshd.runbook_target_yaml("box").replace(
        &format!("user: {}\n", sshd.user()),
        &format!("user: {}\n", user.name),
    );
    assert!(target.contains(&user.name), "{target}");
    target
}

#[test]
fn rehearse_names_each_sudo_command_the_installed_drop_in_no_longer_permits() {
    let Some(mut user) = SudoUser::create() else {
        return;
    };
    let sshd = Sshd::start();
    let target = let_in(&sshd, &user);
    let dir = tempfile::tempdir().unwrap();
    let steps = |restart_timeout: &str| {
        format!(
            r#"
      - wait_ssh: {{ every: 1s, timeout: 20s }}
      - name: whoami
        run: id -u
        sudo: true
        mutates: false
        expect: {{ stdout: '^0$' }}
      - name: restart
        run: systemctl restart recover-test-nonexistent.service
        sudo: true
        timeout: {restart_timeout}
"#
        )
    };
    let rb = runbook(dir.path(), "sudo-r", &target, &steps("30s"));
    let rb = rb.to_str().unwrap();
    user.install(&stdout_of(dir.path(), &["sudoers", rb]));

    let state = dir.path().join("state");
    let out = recover_in(&state).args(["rehearse", rb]).output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("no longer permits"), "{all}");

    // The runbook changed after the drop-in was installed: step 3's deadline.
    runbook(dir.path(), "sudo-r", &target, &steps("45s"));
    let out = recover_in(&state).args(["rehearse", rb]).output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{all}");
    let line = all
        .lines()
        .find(|l| l.contains("no longer permits"))
        .unwrap_or_else(|| panic!("no refusal reported:\n{all}"));
    assert!(
        line.contains("1 of this step's sudo commands")
            && line.contains("`systemctl restart recover-test-nonexistent.service`")
            && line.contains("recover sudoers"),
        "{line}"
    );
    assert_eq!(
        all.matches("no longer permits").count(),
        1,
        "only step 3 changed, and its kill did not:\n{all}"
    );
}

#[test]
fn a_sudo_command_that_carries_a_secret_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"
      - run: "curl -H 'X-Key: {{ env.API_TOKEN }}' http://127.0.0.1/"
        sudo: true
"#;
    let rb = runbook(
        dir.path(),
        "sudo-s",
        "  box:\n    host: 127.0.0.1\n    user: ops\n",
        steps,
    );
    // A secret too short for redaction to look for is refused all the same.
    for (args, token) in [
        (&["check"][..], "s3cret-token"),
        (&["sudoers"], "s3cret-token"),
        (&["run", "--dry-run"], "s3cret-token"),
        (&["check"], "x'"),
        (&["sudoers"], "x'"),
    ] {
        let out = recover_in(dir.path())
            .args(args)
            .arg(&rb)
            .env("API_TOKEN", token)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            all.contains("runs a command with sudo that contains an `env` secret"),
            "{all}"
        );
        assert!(!all.contains("s3cret-token"), "{all}");
    }
}
