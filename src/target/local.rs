//! Commands on the management host: `sh -c`, in their own process group, killed whole.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{Capture, ExecError, Finished, last_line};
use crate::verdict::Output;

/// Grace between TERM and KILL for a local process group.
const GRACE: Duration = Duration::from_secs(2);

/// Run `script` with `sh -c`, killing its whole process group at `timeout` or on cancel. With
/// `stdin` (a command that holds a secret), `script` is the program that reads the command
/// from stdin (`plan::wire::STDIN_PROGRAM`), and `stdin` is written to it and closed.
pub async fn run(
    script: &str,
    stdin: Option<&str>,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Finished, ExecError> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ExecError::Spawn(format!("cannot start sh: {e}")))?;
    let pgid = child.id().map(|p| p as i32);
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| ExecError::Spawn("no stdout".into()))?;
    let mut err = child
        .stderr
        .take()
        .ok_or_else(|| ExecError::Spawn("no stderr".into()))?;
    let mut input = child.stdin.take();
    let feeding = async {
        if let (Some(text), Some(w)) = (stdin, input.as_mut()) {
            use tokio::io::AsyncWriteExt;
            let _ = w.write_all(text.as_bytes()).await;
            let _ = w.shutdown().await;
        }
        drop(input.take());
    };
    tokio::pin!(feeding);
    let mut fed = stdin.is_none();
    let (mut so, mut se) = (Capture::default(), Capture::default());
    let (mut obuf, mut ebuf) = ([0u8; 8192], [0u8; 8192]);
    let (mut odone, mut edone) = (false, false);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // A process that left the group could hold the pipes open: never wait past this.
    let hard = tokio::time::sleep(timeout + GRACE * 3);
    tokio::pin!(hard);
    let mut timed_out = false;
    let mut interrupted = false;
    let status = loop {
        tokio::select! {
            _ = &mut feeding, if !fed => fed = true,
            n = out.read(&mut obuf), if !odone => match n {
                Ok(0) | Err(_) => odone = true,
                Ok(n) => { so.push(&obuf[..n]); if let Some(l) = last_line(&obuf[..n]) { progress(l) } }
            },
            n = err.read(&mut ebuf), if !edone => match n {
                Ok(0) | Err(_) => edone = true,
                Ok(n) => se.push(&ebuf[..n]),
            },
            st = child.wait(), if odone && edone => break st.ok(),
            _ = &mut hard => break None,
            _ = &mut deadline, if !timed_out && !interrupted => {
                timed_out = true;
                kill_group(pgid).await;
            },
            _ = cancel.changed(), if !timed_out && !interrupted => {
                if *cancel.borrow() {
                    interrupted = true;
                    kill_group(pgid).await;
                }
            },
        }
    };
    if interrupted {
        return Err(ExecError::Interrupted);
    }
    Ok(Finished {
        output: Output {
            exit: status.and_then(|s| s.code()),
            stdout: so.text(),
            stderr: se.text(),
            timed_out,
        },
        duration: started.elapsed(),
    })
}

/// TERM the group, then KILL it if anything is left after a grace period.
async fn kill_group(pgid: Option<i32>) {
    let Some(pgid) = pgid else { return };
    // SAFETY: kill(2) with a negative pid signals a process group we created; no memory involved.
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let started = Instant::now();
    while started.elapsed() < GRACE {
        // SAFETY: signal 0 only checks whether the group still exists.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
