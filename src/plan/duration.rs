//! Durations and windows as the runbook writes them.

use std::time::Duration;

use crate::duration::fmt_duration;
use crate::runbook::model::Window;

/// `0m-5m`, `5m-10m`: a window as the runbook writes it (zero takes the other end's unit).
pub fn fmt_window(w: &Window) -> String {
    let zero_like = |other: Duration| -> String {
        let other = fmt_duration(other);
        let unit: String = other
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        format!("0{unit}")
    };
    let start = if w.start.is_zero() {
        zero_like(w.end)
    } else {
        fmt_duration(w.start)
    };
    let end = if w.end.is_zero() {
        zero_like(w.start)
    } else {
        fmt_duration(w.end)
    };
    format!("{start}-{end}")
}
