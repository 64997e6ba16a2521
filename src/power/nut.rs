//! A client for NUT's network protocol (`upsd`, TCP 3493) and the "mains is stable" tracker.
//!
//! The client sends `GET VAR <ups> ups.status` and `GET VAR <ups> battery.charge` on a fresh
//! connection, reads `VAR <ups> <name> "<value>"` or `ERR <code>` back, and logs out. Every line
//! it reads is bounded ([`MAX_LINE`]) and the whole exchange has one deadline, so a peer that is
//! not upsd, or a upsd that hangs, costs at most that deadline.
//!
//! [`Tracker`] is pure: given timed readings it says whether the UPS has been on line (`OL`, and
//! none of `OB`, `LB`, `FSD`) without a break for `stable_for` with enough charge, and where it
//! stands ("on line for 23s of 1m, charge 64%").

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::duration::fmt_duration;

/// upsd's port.
pub const DEFAULT_PORT: u16 = 3493;
/// The longest reply line accepted: a `VAR` line is well under 300 bytes.
pub const MAX_LINE: usize = 1024;
/// The longest error code or unexpected line quoted back in an error message.
const QUOTE_MAX: usize = 80;

/// Why a reading could not be taken. Each names what the operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NutError {
    #[error("upsd says the UPS data is stale (ERR DATA-STALE): its driver has stopped answering")]
    DataStale,
    #[error(
        "upsd has no driver for this UPS (ERR DRIVER-NOT-CONNECTED): start the driver (upsdrvctl start)"
    )]
    DriverNotConnected,
    #[error("upsd knows no UPS of this name (ERR UNKNOWN-UPS): list them with `upsc -l HOST`")]
    UnknownUps,
    #[error("upsd refuses this client (ERR ACCESS-DENIED): check upsd.conf LISTEN and upsd.users")]
    AccessDenied,
    #[error("the UPS does not report this variable (ERR VAR-NOT-SUPPORTED)")]
    VarNotSupported,
    #[error("upsd answered ERR {0}")]
    Other(String),
    #[error("connection refused: is upsd running and listening on this address and port?")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no complete answer within {}", fmt_duration(*.0))]
    Timeout(Duration),
    #[error("upsd closed the connection")]
    Closed,
    #[error("a reply line longer than {MAX_LINE} bytes: this is not upsd")]
    LineTooLong,
    #[error("unexpected reply {0:?}: this is not upsd, or not the expected UPS")]
    Unexpected(String),
    #[error("`{0}` is not a NUT UPS name (letters, digits, `_`, `-`, `.`)")]
    BadName(String),
}

impl NutError {
    fn from_code(code: &str) -> NutError {
        match code {
            "DATA-STALE" => NutError::DataStale,
            "DRIVER-NOT-CONNECTED" => NutError::DriverNotConnected,
            "UNKNOWN-UPS" => NutError::UnknownUps,
            "ACCESS-DENIED" => NutError::AccessDenied,
            "VAR-NOT-SUPPORTED" => NutError::VarNotSupported,
            other => NutError::Other(quote(other)),
        }
    }
}

/// At most [`QUOTE_MAX`] characters of something the peer sent.
fn quote(s: &str) -> String {
    s.chars().take(QUOTE_MAX).collect()
}

/// Whether `name` can be sent as a UPS name without quoting (what `ups.conf` section names are
/// in practice).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses one reply line to `GET VAR <ups> <var>`: the value, or the error it names.
pub fn parse_reply(line: &str, ups: &str, var: &str) -> Result<String, NutError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line == "ERR" {
        return Err(NutError::Other(String::new()));
    }
    if let Some(rest) = line.strip_prefix("ERR ") {
        return Err(NutError::from_code(
            rest.split_whitespace().next().unwrap_or(""),
        ));
    }
    let unexpected = || NutError::Unexpected(quote(line));
    let rest = line.strip_prefix("VAR ").ok_or_else(unexpected)?;
    let (got_ups, rest) = rest.split_once(' ').ok_or_else(unexpected)?;
    let (got_var, value) = rest.split_once(' ').ok_or_else(unexpected)?;
    if got_ups != ups || got_var != var {
        return Err(unexpected());
    }
    unquote(value).ok_or_else(unexpected)
}

/// `"..."` with `\"` and `\\` escapes, and nothing after the closing quote.
fn unquote(s: &str) -> Option<String> {
    let mut chars = s.strip_prefix('"')?.chars();
    let mut out = String::new();
    loop {
        match chars.next()? {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
}

/// The tokens of `ups.status` (`OL CHRG`, `OB DISCHRG LB`, ...). Unknown tokens are kept and
/// shown, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status(Vec<String>);

impl Status {
    /// At most 16 tokens of at most 16 characters: more is not a status.
    pub fn parse(value: &str) -> Status {
        Status(
            value
                .split_whitespace()
                .take(16)
                .map(|t| t.chars().take(16).collect())
                .collect(),
        )
    }

    pub fn has(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    /// On line: `OL`, and none of `OB` (on battery), `LB` (low battery), `FSD` (forced shutdown).
    pub fn on_line(&self) -> bool {
        self.has("OL") && !["OB", "LB", "FSD"].iter().any(|t| self.has(t))
    }

    /// What the status means, in words, for the progress line.
    fn describe(&self) -> &'static str {
        if self.has("FSD") {
            "forced shutdown"
        } else if self.has("OB") {
            "on battery"
        } else if self.has("LB") {
            "battery low"
        } else if self.has("OL") {
            "on line"
        } else {
            "not on line"
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// One reading: the status, and the charge in percent when the UPS reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub status: Status,
    pub charge: Option<f64>,
}

/// A UPS served by a upsd: `name@host:port`, NUT's own notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ups {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Ups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.name, self.host, self.port)
    }
}

impl Ups {
    /// Connects, reads `ups.status` and `battery.charge`, logs out; all within `deadline`.
    pub async fn read(&self, deadline: Duration) -> Result<Reading, NutError> {
        if !valid_name(&self.name) {
            return Err(NutError::BadName(self.name.clone()));
        }
        tokio::time::timeout(deadline, self.exchange())
            .await
            .unwrap_or(Err(NutError::Timeout(deadline)))
    }

    async fn exchange(&self) -> Result<Reading, NutError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => NutError::Refused,
                _ => NutError::Connect(e.to_string()),
            })?;
        let mut conn = BufReader::new(stream);
        let status = self.get(&mut conn, "ups.status").await?;
        let charge = match self.get(&mut conn, "battery.charge").await {
            Ok(v) => Some(parse_charge(&v)?),
            Err(NutError::VarNotSupported) => None,
            Err(e) => return Err(e),
        };
        // upsd answers `OK Goodbye` and closes; nothing depends on it.
        let _ = conn.get_mut().write_all(b"LOGOUT\n").await;
        Ok(Reading {
            status: Status::parse(&status),
            charge,
        })
    }

    async fn get(&self, conn: &mut BufReader<TcpStream>, var: &str) -> Result<String, NutError> {
        let request = format!("GET VAR {} {var}\n", self.name);
        conn.get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| NutError::Connect(e.to_string()))?;
        let line = read_line(conn).await?;
        parse_reply(&line, &self.name, var)
    }
}

/// `battery.charge` in percent: a finite number.
fn parse_charge(value: &str) -> Result<f64, NutError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|c| c.is_finite())
        .ok_or_else(|| NutError::Unexpected(quote(value)))
}

/// One line without its `\n`, refusing more than [`MAX_LINE`] bytes.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<String, NutError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(|_| NutError::Closed)?;
        if buf.is_empty() {
            return Err(NutError::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE {
            return Err(NutError::LineTooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(done));
        if done {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// What the `ups` step waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stable {
    /// How long the UPS must stay on line without a break.
    pub stable_for: Duration,
    /// The least `battery.charge`, in percent.
    pub min_charge: Option<f64>,
}

/// Where the UPS stands after the last reading.
#[derive(Debug, Clone, PartialEq)]
enum Standing {
    NoReadingYet,
    OnLine { held: Duration, charge: Option<f64> },
    OffLine { status: Status, charge: Option<f64> },
    NoReading(NutError),
}

/// Follows readings over time. A reading that is not on line, or no reading at all (stale
/// data, no driver, no connection), breaks the run: mains counts as stable only while it is
/// seen to be.
#[derive(Debug, Clone)]
pub struct Tracker {
    want: Stable,
    on_line_since: Option<Duration>,
    flaps: u32,
    standing: Standing,
}

impl Tracker {
    pub fn new(want: Stable) -> Tracker {
        Tracker {
            want,
            on_line_since: None,
            flaps: 0,
            standing: Standing::NoReadingYet,
        }
    }

    /// Records a reading taken at `at` (time since the step began) and says whether the UPS
    /// has now been on line for `stable_for`, with enough charge.
    pub fn observe(&mut self, at: Duration, reading: Result<Reading, NutError>) -> bool {
        match reading {
            Ok(r) if r.status.on_line() => {
                let since = *self.on_line_since.get_or_insert(at);
                let held = at.saturating_sub(since);
                self.standing = Standing::OnLine {
                    held,
                    charge: r.charge,
                };
                held >= self.want.stable_for && self.charge_ok(r.charge)
            }
            Ok(r) => {
                if self.on_line_since.take().is_some() {
                    self.flaps += 1;
                }
                self.standing = Standing::OffLine {
                    status: r.status,
                    charge: r.charge,
                };
                false
            }
            Err(e) => {
                self.on_line_since = None;
                self.standing = Standing::NoReading(e);
                false
            }
        }
    }

    fn charge_ok(&self, charge: Option<f64>) -> bool {
        match (self.want.min_charge, charge) {
            (None, _) => true,
            (Some(min), Some(c)) => c >= min,
            (Some(_), None) => false,
        }
    }

    /// How many times the UPS went from on line back to a status that is not.
    pub fn flaps(&self) -> u32 {
        self.flaps
    }

    /// Where it stands: "on line for 23s of 1m, charge 64%".
    pub fn progress(&self) -> String {
        let mut line = match &self.standing {
            Standing::NoReadingYet => "no reading yet".to_string(),
            Standing::OnLine { held, charge } => format!(
                "on line for {} of {}{}",
                fmt_duration(Duration::from_secs(held.as_secs())),
                fmt_duration(self.want.stable_for),
                self.charge_text(*charge)
            ),
            Standing::OffLine { status, charge } => format!(
                "{} ({status}){}",
                status.describe(),
                self.charge_text(*charge)
            ),
            Standing::NoReading(e) => format!("no reading: {e}"),
        };
        if self.flaps > 0 {
            let s = if self.flaps == 1 { "" } else { "s" };
            line.push_str(&format!("; {} flap{s} off line so far", self.flaps));
        }
        line
    }

    fn charge_text(&self, charge: Option<f64>) -> String {
        let needs = match self.want.min_charge {
            Some(min) if !self.charge_ok(charge) => format!(" (needs {min}%)"),
            _ => String::new(),
        };
        match charge {
            Some(c) => format!(", charge {c}%{needs}"),
            None if self.want.min_charge.is_some() => format!(", charge not reported{needs}"),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn reading(status: &str, charge: f64) -> Result<Reading, NutError> {
        Ok(Reading {
            status: Status::parse(status),
            charge: Some(charge),
        })
    }

    #[test]
    fn parses_a_var_line() {
        assert_eq!(
            parse_reply("VAR myups ups.status \"OL CHRG\"\n", "myups", "ups.status"),
            Ok("OL CHRG".into())
        );
        assert_eq!(
            parse_reply("VAR u battery.charge \"64\"\r\n", "u", "battery.charge"),
            Ok("64".into())
        );
    }

    #[test]
    fn unescapes_quotes_and_backslashes() {
        assert_eq!(
            parse_reply(r#"VAR u ups.model "a \"big\" one \\ 2""#, "u", "ups.model"),
            Ok(r#"a "big" one \ 2"#.into())
        );
    }

    #[test]
    fn names_the_errors() {
        let cases = [
            ("ERR DATA-STALE", NutError::DataStale),
            ("ERR DRIVER-NOT-CONNECTED", NutError::DriverNotConnected),
            ("ERR UNKNOWN-UPS", NutError::UnknownUps),
            ("ERR ACCESS-DENIED", NutError::AccessDenied),
            ("ERR VAR-NOT-SUPPORTED", NutError::VarNotSupported),
            (
                "ERR FEATURE-NOT-SUPPORTED",
                NutError::Other("FEATURE-NOT-SUPPORTED".into()),
            ),
            ("ERR UNKNOWN-UPS extra words", NutError::UnknownUps),
            ("ERR", NutError::Other(String::new())),
        ];
        for (line, want) in cases {
            assert_eq!(parse_reply(line, "u", "ups.status"), Err(want), "{line}");
        }
    }

    #[test]
    fn error_messages_say_what_to_check() {
        assert!(NutError::DataStale.to_string().contains("DATA-STALE"));
        assert!(NutError::Refused.to_string().contains("is upsd running"));
        assert_eq!(
            NutError::Timeout(secs(5)).to_string(),
            "no complete answer within 5s"
        );
    }

    #[test]
    fn refuses_replies_for_another_ups_or_variable() {
        for line in [
            "VAR other ups.status \"OL\"",
            "VAR u battery.charge \"OL\"",
            "VAR u ups.status OL",
            "VAR u ups.status \"OL",
            "VAR u ups.status \"OL\" trailing",
            "VAR u ups.status \"OL\\",
            "VAR u",
            "OK",
            "",
            "BEGIN LIST VAR u",
        ] {
            assert!(
                matches!(
                    parse_reply(line, "u", "ups.status"),
                    Err(NutError::Unexpected(_))
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let samples = [
            "\u{0}\u{1}\u{ff}",
            "VAR \"\"\"",
            "ERR \u{7f}",
            "VAR u ups.status \"\\\u{1f600}\"",
            "VAR  u  ups.status  \"x\"",
            "\"",
            "\\",
        ];
        for s in samples {
            let _ = parse_reply(s, "u", "ups.status");
            let _ = Status::parse(s).on_line();
            let _ = parse_charge(s);
        }
        let long = "E".repeat(10_000);
        match parse_reply(&format!("ERR {long}"), "u", "ups.status") {
            Err(NutError::Other(code)) => assert_eq!(code.len(), QUOTE_MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn charge_must_be_a_finite_number() {
        assert_eq!(parse_charge("64"), Ok(64.0));
        assert_eq!(parse_charge(" 99.5 "), Ok(99.5));
        for bad in ["", "NaN", "inf", "64%", "sixty"] {
            assert!(parse_charge(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn reads_bounded_lines() {
        let mut two: &[u8] = b"VAR u ups.status \"OL\"\nERR DATA-STALE\n";
        assert_eq!(
            read_line(&mut two).await,
            Ok("VAR u ups.status \"OL\"".into())
        );
        assert_eq!(read_line(&mut two).await, Ok("ERR DATA-STALE".into()));
        assert_eq!(read_line(&mut two).await, Err(NutError::Closed));

        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(read_line(&mut &long[..]).await, Err(NutError::LineTooLong));
        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(
            read_line(&mut &exact[..]).await.map(|l| l.len()),
            Ok(MAX_LINE)
        );
        let mut binary: &[u8] = b"\xff\xfe\x00\n";
        assert!(read_line(&mut binary).await.is_ok());
    }

    #[test]
    fn status_tokens() {
        assert!(Status::parse("OL").on_line());
        assert!(Status::parse("OL CHRG").on_line());
        assert!(Status::parse("CHRG OL BOOST ALARM XYZZY").on_line());
        for off in [
            "OB",
            "OB DISCHRG",
            "OL LB",
            "OL FSD",
            "WAIT",
            "",
            "ol",
            "OFF",
        ] {
            assert!(!Status::parse(off).on_line(), "{off:?}");
        }
        assert_eq!(Status::parse("  OL   CHRG ").to_string(), "OL CHRG");
    }

    #[test]
    fn passes_after_stable_for_on_line() {
        let mut t = Tracker::new(Stable {
            stable_for: secs(60),
            min_charge: Some(50.0),
        });
        assert_eq!(t.progress(), "no reading yet");
        assert!(!t.observe(secs(0), reading("OL CHRG", 64.0)));
        assert_eq!(t.progress(), "on line for 0s of 1m, charge 64%");
        assert!(!t.observe(secs(23), reading("OL CHRG", 64.0)));
        assert_eq!(t.progress(), "on line for 23s of 1m, charge 64%");
        assert!(t.observe(secs(60), reading("OL", 70.0)));
        assert_eq!(t.flaps(), 0);
    }

    #[test]
    fn a_flap_to_battery_restarts_the_count() {
        let mut t = Tracker::new(Stable {
            stable_for: secs(60),
            min_charge: None,
        });
        assert!(!t.observe(secs(0), reading("OL", 80.0)));
        assert!(!t.observe(secs(50), reading("OL", 80.0)));
        assert!(!t.observe(secs(55), reading("OB DISCHRG", 79.0)));
        assert_eq!(
            t.progress(),
            "on battery (OB DISCHRG), charge 79%; 1 flap off line so far"
        );
        assert!(!t.observe(secs(60), reading("OL CHRG", 79.0)));
        assert!(!t.observe(secs(119), reading("OL CHRG", 80.0)));
        assert_eq!(
            t.progress(),
            "on line for 59s of 1m, charge 80%; 1 flap off line so far"
        );
        assert!(t.observe(secs(120), reading("OL CHRG", 80.0)));
        assert_eq!(t.flaps(), 1);
    }

    #[test]
    fn low_battery_and_forced_shutdown_are_not_on_line() {
        let mut t = Tracker::new(Stable {
            stable_for: secs(0),
            min_charge: None,
        });
        assert!(!t.observe(secs(0), reading("OL LB", 10.0)));
        assert_eq!(t.progress(), "battery low (OL LB), charge 10%");
        assert!(!t.observe(secs(1), reading("OL FSD", 10.0)));
        assert_eq!(t.progress(), "forced shutdown (OL FSD), charge 10%");
        assert!(!t.observe(secs(2), reading("WAIT", 10.0)));
        assert_eq!(t.progress(), "not on line (WAIT), charge 10%");
        assert!(t.observe(secs(3), reading("OL", 10.0)));
    }

    #[test]
    fn waits_for_the_charge_without_restarting_the_count() {
        let mut t = Tracker::new(Stable {
            stable_for: secs(10),
            min_charge: Some(50.0),
        });
        assert!(!t.observe(secs(0), reading("OL CHRG", 40.0)));
        assert!(!t.observe(secs(20), reading("OL CHRG", 49.5)));
        assert_eq!(
            t.progress(),
            "on line for 20s of 10s, charge 49.5% (needs 50%)"
        );
        assert!(t.observe(secs(21), reading("OL CHRG", 50.0)));
    }

    #[test]
    fn a_missing_charge_fails_only_a_min_charge() {
        let none = || {
            Ok(Reading {
                status: Status::parse("OL"),
                charge: None,
            })
        };
        let mut any = Tracker::new(Stable {
            stable_for: secs(0),
            min_charge: None,
        });
        assert!(any.observe(secs(0), none()));
        assert_eq!(any.progress(), "on line for 0s of 0s");
        let mut some = Tracker::new(Stable {
            stable_for: secs(0),
            min_charge: Some(20.0),
        });
        assert!(!some.observe(secs(0), none()));
        assert_eq!(
            some.progress(),
            "on line for 0s of 0s, charge not reported (needs 20%)"
        );
    }

    #[test]
    fn no_reading_breaks_the_run_and_is_named() {
        let mut t = Tracker::new(Stable {
            stable_for: secs(10),
            min_charge: None,
        });
        assert!(!t.observe(secs(0), reading("OL", 90.0)));
        assert!(!t.observe(secs(5), Err(NutError::DataStale)));
        assert!(
            t.progress()
                .starts_with("no reading: upsd says the UPS data is stale")
        );
        assert!(!t.observe(secs(11), reading("OL", 90.0)));
        assert!(t.observe(secs(21), reading("OL", 90.0)));
        assert_eq!(t.flaps(), 0, "stale data is not a flap to battery");
    }

    #[test]
    fn names() {
        assert!(valid_name("myups"));
        assert!(valid_name("ups-1.rack_2"));
        for bad in ["", "my ups", "u\nGET", "u\"", &"u".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
