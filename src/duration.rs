//! Lengths of time as text, a leaf every other module may use: configured durations as the
//! runbook writes them (`5m`, `1m30s`) and measured ones as a stopwatch shows them (`4m02s`),
//! and positions on the run's timeline (`12:34`).

use std::time::Duration;

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

/// A measured duration: `0.4s`, `42s`, `4m02s`, `1h02m`. Like a stopwatch, it never rounds up,
/// so it agrees with [`clock`].
pub fn duration(secs: f64) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    // a hair of slack so that 0.3 (0.29999…) still reads 0.3s
    let tenths = (secs * 10.0 + 1e-6).floor() as u64;
    if tenths < 100 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let s = tenths / 10;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    }
}

/// Time still left before `deadline` at `now`, counting down: rounded up, so that it and the
/// elapsed [`clock`] add up to the deadline.
pub fn left(deadline: f64, now: f64) -> String {
    let secs = (deadline - now).ceil();
    if secs < 10.0 {
        format!("{}s", secs.max(0.0))
    } else {
        duration(secs)
    }
}

/// A position on the run's timeline: `12:34`, or `1:02:03` past an hour.
pub fn clock(secs: f64) -> String {
    let s = if secs.is_finite() {
        secs.max(0.0) as u64
    } else {
        0
    };
    if s < 3600 {
        format!("{:02}:{:02}", s / 60, s % 60)
    } else {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// A configured length (a window edge, a budget, a timeout) as the runbook writes it: `5m`, `1m30s`.
pub fn span(secs: f64) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    fmt_duration(Duration::from_secs(secs.round() as u64))
}

/// A phase window: `10m-20m`.
pub fn window(start: f64, end: f64) -> String {
    format!("{}-{}", span(start), span(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_stopwatch() {
        assert_eq!(duration(0.0), "0.0s");
        assert_eq!(duration(0.42), "0.4s");
        assert_eq!(duration(0.3), "0.3s");
        assert_eq!(duration(9.96), "9.9s");
        assert_eq!(duration(10.0), "10s");
        assert_eq!(duration(42.9), "42s");
        assert_eq!(duration(59.6), "59s");
        assert_eq!(duration(242.0), "4m02s");
        assert_eq!(duration(3599.0), "59m59s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(duration(3779.0), "1h02m");
        assert_eq!(left(1800.0, 754.4), "17m26s");
        assert_eq!(left(1200.0, 1192.5), "8s");
        assert_eq!(duration(-3.0), "0.0s");
        assert_eq!(duration(f64::NAN), "0.0s");
    }

    #[test]
    fn clock_positions() {
        assert_eq!(clock(0.0), "00:00");
        assert_eq!(clock(754.9), "12:34");
        assert_eq!(clock(1800.0), "30:00");
        assert_eq!(clock(3723.0), "1:02:03");
    }

    #[test]
    fn windows_and_spans_as_the_runbook_writes_them() {
        assert_eq!(window(600.0, 1200.0), "10m-20m");
        assert_eq!(window(0.0, 300.0), "0s-5m");
        assert_eq!(span(90.0), "1m30s");
    }
}
