//! The Plan: one resolution of a runbook into final steps.
//!
//! Templates are rendered, commands wrapped (sudo, remote timeout, kill marker) and quoted,
//! deadlines and `mutates` decided. Every line the engine may send is a field of the Plan:
//! the step's commands, the gate's state and journal reads, curl on the target, the
//! rehearsal's read-only checks, the remote kill and the boot-id read. `run --dry-run`
//! ([`display`]), `export` and `rehearse` all use it, so what is printed is what runs.
//!
//! - [`types`]: the Plan and its parts.
//! - [`resolve`]: the Resolver (templates, targets, vars, channels, phases).
//! - [`kinds`]: one function per step kind, reached through [`Kind`].
//! - [`gate`], [`request`]: the health gate of a `start`, HTTP requests.
//! - [`rehearse`]: what `rehearse` does with each step.
//! - [`wire`]: the exact remote line, the kill marker and the kill line.
//! - [`duration`], [`payload`]: durations and windows as text, status-post bodies.
//! - [`display`], [`lint`]: the Plan as `--dry-run` text, and what `check` warns about.

pub mod display;
pub mod duration;
mod gate;
mod kinds;
pub mod lint;
pub mod payload;
pub mod rehearse;
pub mod request;
pub mod resolve;
pub mod types;
pub mod wire;

use std::time::Duration;

pub use crate::duration::fmt_duration;
pub use crate::runbook::model::Kind;
pub use crate::secrets::{Secrets, placeholder};
pub use duration::fmt_window;
pub use payload::payload;
pub use resolve::{Destination, Options, check_overrides, resolve};
pub use types::{
    AbortSpec, Action, ChannelSpec, Command, DrillLines, Gate, GateRemedy, Otherwise, Phase, Plan,
    PowerOn, Probe, Rehearse, Request, RetrySpec, Step, TargetSpec, UpsWait, state_key,
};
pub use wire::{BOOT_ID_COMMAND, DROP_CACHES_COMMAND, KILL_GRACE, remote_wire};

pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MANUAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_DROP_CACHES_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WAIT_SSH_EVERY: Duration = Duration::from_secs(15);
pub const DEFAULT_WAIT_SSH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_GATE_EVERY: Duration = Duration::from_secs(5);
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_UPS_EVERY: Duration = Duration::from_secs(5);
pub const DEFAULT_UPS_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_WOL_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IPMI_TIMEOUT: Duration = Duration::from_secs(60);
/// The previous-boot evidence: a handful of journalctl reads.
pub const DEFAULT_PREVIOUS_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
