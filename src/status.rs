//! `recover status`: one read-only pass over what a runbook brings back, bounded in time.
//!
//! Is the box reachable and what is its boot id; is each unit the runbook starts active, and
//! does its health gate's probe pass once; the UPS when the runbook has an `ups` step; a run
//! in progress (the lock holder), a hold, and the last run with its outcome. Nothing is
//! changed on the box: the commands sent are the Plan's own read-only lines (the boot-id read,
//! the gate's `systemctl show`, the probe). `recover watch` decides from the same [`Report`].
//!
//! [`probe_once`] is self-contained (a target, a probe, a client, a bound), so that a final
//! "every started unit active and its probe passes once" check elsewhere can share it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::plan::{Action, Command, Plan, Probe, Request};
use crate::target::ExecError;
use crate::target::ssh::Ssh;

/// How long one pass may take, and each of its parts.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connecting to a target and reading its boot id.
    pub connect: Duration,
    /// One unit's state read and its one probe, together.
    pub unit: Duration,
    /// Reading the UPS.
    pub ups: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            connect: Duration::from_secs(5),
            unit: Duration::from_secs(5),
            ups: Duration::from_secs(3),
        }
    }
}

/// How the box stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every target reachable, every started unit active, every probe passing, the UPS (if
    /// any) on line.
    Healthy,
    /// Reachable, but a unit is not active, a probe fails, or the UPS is not on line.
    Degraded,
    /// A target does not answer.
    Down,
}

impl Health {
    pub fn word(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }

    pub fn exit(self) -> crate::Exit {
        match self {
            Health::Healthy => crate::Exit::Ok,
            Health::Degraded => crate::Exit::StepFailed,
            Health::Down => crate::Exit::Aborted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub destination: String,
    pub reachable: bool,
    pub boot_id: Option<String>,
    pub error: Option<String>,
}

/// One probe, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeOnce {
    pub passed: bool,
    /// Why it failed, or what it saw; one short line.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub target: String,
    /// `ActiveState` (`active`, `inactive`, `failed`, ...), or empty when it could not be read.
    pub active: String,
    pub sub: String,
    /// The gate's probe, once (only for an active unit with a `health:`).
    pub probe: Option<ProbeOnce>,
    pub error: Option<String>,
}

impl UnitStatus {
    pub fn healthy(&self) -> bool {
        self.active == "active" && self.probe.as_ref().is_none_or(|p| p.passed)
    }

    /// "active", "inactive (dead)", "active, probe failed: HTTP 503".
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("not read: {e}");
        }
        let state = if self.sub.is_empty() {
            self.active.clone()
        } else {
            format!("{} ({})", self.active, self.sub)
        };
        match &self.probe {
            Some(p) if p.passed => format!("{state}, probe passed"),
            Some(p) => format!("{state}, probe failed: {}", p.detail),
            None => state,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpsStatus {
    pub ups: String,
    pub status: Option<String>,
    pub charge: Option<f64>,
    pub on_line: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InProgress {
    /// "runbook `spark-power`", "host spark.local:22".
    pub lock: String,
    pub pid: Option<u32>,
    pub started: Option<String>,
    pub journal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    pub journal: String,
    pub run_id: String,
    pub started: Option<String>,
    /// `success`, `failed`, `aborted`, `interrupted`, or `unfinished`.
    pub outcome: String,
    pub message: String,
}

/// One pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub runbook: String,
    pub key: String,
    pub at: String,
    pub health: Health,
    pub targets: Vec<TargetStatus>,
    pub units: Vec<UnitStatus>,
    pub ups: Option<UpsStatus>,
    pub run_in_progress: Option<InProgress>,
    pub hold: Option<crate::hold::Hold>,
    pub last_run: Option<LastRun>,
    /// How long the pass took, in seconds.
    pub took: f64,
}

impl Report {
    /// The box alone (targets and units), without the UPS: what `watch` calls healthy.
    pub fn box_health(&self) -> Health {
        if self.targets.iter().any(|t| !t.reachable) {
            Health::Down
        } else if self.units.iter().any(|u| !u.healthy()) {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// The units that are not healthy, as "unit: why".
    pub fn unhealthy_units(&self) -> Vec<String> {
        self.units
            .iter()
            .filter(|u| !u.healthy())
            .map(|u| format!("{} is {}", u.unit, u.describe()))
            .collect()
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        for t in &self.targets {
            let v = match (&t.boot_id, &t.error) {
                (Some(b), _) => format!("reachable, boot id {b}"),
                (None, Some(e)) => format!("UNREACHABLE: {e}"),
                (None, None) => "UNREACHABLE".into(),
            };
            rows.push((format!("box {} ({})", t.name, t.destination), v));
        }
        for u in &self.units {
            let mark = if u.healthy() { "" } else { "NOT HEALTHY: " };
            rows.push((u.unit.clone(), format!("{mark}{}", u.describe())));
        }
        if let Some(u) = &self.ups {
            let v = match (&u.status, &u.error) {
                (Some(s), _) => format!(
                    "{s}{}{}",
                    u.charge
                        .map(|c| format!(", charge {c}%"))
                        .unwrap_or_default(),
                    if u.on_line { "" } else { " (not on line)" }
                ),
                (None, Some(e)) => format!("not read: {e}"),
                (None, None) => "not read".into(),
            };
            rows.push((format!("UPS {}", u.ups), v));
        }
        rows.push((
            "run in progress".into(),
            match &self.run_in_progress {
                Some(r) => {
                    format!(
                        "yes: {}{}",
                        r.lock,
                        r.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
                    ) + &r
                        .started
                        .as_ref()
                        .map(|s| format!(", started {s}"))
                        .unwrap_or_default()
                }
                None => "no".into(),
            },
        ));
        rows.push((
            "hold".into(),
            match &self.hold {
                Some(h) => h.describe(),
                None => "none".into(),
            },
        ));
        rows.push((
            "last run".into(),
            match &self.last_run {
                Some(r) => format!(
                    "{} {}{} ({})",
                    r.started.as_deref().unwrap_or("?"),
                    r.outcome,
                    if r.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.message)
                    },
                    r.journal
                ),
                None => "none journaled".into(),
            },
        ));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = format!(
            "{}: {} (checked in {:.1}s)\n",
            self.runbook,
            self.health.word().to_uppercase(),
            self.took
        );
        for (k, v) in rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }
}

/// Control characters out, at most `max` characters: remote text is shown, never obeyed.
pub fn clean(text: &str, max: usize) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    } else {
        line
    }
}

/// Why a verdict failed, or `None` when it passed.
fn reason(v: crate::verdict::Verdict) -> Option<String> {
    match v {
        crate::verdict::Verdict::Pass => None,
        crate::verdict::Verdict::Fail(r) | crate::verdict::Verdict::Abort(r) => Some(r),
    }
}

/// An HTTP client as the engine's: no proxies, a bounded connect, rustls, no redirects. On a
/// host without CA certificates (no `ca-certificates`), one that speaks plain HTTP and
/// refuses every certificate, rather than a panic.
pub fn client() -> Option<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = || {
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("recover/", env!("CARGO_PKG_VERSION")))
    };
    builder()
        .build()
        .or_else(|_| builder().tls_certs_only(Vec::new()).build())
        .ok()
}

/// A receiver that never cancels, for one-shot commands.
fn never() -> (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<bool>,
) {
    tokio::sync::watch::channel(false)
}

/// Run `c` on `ssh` once, within `timeout`.
async fn exec(
    ssh: &Ssh,
    c: &Command,
    timeout: Duration,
) -> Result<crate::target::Finished, ExecError> {
    let (_tx, mut rx) = never();
    let t = timeout.max(Duration::from_secs(1));
    match tokio::time::timeout(
        t + Duration::from_secs(2),
        ssh.exec(&c.wire, c.kill.as_deref(), t, &mut rx, &mut |_| {}),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ExecError::Spawn(format!(
            "no answer within {}",
            crate::plan::fmt_duration(t)
        ))),
    }
}

/// The gate's probe, once, within `bound` (or the request's own timeout when shorter): an
/// `http:` probe from here (or by `curl` on the target for `from: target`), a `run:` probe on
/// `ssh` judged by its `expect`.
pub async fn probe_once(
    ssh: &Ssh,
    probe: &Probe,
    http: Option<&reqwest::Client>,
    bound: Duration,
) -> ProbeOnce {
    match probe {
        Probe::Http(req) => http_once(ssh, req, http, bound).await,
        Probe::Run { command, expect } => match exec(ssh, command, bound).await {
            Ok(f) => {
                let v = crate::verdict::judge(&f.output, expect.as_ref(), None);
                let r = reason(v);
                ProbeOnce {
                    passed: r.is_none(),
                    detail: clean(&r.unwrap_or_else(|| "passed".into()), 120),
                }
            }
            Err(e) => ProbeOnce {
                passed: false,
                detail: clean(&e.to_string(), 120),
            },
        },
    }
}

async fn http_once(
    ssh: &Ssh,
    req: &Request,
    http: Option<&reqwest::Client>,
    bound: Duration,
) -> ProbeOnce {
    let timeout = req.timeout.min(bound).max(Duration::from_millis(500));
    let (status, body, error) = if let Some(curl) = &req.on_target {
        match exec(ssh, curl, timeout + crate::plan::request::CURL_GRACE).await {
            Ok(f) if f.output.exit == Some(0) => {
                let text = f.output.stdout.trim_end_matches('\n');
                let (body, code) = text.rsplit_once('\n').unwrap_or(("", text));
                match code.trim().parse::<u16>().ok().filter(|s| *s != 0) {
                    Some(c) => (Some(c), body.to_owned(), None),
                    None => (None, String::new(), Some("no HTTP answer".to_owned())),
                }
            }
            Ok(f) => (
                None,
                String::new(),
                Some(format!(
                    "curl on the target failed (exit {})",
                    f.output
                        .exit
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into())
                )),
            ),
            Err(e) => (None, String::new(), Some(e.to_string())),
        }
    } else if let Some(http) = http {
        let method =
            reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut rb = http.request(method, &req.url).timeout(timeout);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let fut = async {
            let resp = rb.send().await?;
            let status = resp.status().as_u16();
            // A probe's answer is judged, not kept: at most 64 KiB of it.
            let mut body = Vec::new();
            let mut resp = resp;
            while let Some(chunk) = resp.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > 64 * 1024 {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(timeout + Duration::from_secs(1), fut).await {
            Ok(Ok((s, b))) => (Some(s), b, None),
            Ok(Err(e)) => (
                None,
                String::new(),
                Some(if e.is_timeout() {
                    format!("no answer within {}", crate::plan::fmt_duration(timeout))
                } else if e.is_connect() {
                    "connection refused or unreachable".to_owned()
                } else {
                    "request failed".to_owned()
                }),
            ),
            Err(_) => (
                None,
                String::new(),
                Some(format!(
                    "no answer within {}",
                    crate::plan::fmt_duration(timeout)
                )),
            ),
        }
    } else {
        (
            None,
            String::new(),
            Some("no HTTP client on this host (its TLS set-up failed)".to_owned()),
        )
    };
    match status {
        Some(code) => {
            let v = crate::verdict::judge_http(code, &body, Some(&req.expect));
            let r = reason(v);
            ProbeOnce {
                passed: r.is_none(),
                detail: clean(&r.unwrap_or_else(|| format!("HTTP {code}")), 120),
            }
        }
        None => ProbeOnce {
            passed: false,
            detail: clean(&error.unwrap_or_else(|| "no answer".into()), 120),
        },
    }
}

/// Where `status` finds the lock of a run in progress, the hold and the journals.
pub struct Places {
    pub state: Option<crate::state::StateDir>,
    pub lock_dirs: Vec<std::path::PathBuf>,
}

/// The part of a pass that reads local state only (no network): the lock, the hold, the
/// last run.
pub fn local(
    plan: &Plan,
    places: &Places,
) -> (
    Option<InProgress>,
    Option<crate::hold::Hold>,
    Option<LastRun>,
) {
    let keys = crate::lock::keys(
        &plan.name,
        plan.targets
            .iter()
            .map(|t| (t.host.as_str(), t.port.unwrap_or(22))),
    );
    let in_progress =
        crate::lock::in_progress(&places.lock_dirs, &keys).map(|(key, owner)| InProgress {
            lock: key.what,
            pid: owner.as_ref().map(|o| o.pid),
            started: owner.as_ref().map(|o| o.started.clone()),
            journal: owner.map(|o| o.journal.display().to_string()),
        });
    let key = plan.state_key();
    let hold = places
        .state
        .as_ref()
        .and_then(|s| crate::hold::read(s, &key).ok().flatten())
        .filter(|h| h.holds_at(chrono::Utc::now()));
    let last_run = places.state.as_ref().and_then(|s| last_run(s, &key));
    (in_progress, hold, last_run)
}

/// The newest journaled run of `key`, with how it ended.
pub fn last_run(state: &crate::state::StateDir, key: &str) -> Option<LastRun> {
    let path = crate::journal::latest(state, key)?;
    // A journal is read whole for its last run; one far larger than any run writes is not.
    let meta = std::fs::metadata(&path).ok()?;
    if meta.len() > 64 * 1024 * 1024 {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    let (runs, _) = crate::incident::parse(&String::from_utf8_lossy(&bytes));
    let run = runs.into_iter().rfind(|r| r.key == key)?;
    let (outcome, message) = match &run.end {
        Some(e) => (
            serde_json::to_value(e.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            clean(&e.message, 200),
        ),
        None => ("unfinished".to_owned(), String::new()),
    };
    Some(LastRun {
        journal: path.display().to_string(),
        run_id: run.run_id,
        started: run
            .date
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        outcome,
        message,
    })
}

/// One pass over the box: every target, every unit the runbook starts (in parallel, each
/// bounded), the UPS; with the local state.
pub async fn check(plan: &Plan, places: &Places, bounds: Bounds) -> Report {
    let began = Instant::now();
    let http = client();
    let ssh: Vec<Arc<Ssh>> = plan
        .targets
        .iter()
        .map(|t| Arc::new(Ssh::new(t.clone())))
        .collect();

    let mut connects = tokio::task::JoinSet::new();
    for (i, s) in ssh.iter().enumerate() {
        let s = s.clone();
        let t = bounds.connect;
        connects.spawn(async move { (i, s.connect(t).await) });
    }
    let mut targets: Vec<TargetStatus> = plan
        .targets
        .iter()
        .map(|t| TargetStatus {
            name: t.name.clone(),
            destination: t.destination(),
            reachable: false,
            boot_id: None,
            error: Some("not checked".into()),
        })
        .collect();
    while let Some(r) = connects.join_next().await {
        let Ok((i, r)) = r else { continue };
        let t = &mut targets[i];
        match r {
            Ok(id) => {
                t.reachable = true;
                t.boot_id = Some(clean(&id, 64));
                t.error = None;
            }
            Err(e) => t.error = Some(clean(&plan.secrets.redact(&e.to_string()), 300)),
        }
    }

    let mut units = tokio::task::JoinSet::new();
    let mut order = Vec::new();
    for s in plan.phases.iter().flat_map(|p| &p.steps) {
        let Action::Start {
            unit,
            status,
            health,
            ..
        } = &s.action
        else {
            continue;
        };
        let n = order.len();
        let target_name = plan
            .targets
            .get(s.target)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        order.push((unit.clone(), target_name.clone()));
        if !targets.get(s.target).is_some_and(|t| t.reachable) {
            continue;
        }
        let ssh = ssh[s.target].clone();
        let status = status.clone();
        let probe = health.as_ref().map(|g| g.probe.clone());
        let http = http.clone();
        let unit = unit.clone();
        let bound = bounds.unit;
        units.spawn(async move {
            let deadline = Instant::now() + bound;
            let r = match exec(&ssh, &status, bound).await {
                Ok(f) => {
                    let st = crate::engine::gate::UnitState::parse(&f.output.stdout);
                    let probe = if st.active == "active" {
                        match &probe {
                            Some(p) => {
                                let left = deadline
                                    .saturating_duration_since(Instant::now())
                                    .max(Duration::from_secs(1));
                                Some(probe_once(&ssh, p, http.as_ref(), left).await)
                            }
                            None => None,
                        }
                    } else {
                        None
                    };
                    UnitStatus {
                        unit,
                        target: target_name,
                        active: clean(&st.active, 40),
                        sub: clean(&st.sub, 40),
                        probe,
                        error: None,
                    }
                }
                Err(e) => UnitStatus {
                    unit,
                    target: target_name,
                    active: String::new(),
                    sub: String::new(),
                    probe: None,
                    error: Some(clean(&e.to_string(), 200)),
                },
            };
            (n, r)
        });
    }
    let mut found: Vec<Option<UnitStatus>> = vec![None; order.len()];
    while let Some(r) = units.join_next().await {
        if let Ok((n, u)) = r {
            found[n] = Some(u);
        }
    }
    let units: Vec<UnitStatus> = found
        .into_iter()
        .zip(order)
        .map(|(u, (unit, target))| {
            u.unwrap_or(UnitStatus {
                unit,
                target,
                active: String::new(),
                sub: String::new(),
                probe: None,
                error: Some("its target is unreachable".into()),
            })
        })
        .map(|mut u| {
            if let Some(p) = &mut u.probe {
                p.detail = plan.secrets.redact(&p.detail);
            }
            if let Some(e) = &mut u.error {
                *e = plan.secrets.redact(e);
            }
            u
        })
        .collect();

    let ups = match ups_wait(plan) {
        Some(w) => Some(read_ups(&w.ups, bounds.ups).await),
        None => None,
    };
    for s in &ssh {
        s.close().await;
    }
    let (run_in_progress, hold, last_run) = local(plan, places);
    let mut report = Report {
        runbook: plan.name.clone(),
        key: plan.state_key(),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        health: Health::Healthy,
        targets,
        units,
        ups,
        run_in_progress,
        hold,
        last_run,
        took: 0.0,
    };
    report.health = match report.box_health() {
        Health::Healthy if report.ups.as_ref().is_some_and(|u| !u.on_line) => Health::Degraded,
        h => h,
    };
    report.took = (began.elapsed().as_millis() as f64 / 100.0).round() / 10.0;
    report
}

/// The runbook's first `ups` step: the terms mains must meet.
pub fn ups_wait(plan: &Plan) -> Option<crate::plan::UpsWait> {
    plan.phases
        .iter()
        .flat_map(|p| &p.steps)
        .find_map(|s| match &s.action {
            Action::Ups(w) => Some(w.clone()),
            _ => None,
        })
}

/// One reading of the UPS, as status shows it.
pub async fn read_ups(ups: &crate::power::nut::Ups, bound: Duration) -> UpsStatus {
    match ups.read(bound).await {
        Ok(r) => UpsStatus {
            ups: ups.to_string(),
            on_line: r.status.on_line(),
            status: Some(clean(&r.status.to_string(), 80)),
            charge: r.charge,
            error: None,
        },
        Err(e) => UpsStatus {
            ups: ups.to_string(),
            status: None,
            charge: None,
            on_line: false,
            error: Some(clean(&e.to_string(), 200)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_drops_control_characters_and_bounds_by_characters() {
        assert_eq!(clean("\u{1b}]0;pwned\u{7}ok\n", 80), " ]0;pwned ok");
        assert_eq!(clean("ééééé", 3), "ééé…");
    }

    fn unit(active: &str, probe: Option<bool>) -> UnitStatus {
        UnitStatus {
            unit: "a.service".into(),
            target: "box".into(),
            active: active.into(),
            sub: "running".into(),
            probe: probe.map(|passed| ProbeOnce {
                passed,
                detail: "HTTP 503".into(),
            }),
            error: None,
        }
    }

    #[test]
    fn a_unit_is_healthy_when_active_and_its_probe_passes() {
        assert!(unit("active", None).healthy());
        assert!(unit("active", Some(true)).healthy());
        assert!(!unit("active", Some(false)).healthy());
        assert!(!unit("inactive", None).healthy());
        assert!(!unit("failed", None).healthy());
        assert_eq!(
            unit("active", Some(false)).describe(),
            "active (running), probe failed: HTTP 503"
        );
    }
}
