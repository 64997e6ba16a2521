//! The power steps: `ups` (read the UPS every `every` until mains has been stable long enough,
//! or the timeout) and `power_on` (Wake-on-LAN, or IPMI power on then status).

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Engine, Event, StepOutcome, StepResult};
use crate::plan::{PowerOn, Step, UpsWait, fmt_duration};
use crate::power::ipmi::Bmc;
use crate::power::nut::{Stable, Tracker, Ups};
use crate::power::wol::{self, Mac};

/// A reading never waits longer than this, however long `every` is.
const READ_MAX: Duration = Duration::from_secs(10);
/// Nor shorter than this, however short `every` is.
const READ_MIN: Duration = Duration::from_secs(1);

/// How a `ups` wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpsEnd {
    /// Stable: where it stood when it passed.
    Stable(String),
    /// Not stable in time: where it stood last.
    TimedOut(String),
    Interrupted,
}

/// Reads `ups` every `every` until it has been on line for `want.stable_for` with enough
/// charge, or `timeout` has passed. Each reading that does not pass is reported through
/// `progress` ("on line for 23s of 1m, charge 64%").
pub(crate) async fn wait_ups(
    ups: &Ups,
    want: Stable,
    every: Duration,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
    progress: &mut dyn FnMut(String),
) -> UpsEnd {
    let started = Instant::now();
    let mut tracker = Tracker::new(want);
    let mut readings = 0u32;
    while started.elapsed() < timeout {
        readings += 1;
        let tick = Instant::now();
        let left = timeout.saturating_sub(started.elapsed());
        let deadline = every.clamp(READ_MIN, READ_MAX).min(left.max(READ_MIN));
        let reading = tokio::select! {
            r = ups.read(deadline) => r,
            _ = cancel.wait_for(|c| *c) => return UpsEnd::Interrupted,
        };
        if tracker.observe(started.elapsed(), reading) {
            return UpsEnd::Stable(format!(
                "{ups}: {} ({readings} readings)",
                tracker.progress()
            ));
        }
        progress(tracker.progress());
        let next = every
            .saturating_sub(tick.elapsed())
            .min(timeout.saturating_sub(started.elapsed()));
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = cancel.wait_for(|c| *c) => return UpsEnd::Interrupted,
        }
    }
    UpsEnd::TimedOut(format!(
        "{ups} was not on line for {} within {}; last: {}",
        fmt_duration(want.stable_for),
        fmt_duration(timeout),
        tracker.progress()
    ))
}

/// Sends the magic packet: where it went, or why it could not be sent.
pub(crate) async fn wake(mac: Mac, address: &str, port: u16) -> Result<String, String> {
    wol::send(mac, address, port)
        .await
        .map(|to| format!("magic packet for {mac} sent to {to}"))
        .map_err(|e| e.to_string())
}

/// `chassis power on`, confirmed by `chassis power status`, within `timeout`.
pub(crate) async fn ipmi_on(
    bmc: &Bmc,
    password: &str,
    timeout: Duration,
    cancel: &mut watch::Receiver<bool>,
) -> Option<Result<String, String>> {
    tokio::select! {
        r = bmc.power_on(password, timeout) => Some(
            r.map(|()| format!("{}: Chassis Power is on", bmc.host)).map_err(|e| e.to_string())
        ),
        _ = cancel.wait_for(|c| *c) => None,
    }
}

impl Engine<'_> {
    pub(crate) async fn ups(&self, s: &Step, w: &UpsWait) -> StepResult {
        let mut cancel = self.cancel.clone();
        let out = &self.out;
        let mut progress = |line: String| {
            out.emit(Event::StepProgress {
                step: s.number,
                line,
            })
        };
        match wait_ups(
            &w.ups,
            w.want,
            w.every,
            w.timeout,
            &mut cancel,
            &mut progress,
        )
        .await
        {
            UpsEnd::Stable(r) => StepResult::with(StepOutcome::Passed, r),
            UpsEnd::TimedOut(r) => StepResult::with(StepOutcome::Failed, r),
            UpsEnd::Interrupted => StepResult::with(StepOutcome::Interrupted, "interrupted"),
        }
    }

    pub(crate) async fn power_on(&self, s: &Step, p: &PowerOn) -> StepResult {
        let mut cancel = self.cancel.clone();
        let done = match p {
            PowerOn::Wol { mac, address, port } => tokio::select! {
                r = tokio::time::timeout(s.timeout, wake(*mac, address, *port)) => Some(
                    r.unwrap_or_else(|_| Err(format!("could not send within {}", fmt_duration(s.timeout))))
                ),
                _ = cancel.wait_for(|c| *c) => None,
            },
            PowerOn::Ipmi { bmc, password, .. } => {
                ipmi_on(bmc, password, s.timeout, &mut cancel).await
            }
        };
        match done {
            Some(Ok(r)) => StepResult::with(StepOutcome::Passed, r),
            Some(Err(e)) => StepResult::with(StepOutcome::Failed, e),
            None => StepResult::with(StepOutcome::Interrupted, "interrupted"),
        }
    }
}
