//! Small runbooks written by the tests, and what a test asks of the target and of a file.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{Sshd, text};

/// `DIR/NAME.yaml`: `target` (the lines under `targets:`, e.g. `sshd.runbook_target_yaml`),
/// `head` (more top-level keys), and one phase of `steps` (six spaces of indentation), with
/// `@DIR@` replaced by `dir`.
pub fn write_runbook(dir: &Path, name: &str, target: &str, head: &str, steps: &str) -> PathBuf {
    let text = format!(
        "name: {name}\n\
         title: Engine test {name}\n\
         budget: 10m\n\
         targets:\n\
         {target}\
         {head}\
         phases:\n\
         \x20 - name: Everything\n\
         \x20   window: 0m-10m\n\
         \x20   steps:\n\
         {steps}"
    );
    let text = text.replace("@DIR@", &dir.display().to_string());
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, text).expect("write the runbook");
    path
}

/// Whether the process whose pid is in `pid_file` still runs on the target (a zombie does not).
pub fn remote_pid_alive(sshd: &Sshd, pid_file: &Path) -> bool {
    let pid =
        fs::read_to_string(pid_file).unwrap_or_else(|e| panic!("read {}: {e}", pid_file.display()));
    let pid: u32 = pid.trim().parse().expect("a pid");
    let out = sshd.ssh(&format!(
        "if kill -0 {pid} 2>/dev/null; then \
           if [ \"$(cut -d' ' -f3 /proc/{pid}/stat)\" = Z ]; then echo zombie; else echo alive; fi; \
         else echo gone; fi"
    ));
    let answer = text(&out.stdout);
    assert!(
        out.status.success(),
        "the pid check failed: {}",
        text(&out.stderr)
    );
    answer.trim() == "alive"
}

/// How many logins the target's sshd has accepted so far (the harness's own included).
pub fn logins(sshd: &Sshd) -> usize {
    sshd.log().matches("Accepted publickey").count()
}

/// The sha256 of a file, in hex, as the journal records a runbook's.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).expect("read the file")))
}
