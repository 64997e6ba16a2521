//! Durations and windows as the runbook writes them.

use std::time::Duration;

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

/// `5m`, `1m30s`, `2h`, `90d`: the shortest exact human form.
pub fn fmt_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 {
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}
