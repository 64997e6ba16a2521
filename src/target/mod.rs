//! Where commands run: the target over SSH, or the management host.

pub mod local;
pub mod ssh;

use std::time::Duration;

use crate::verdict::Output;

/// Output kept per stream: enough for verdicts, bounded for memory.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// Why a command could not be run (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("lost the connection to {target} during the command: {reason}")]
    Lost { target: String, reason: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Spawn(String),
}

/// A finished command.
#[derive(Debug)]
pub struct Finished {
    pub output: Output,
    pub duration: Duration,
}

/// Appends to a bounded buffer, keeping the start and the end when it overflows.
#[derive(Debug, Default)]
pub struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: usize,
}

impl Capture {
    pub fn push(&mut self, bytes: &[u8]) {
        let half = MAX_OUTPUT / 2;
        for &b in bytes {
            if self.head.len() < half {
                self.head.push(b);
            } else {
                if self.tail.len() == half {
                    self.tail.pop_front();
                    self.dropped += 1;
                }
                self.tail.push_back(b);
            }
        }
    }

    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[… {} bytes not kept …]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }
}

/// The last non-empty line of a chunk of output, for progress displays.
pub fn last_line(bytes: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(bytes);
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
}
