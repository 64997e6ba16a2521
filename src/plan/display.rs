//! The plan as text: what `run --dry-run` prints, every line the engine may send included.
//! Secrets are shown as `***`.

use std::fmt::Write;

use super::{
    Action, Command, Plan, PowerOn, Probe, Rehearse, Request, Step, TargetSpec, fmt_duration,
    fmt_window,
};
use crate::runbook::model::OnFail;
use crate::verdict::{HttpExpect, Matcher};

pub fn plan_text(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Plan: {} ({})", plan.title, plan.name);
    match plan.files.as_slice() {
        [_] | [] => {
            let _ = writeln!(
                o,
                "  runbook   {}  sha256 {}",
                plan.source.display(),
                &plan.sha256
            );
        }
        files => {
            for f in files {
                let _ = writeln!(
                    o,
                    "  {:<9} {}  sha256 {}",
                    f.role.label(),
                    f.path.display(),
                    f.sha256
                );
            }
            let _ = writeln!(
                o,
                "  sha256    {}  (of the {} files)",
                plan.sha256,
                files.len()
            );
        }
    }
    let mut budget = format!("  budget    {}", fmt_duration(plan.budget));
    if let Some(r) = plan.rehearse_every {
        let _ = write!(budget, "; rehearse every {}", fmt_duration(r));
    }
    let _ = writeln!(o, "{budget}");
    for (i, t) in plan.targets.iter().enumerate() {
        let _ = writeln!(
            o,
            "  target    {}{}",
            target_line(t),
            if i == 0 { "  (default)" } else { "" }
        );
        let _ = writeln!(
            o,
            "  boot id   {}  (read on {} at each connection)",
            t.boot_id, t.name
        );
    }
    for c in &plan.channels {
        let _ = writeln!(
            o,
            "  notify    {}: {:?} webhook {}",
            c.name, c.format, c.url
        );
    }
    match &plan.abort.channel {
        Some(c) => {
            let _ = writeln!(
                o,
                "  on abort  notify {c}, show the abort message, stop with exit 3"
            );
        }
        None => {
            let _ = writeln!(o, "  on abort  show the abort message, stop with exit 3");
        }
    }
    let total: usize = plan.phases.iter().map(|p| p.steps.len()).sum();
    let changing: usize = plan
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .filter(|s| s.mutates)
        .count();
    let _ = writeln!(
        o,
        "  steps     {total} in {} phases; {changing} change state",
        plan.phases.len()
    );

    for (i, ph) in plan.phases.iter().enumerate() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "Phase {}  {}  [{}]",
            i + 1,
            ph.name,
            fmt_window(&ph.window)
        );
        for s in &ph.steps {
            step_text(&mut o, plan, s);
        }
    }
    if !plan.abort.message.trim().is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "Abort procedure:");
        for l in plan.abort.message.trim_end().lines() {
            let _ = writeln!(o, "  {l}");
        }
    }
    if !plan.secrets.missing.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "Not set in this environment (a real run refuses to start without them): {}",
            plan.secrets.missing.join(", ")
        );
    }
    plan.secrets.redact(&o)
}

fn target_line(t: &TargetSpec) -> String {
    let mut s = format!("{}  {}", t.name, t.destination());
    if let Some(p) = t.port {
        let _ = write!(s, ":{p}");
    }
    let mut extra = Vec::new();
    if let Some(i) = &t.identity {
        extra.push(format!("identity {}", i.display()));
    }
    if let Some(k) = &t.known_hosts {
        extra.push(format!("known_hosts {}", k.display()));
    }
    if let Some(c) = &t.ssh_config {
        extra.push(format!("ssh_config {}", c.display()));
    }
    extra.push("strict host key checking".into());
    let _ = write!(s, "  ({})", extra.join(", "));
    s
}

fn step_text(o: &mut String, plan: &Plan, s: &Step) {
    let state = if s.mutates {
        "changes state"
    } else {
        "read-only"
    };
    let _ = writeln!(o, "  {:>2}. {}", s.number, s.name);
    let target = plan
        .targets
        .get(s.target)
        .map(|t| t.name.as_str())
        .unwrap_or("?");
    let mut meta = format!(
        "{}, {state}, timeout {}",
        s.action.kind(),
        fmt_duration(s.timeout)
    );
    if let Some(r) = &s.retry {
        let _ = write!(
            meta,
            ", retry every {} for up to {}",
            fmt_duration(r.every),
            fmt_duration(r.timeout)
        );
    }
    let _ = writeln!(o, "      {meta}");
    let line = |o: &mut String, label: &str, text: &str| {
        let mut lines = text.lines();
        let _ = writeln!(o, "      {label:<9} {}", lines.next().unwrap_or(""));
        for l in lines {
            let _ = writeln!(o, "      {:<9} {l}", "");
        }
    };
    // A command sent with sudo travels encoded (see `wire`): what it runs is shown below it.
    // One that holds a secret travels on stdin: that is shown below it too.
    let command = |o: &mut String, label: &str, c: &Command| {
        line(o, label, &c.wire);
        if c.sudo {
            line(o, "as root", &c.script);
        }
        if let Some(s) = &c.stdin {
            line(o, "on stdin", s.trim_end());
        }
    };
    match &s.action {
        Action::Manual {
            text,
            pass,
            unattended,
        } => {
            line(o, "operator", text.trim_end());
            if let Some(p) = pass {
                line(o, "done when", p.trim());
            }
            line(o, "unattended", unattended_text(*unattended));
        }
        Action::Run(c) => command(o, &format!("on {target}"), c),
        Action::Local(c) => command(o, "local", c),
        Action::WaitSsh {
            every,
            timeout,
            otherwise,
        } => {
            let boot_id = plan.targets.get(s.target).map(|t| t.boot_id.as_str());
            line(
                o,
                &format!("on {target}"),
                boot_id.unwrap_or(super::BOOT_ID_COMMAND),
            );
            line(
                o,
                "until",
                &format!(
                    "it answers: try every {}, give up after {}",
                    fmt_duration(*every),
                    fmt_duration(*timeout)
                ),
            );
            if let Some(ask) = otherwise {
                let posted = ask
                    .channel
                    .as_ref()
                    .map(|c| format!(", posted to {c}"))
                    .unwrap_or_default();
                line(
                    o,
                    "otherwise",
                    &format!(
                        "ask a person{posted}, then wait {} more:\n{}",
                        fmt_duration(ask.timeout),
                        ask.text.trim_end()
                    ),
                );
            }
        }
        Action::DropCaches(c) => command(o, &format!("on {target}"), c),
        Action::PreviousBoot {
            command,
            on_unclean,
        } => {
            line(o, &format!("on {target}"), &command.wire);
            line(
                o,
                "if unclean",
                match on_unclean {
                    crate::runbook::model::OnUnclean::Abort => "abort (the long procedure)",
                    crate::runbook::model::OnUnclean::Warn => "warn and go on",
                    crate::runbook::model::OnUnclean::Continue => "go on",
                },
            );
        }
        Action::Start {
            start,
            status,
            health,
            journal,
            audit,
            drill,
            ..
        } => {
            command(o, &format!("on {target}"), start);
            match health {
                Some(g) => {
                    line(
                        o,
                        "gate",
                        &format!(
                            "unit active and probe passing {}; probe every {}, give up after {}",
                            match g.successes {
                                1 => "once".to_owned(),
                                n => format!("{n} times in a row"),
                            },
                            fmt_duration(g.every),
                            fmt_duration(g.timeout)
                        ),
                    );
                    command(o, "state", status);
                    match &g.probe {
                        Probe::Http(r) => request_lines(o, &line, r, target),
                        Probe::Run {
                            command: probe,
                            expect,
                        } => {
                            command(o, "probe", probe);
                            if let Some(m) = expect {
                                line(o, "expect", &matcher_text(m));
                            }
                        }
                    }
                    if let Some(r) = &g.remedy {
                        line(o, "remedy", &crate::remedy::when(&r.policy));
                        command(o, "remedy", &r.apply);
                    }
                }
                None => {
                    line(o, "gate", "unit active (no health probe)");
                    command(o, "state", status);
                }
            }
            command(o, "if failed", journal);
            line(o, "audit", &audit.wire);
            line(o, "drill", &drill.state.wire);
            line(o, "drill", &drill.kill.wire);
        }
        Action::Http(r) => request_lines(o, &line, r, target),
        Action::Notify { channel, message } => {
            line(o, "post to", channel);
            line(o, "message", message.trim_end());
        }
        Action::Ups(w) => {
            line(
                o,
                "upsd",
                &format!(
                    "GET VAR {n} ups.status, GET VAR {n} battery.charge at {}:{}",
                    w.ups.host,
                    w.ups.port,
                    n = w.ups.name
                ),
            );
            let charge = w
                .want
                .min_charge
                .map(|c| format!(", battery.charge at least {c}%"))
                .unwrap_or_default();
            line(
                o,
                "until",
                &format!(
                    "OL and none of OB, LB, FSD for {} without a break{charge}; read every {}, give up after {}",
                    fmt_duration(w.want.stable_for),
                    fmt_duration(w.every),
                    fmt_duration(w.timeout)
                ),
            );
        }
        Action::PowerOn(p @ PowerOn::Wol { mac, address, port }) => {
            line(
                o,
                "local",
                &format!("magic packet for {mac} to {address}:{port} (UDP, 102 bytes)"),
            );
            line(o, "by hand", &p.by_hand().join("\n"));
        }
        Action::PowerOn(PowerOn::Ipmi { on, status, .. }) => {
            line(o, "local", on);
            line(
                o,
                "until",
                &format!("{status} prints \"Chassis Power is on\""),
            );
            line(
                o,
                "password",
                "given to ipmitool as IPMI_PASSWORD (-E), never on its command line",
            );
        }
    }
    if let Some(n) = s.when_unclean {
        line(
            o,
            "when",
            &format!("unclean_shutdown: skipped only if step {n} finds a clean shutdown"),
        );
    }
    if let Some(m) = &s.expect {
        line(o, "expect", &matcher_text(m));
    } else if matches!(
        s.action,
        Action::Run(_) | Action::Local(_) | Action::DropCaches(_)
    ) {
        line(o, "expect", "exit 0");
    }
    if let Some(m) = &s.abort_if {
        line(o, "abort if", &matcher_text(m));
    }
    match s.on_fail {
        OnFail::Stop => {}
        OnFail::Abort => line(o, "on fail", "abort (off the timeline)"),
        OnFail::Continue => line(o, "on fail", "continue with the next step"),
    }
    for e in &s.expected {
        line(o, "harmless", e);
    }
    if let Some(m) = &s.abort_message {
        line(o, "if abort", m.trim_end());
    }
    match &s.rehearse {
        Rehearse::CheckPaths(c) | Rehearse::InspectUnit(c) => line(o, "rehearse", &c.wire),
        Rehearse::Run | Rehearse::WouldRun => {}
    }
    if let Some(c) = &s.sudo_check {
        line(o, "rehearse", &c.wire);
    }
    let mut kills: Vec<&str> = Vec::new();
    for k in s.commands().into_iter().filter_map(|c| c.kill.as_deref()) {
        if !kills.contains(&k) {
            kills.push(k);
        }
    }
    for k in kills {
        line(o, "to cancel", k);
    }
}

fn request_lines(
    o: &mut String,
    line: &dyn Fn(&mut String, &str, &str),
    r: &Request,
    target: &str,
) {
    let from = if r.on_target.is_some() {
        format!("on {target}")
    } else {
        "from here".to_owned()
    };
    line(o, &from, &r.curl());
    if let Some(c) = &r.on_target {
        line(o, "sent as", &c.wire);
        if let Some(s) = &c.stdin {
            line(o, "on stdin", s.trim_end());
        }
    }
    line(o, "expect", &http_expect_text(&r.expect));
}

pub fn matcher_text(m: &Matcher) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &m.exit {
        let codes: Vec<String> = e.iter().map(i32::to_string).collect();
        parts.push(format!("exit {}", codes.join(" or ")));
    }
    if let Some(r) = &m.stdout {
        parts.push(format!("stdout matches /{}/", r.as_str()));
    }
    if let Some(r) = &m.stderr {
        parts.push(format!("stderr matches /{}/", r.as_str()));
    }
    parts.join(", ")
}

pub fn http_expect_text(e: &HttpExpect) -> String {
    let mut parts = Vec::new();
    match &e.status {
        Some(s) => parts.push(format!(
            "HTTP {}",
            s.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        None => parts.push("HTTP 2xx".to_owned()),
    }
    if let Some(b) = &e.body {
        parts.push(format!("body matches /{}/", b.as_str()));
    }
    parts.join(", ")
}

/// What `run --unattended` does at a manual step, as `--dry-run` and the binder say it.
pub fn unattended_text(u: Option<crate::runbook::model::Unattended>) -> &'static str {
    match u {
        Some(crate::runbook::model::Unattended::Skip) => {
            "skip: go on; the journal and the abort channel say nobody confirmed it"
        }
        Some(crate::runbook::model::Unattended::Abort) => {
            "abort: the run stops here (the abort procedure, its post, exit 3)"
        }
        None => "not said: `run --unattended` refuses this runbook",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::plan_text;
    use crate::plan::{Options, Plan, Rehearse, resolve};

    const SMALL: &str = r#"
name: small
budget: 10m
targets:
  box: { host: box.local, user: root }
phases:
  - name: All
    window: 0m-10m
    steps:
      - run: "mount /dev/sdb1 /srv/models"
      - local: "true"
      - start: api.service
        health:
          run: "curl -fsS http://127.0.0.1:9/health"
      - http: { url: "http://127.0.0.1:9/ready", from: target }
"#;

    fn plan(path: &str, text: &str) -> Plan {
        plan_env(path, text, &[])
    }

    fn plan_env(path: &str, text: &str, env: &[(&str, &str)]) -> Plan {
        let loaded = crate::runbook::parse(Path::new(path), text, String::new()).expect("parses");
        let mut opts = Options::default();
        for (k, v) in env {
            opts.env.insert((*k).to_owned(), (*v).to_owned());
        }
        resolve(&loaded, &opts).expect("resolves")
    }

    /// Commands that hold a secret: sent on stdin.
    const SECRET: &str = r#"
name: secret
budget: 10m
targets:
  box: { host: box.local, user: ops }
phases:
  - name: All
    window: 0m-10m
    steps:
      - run: "test -n {{ env.TOKEN }}"
      - local: "test -n {{ env.TOKEN }}"
      - http: { url: "http://127.0.0.1:9/ready", from: target, headers: { X-Token: "{{ env.TOKEN }}" } }
      - start: api.service
        sudo: false
        health:
          run: "curl -fsS -H 'X: {{ env.TOKEN }}' http://127.0.0.1:9/"
          remedy: { run: "echo {{ env.TOKEN }}" }
"#;

    /// Every line the engine may send, as the Plan holds it, is printed by `--dry-run`.
    #[test]
    fn the_dry_run_shows_every_line_the_engine_may_send() {
        let plans = [
            plan(
                "spark-power.yaml",
                include_str!("../../runbooks/spark-power.yaml"),
            ),
            // An overlay: what it extends is read from beside it.
            plan(
                concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/lab.yaml"),
                include_str!("../../runbooks/lab.yaml"),
            ),
            plan("small.yaml", SMALL),
            plan_env("secret.yaml", SECRET, &[("TOKEN", r#"a'b"c$d\e"#)]),
        ];
        let mut on_stdin = 0;
        for p in &plans {
            let text = plan_text(p);
            for t in &p.targets {
                assert!(text.contains(&t.boot_id), "{}: no boot id read", p.name);
            }
            let mut kills = 0;
            for s in p.phases.iter().flat_map(|ph| &ph.steps) {
                for c in s.commands() {
                    let wire = p.secrets.redact(&c.wire);
                    assert!(text.contains(&wire), "{} step {}: {wire}", p.name, s.number);
                    // What it reads on stdin is shown too, every line of it.
                    if let Some(stdin) = &c.stdin {
                        on_stdin += 1;
                        let shown = p.secrets.redact(stdin);
                        let mut lines = shown.trim_end().lines();
                        let first = format!("on stdin  {}", lines.next().unwrap());
                        assert!(
                            text.contains(&first),
                            "{} step {}: {first}",
                            p.name,
                            s.number
                        );
                        for l in lines {
                            assert!(text.contains(&format!("          {l}\n")), "{l}\n{text}");
                        }
                    }
                    if let Some(k) = &c.kill {
                        kills += 1;
                        assert!(text.contains(k), "{} step {}: {k}", p.name, s.number);
                    }
                }
            }
            assert!(kills > 0, "{}: no remote command", p.name);
        }
        // run, local, the request from the target, the probe and the remedy.
        assert_eq!(on_stdin, 5);
        let small = &plans[2];
        let steps: Vec<_> = small.phases[0].steps.iter().collect();
        assert!(matches!(steps[0].rehearse, Rehearse::CheckPaths(_)));
        assert!(matches!(steps[2].rehearse, Rehearse::InspectUnit(_)));
        assert_eq!(steps[3].rehearse, Rehearse::Run);
        let text = plan_text(small);
        assert!(
            text.contains("for p in /dev/sdb1 /srv/models; do"),
            "{text}"
        );
        assert!(
            text.contains("sent as   timeout -k 5s 32s sh -c 'curl"),
            "{text}"
        );
    }
}
