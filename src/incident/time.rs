//! Where the time went: the run's wall time split into waiting on the box, commands, the
//! operator, and `recover`'s own overhead. Shared by the report and the end-of-run summary.

use crate::duration::duration;
use crate::runbook::model::Kind;

/// What a step's time is spent on, by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Waiting for the box (or its power) to come up: `wait_ssh`, a `start` gate, `ups`, and
    /// a retried step's time before its last attempt.
    Waiting,
    /// Commands and requests doing their work: `run`, `local`, `http`, `notify`, ...
    Commands,
    /// A person: `manual` steps.
    Operator,
}

impl Share {
    pub fn of(kind: Kind) -> Share {
        match kind {
            Kind::WaitSsh | Kind::Start | Kind::Ups => Share::Waiting,
            Kind::Manual => Share::Operator,
            Kind::Run
            | Kind::Local
            | Kind::DropCaches
            | Kind::PreviousBoot
            | Kind::Http
            | Kind::Notify
            | Kind::PowerOn => Share::Commands,
        }
    }
}

/// Seconds spent on each share; `overhead` is the rest of the wall time: connecting, journal
/// writes, the engine's own work between steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeSplit {
    pub waiting: f64,
    pub commands: f64,
    pub operator: f64,
    pub overhead: f64,
}

impl TimeSplit {
    /// The split of `wall` seconds given each step that ran, as (kind, seconds).
    pub fn of(wall: f64, steps: impl IntoIterator<Item = (Kind, f64)>) -> TimeSplit {
        TimeSplit::with_retries(wall, steps.into_iter().map(|(k, s)| (k, s, 0.0)))
    }

    /// The split of `wall` seconds given each step that ran, as (kind, seconds, seconds before
    /// its last attempt). A retried command (`retry:` on `run`, `local`, `http`) is waiting on
    /// the box until its last attempt (the failed attempts, the pauses between them: the model
    /// still loading, the endpoint not up yet); only the last attempt is the command's work.
    pub fn with_retries(wall: f64, steps: impl IntoIterator<Item = (Kind, f64, f64)>) -> TimeSplit {
        let clean = |s: f64| if s.is_finite() { s.max(0.0) } else { 0.0 };
        let mut t = TimeSplit::default();
        for (kind, secs, waited) in steps {
            let secs = clean(secs);
            let waited = clean(waited).min(secs);
            match Share::of(kind) {
                Share::Waiting => t.waiting += secs,
                Share::Commands => {
                    t.waiting += waited;
                    t.commands += secs - waited;
                }
                Share::Operator => t.operator += secs,
            }
        }
        t.overhead = (wall - t.waiting - t.commands - t.operator).max(0.0);
        t
    }

    pub fn total(&self) -> f64 {
        self.waiting + self.commands + self.operator + self.overhead
    }

    /// The four shares with their names, in the order they are shown.
    pub fn parts(&self) -> [(&'static str, f64); 4] {
        [
            ("waiting on the box", self.waiting),
            ("commands", self.commands),
            ("operator", self.operator),
            ("recover's overhead", self.overhead),
        ]
    }

    /// `waiting 3m02s, commands 41s, operator 1m10s, overhead 0.4s`: short, for one line.
    pub fn line(&self) -> String {
        format!(
            "waiting {}, commands {}, operator {}, overhead {}",
            duration(self.waiting),
            duration(self.commands),
            duration(self.operator),
            duration(self.overhead)
        )
    }

    /// A share as a percentage of the whole, for tables: `12.5 %`.
    pub fn percent(&self, secs: f64) -> String {
        let total = self.total();
        if total <= 0.0 {
            return "-".into();
        }
        format!("{:.1} %", 100.0 * secs / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_share_by_name_and_the_event_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert_eq!(Share::of(Kind::Ups), Share::Waiting);
        assert_eq!(Share::of(Kind::PowerOn), Share::Commands);
        assert_eq!(Share::of(Kind::Manual), Share::Operator);
    }

    #[test]
    fn steps_are_shared_by_kind_and_the_rest_is_overhead() {
        let t = TimeSplit::of(
            100.0,
            [
                (Kind::Manual, 20.0),
                (Kind::WaitSsh, 30.0),
                (Kind::Run, 5.0),
                (Kind::Start, 40.0),
                (Kind::Http, 1.5),
            ],
        );
        assert_eq!(t.operator, 20.0);
        assert_eq!(t.waiting, 70.0);
        assert_eq!(t.commands, 6.5);
        assert!((t.overhead - 3.5).abs() < 1e-9);
        assert!((t.total() - 100.0).abs() < 1e-9);
        assert_eq!(
            t.line(),
            "waiting 1m10s, commands 6.5s, operator 20s, overhead 3.5s"
        );
        assert_eq!(t.percent(t.waiting), "70.0 %");
    }

    #[test]
    fn a_retried_command_waits_until_its_last_attempt() {
        // an http smoke test retried for 40 s (the model loading), its last attempt 2 s
        let t = TimeSplit::with_retries(
            50.0,
            [
                (Kind::Http, 42.0, 40.0),
                (Kind::Run, 3.0, 0.0),
                (Kind::Run, 1.0, f64::NAN),
                (Kind::Local, 2.0, 9.0),
            ],
        );
        assert_eq!(
            t.waiting, 42.0,
            "40 s before the last attempt, and all of a bad count"
        );
        assert_eq!(t.commands, 2.0 + 3.0 + 1.0);
        assert!((t.overhead - 2.0).abs() < 1e-9);
    }

    #[test]
    fn nonsense_durations_do_not_make_negative_shares() {
        let t = TimeSplit::of(
            1.0,
            [
                (Kind::Run, f64::NAN),
                (Kind::Run, -3.0),
                (Kind::Manual, 5.0),
            ],
        );
        assert_eq!(t.commands, 0.0);
        assert_eq!(t.overhead, 0.0);
        assert_eq!(TimeSplit::default().percent(0.0), "-");
    }
}
