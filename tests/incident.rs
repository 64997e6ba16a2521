//! The post-incident report from journals of real runs: the `recover` binary against a real
//! sshd and real HTTP servers on 127.0.0.1 writes the journals (a rehearsal, a clean run, a
//! failure, an abort, an interruption and its resume, a run of an edited runbook, a reboot),
//! then the report is rendered from them: Markdown snapshots (times redacted), the HTML opened
//! in headless Chromium (a screenshot that is not blank, no request leaving the page).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    Background, HttpServer, Sshd, eventually, journals_in, p, recover_in, require_tool, run_bounded,
};
use recover::incident::{self, Report};

// --- helpers ---------------------------------------------------------------------------------

/// A three-phase runbook. The first phase's window (0s-2s) is shorter than its `sleep 3`, so
/// it really overruns. Files in `dir` steer it: `fail` fails the kernel check, `ext4` makes it
/// abort, `hang` makes the POST wait hang (for Ctrl-C).
fn write_runbook(dir: &Path, sshd: &Sshd, api: &HttpServer, hook: &HttpServer) -> PathBuf {
    let text = format!(
        r#"name: incident
title: Incident report test
budget: 40s
targets:
{target}vars:
  api: {api}
notify:
  ops: {{ webhook: "{hook}/hook", format: slack }}
abort:
  notify: ops
  message: Follow the long procedure.
phases:
  - name: Power on and POST
    window: 0s-2s
    steps:
      - manual: Press the power button.
      - wait_ssh: {{ every: 1s, timeout: 10s }}
      - name: wait for POST
        local: "if [ -e @DIR@/hang ]; then exec sleep 300; fi; sleep 3"
        timeout: 2m
  - name: Checks
    window: 2s-20s
    steps:
      - name: kernel log
        run: "echo kernel ok; if [ -e @DIR@/ext4 ]; then echo 'EXT4-fs error (device vda): bad'; fi; [ ! -e @DIR@/fail ] || exit 3"
        mutates: false
        expect: {{ exit: 0 }}
        abort_if: {{ stdout: "EXT4-fs error" }}
  - name: Smoke test and report
    window: 20s-40s
    steps:
      - name: "chat <img src={api}/leak-from-a-step-name>"
        http:
          url: "{{{{ vars.api }}}}/v1/chat/completions"
          method: POST
          json: {{ model: m, messages: [{{ role: user, content: hi }}] }}
          expect: {{ status: 200, body: '"choices"' }}
          timeout: 5s
      - notify: ops
        message: "We are back after {{{{ run.elapsed }}}}."
"#,
        target = sshd.runbook_target_yaml("lab"),
        api = api.url(),
        hook = hook.url(),
    )
    .replace("@DIR@", &dir.display().to_string());
    let path = dir.join("incident.yaml");
    fs::write(&path, text).expect("write the runbook");
    path
}

/// Whether a journal not in `before` says, within 30 s, that the step `name` started.
fn step_started(state: &Path, before: &[PathBuf], name: &str) -> bool {
    eventually(Duration::from_secs(30), || {
        journals_in(state)
            .iter()
            .filter(|j| !before.contains(j))
            .any(|j| {
                fs::read_to_string(j).is_ok_and(|t| {
                    t.lines()
                        .any(|l| l.contains(r#""event":"step_started""#) && l.contains(name))
                })
            })
    })
}

/// The journal written by the command `f` runs (the one file new under `state`).
fn new_journal(state: &Path, f: impl FnOnce()) -> PathBuf {
    let before = journals_in(state);
    f();
    let after = journals_in(state);
    let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "expected one new journal: {new:?}");
    new[0].clone()
}

fn run(state: &Path, args: &[&str], code: i32) {
    let out = recover_in(state)
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run recover");
    assert_eq!(
        out.status.code(),
        Some(code),
        "recover {args:?}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `recover ARGS` with the report's date fixed at [`fixed_now`]: its stdout when it exits
/// with `code` 0, else its stderr.
fn report_cmd(state: &Path, args: &[&str], code: i32) -> String {
    let out = recover_in(state)
        .args(args)
        .env("SOURCE_DATE_EPOCH", fixed_now().timestamp().to_string())
        .output()
        .expect("run recover");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(code), "recover {args:?}\n{stderr}");
    if code == 0 { stdout } else { stderr }
}

fn fixed_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .expect("a date")
        .with_timezone(&Utc)
}

fn report_of(state: &Path, journal: &Path) -> Report {
    let record = incident::rehearsal_record(&state.join("recover/rehearsals/incident.json"));
    incident::report(
        journal,
        &state.join("recover/runs"),
        record.as_ref(),
        fixed_now(),
    )
    .unwrap_or_else(|e| panic!("report of {}: {e}", journal.display()))
}

/// Snapshots with what changes from run to run redacted: durations, clock times, dates, ids,
/// hashes, temporary paths and ports, and which way a comparison went.
fn assert_md(name: &str, md: &str) {
    let mut settings = insta::Settings::clone_current();
    for (re, with) in [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[boot id]",
        ),
        (r"\b[0-9a-f]{8}-[0-9a-f]{3}…", "[boot id]…"),
        (r"/tmp/[^\s|`)]+", "[path]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"\d{4}-\d\d-\d\d( \d\d:\d\d(:\d\d)?)?( UTC)?", "[date]"),
        (r"\b\d+h\d\dm\b|\b\d+m\d\ds\b|\b\d+(\.\d)?s\b", "[dur]"),
        (r"\b\d\d:\d\d\b", "[clock]"),
        (r"\d+\.\d %", "[pct]"),
        (r"\b[0-9a-f]{12}…", "[sha]…"),
        (r"\b[0-9a-f]{8}\b", "[id]"),
        (
            r"\[dur\] (longer|shorter) than|about as long as",
            "[compared with]",
        ),
        (r"(\[dur\] (longer|shorter)|\bsame) \|", "[compared] |"),
        // which differences pass a second varies from run to run
        (r"(?s)\n## Compared with before\n\n.*?\n\n", "\n"),
    ] {
        settings.add_filter(re, with);
    }
    settings.bind(|| insta::assert_snapshot!(name, md));
}

fn servers() -> (HttpServer, HttpServer) {
    let api = HttpServer::start();
    api.respond(
        "POST",
        "/v1/chat/completions",
        200,
        r#"{"choices":[{"message":{"content":"ready"}}]}"#,
    );
    let hook = HttpServer::start();
    hook.respond("POST", "/hook", 200, "ok");
    (api, hook)
}

// --- Chromium --------------------------------------------------------------------------------

/// Opens `html` in headless Chromium, no network (every host name resolves to nothing), and
/// returns the screenshot's pixels as (width, height, RGB rows).
fn screenshot(browser: &Path, html: &Path, dir: &Path) -> (usize, usize, Vec<[u8; 3]>) {
    let png = dir.join("shot.png");
    let profile = tempfile::tempdir().expect("a profile dir");
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1100,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--screenshot={}", png.display()))
    .arg(format!("file://{}", html.display()));
    let out = run_bounded(cmd, Duration::from_secs(90));
    let bytes = fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); chromium said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    decode_png(&bytes)
}

/// A minimal PNG reader for Chromium's screenshots: 8-bit RGB or RGBA, not interlaced.
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut pos = 8;
    let (mut w, mut h, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("colour type {other}"),
                };
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("inflate");
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(w * h);
    for row in 0..h {
        let start = row * (stride + 1);
        let filter = raw[start];
        let mut cur = raw[start + 1..start + 1 + stride].to_vec();
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 } as i16;
            let b = prev[i] as i16;
            let c = if i >= channels { prev[i - channels] } else { 0 } as i16;
            let add = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            };
            cur[i] = cur[i].wrapping_add(add as u8);
        }
        for px in cur.chunks(channels) {
            pixels.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    (w, h, pixels)
}

/// What in `html` could make a browser fetch something: a fetching element, an attribute
/// that points somewhere (inside a tag: text is escaped), a CSS `url(...)` or `@import`.
fn references(html: &str) -> Vec<String> {
    let lower = html.to_lowercase();
    let mut found = Vec::new();
    for needle in [
        "<link", "<script", "<img", "<iframe", "<object", "<embed", "<base", "<image", "<use",
        "@import",
    ] {
        if lower.contains(needle) {
            found.push(needle.to_owned());
        }
    }
    for tag in lower.split('<').skip(1).filter_map(|t| t.split('>').next()) {
        for attr in ["src=", "href=", "srcset=", "http-equiv=\"refresh"] {
            if tag.contains(attr) {
                found.push(format!("<{tag}>"));
            }
        }
    }
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("url(") {
        let after = &rest[i + 4..];
        if !after.starts_with('#') {
            found.push(after.chars().take(40).collect());
        }
        rest = after;
    }
    found
}

// --- the runs --------------------------------------------------------------------------------

#[test]
fn reports_of_real_runs_compare_with_the_rehearsal_and_the_run_before() {
    let sshd = Sshd::start();
    let (api, hook) = servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = write_runbook(dir.path(), &sshd, &api, &hook);
    let flag = |name: &str, on: bool| {
        let f = dir.path().join(name);
        if on {
            fs::write(&f, "").unwrap();
        } else {
            let _ = fs::remove_file(&f);
        }
    };

    let rehearsal = new_journal(&state, || run(&state, &["rehearse", p(&rb)], 0));
    let clean1 = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 0));
    let clean2 = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 0));
    flag("fail", true);
    let failed = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 1));
    flag("fail", false);
    flag("ext4", true);
    let aborted = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 3));
    flag("ext4", false);

    // Ctrl-C in the POST wait, then --resume.
    flag("hang", true);
    let interrupted = new_journal(&state, || {
        let before = journals_in(&state);
        let mut bg = Background::start(&state, &["run", "--yes", p(&rb)], &[]);
        assert!(
            step_started(&state, &before, "wait for POST"),
            "the POST wait never started"
        );
        thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(bg.pid(), libc::SIGINT) }, 0);
        assert_eq!(
            bg.wait(Duration::from_secs(20)).and_then(|s| s.code()),
            Some(130),
            "{}",
            bg.output()
        );
    });
    flag("hang", false);
    let resumed = new_journal(&state, || {
        run(&state, &["run", "--yes", "--resume", p(&rb)], 0)
    });

    // The runbook changes (a comment): the history says so.
    let text = fs::read_to_string(&rb).unwrap();
    fs::write(&rb, format!("# edited after the incident\n{text}")).unwrap();
    let edited = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 0));

    // --- the reports --------------------------------------------------------------------------
    let r = report_of(&state, &clean2);
    assert!(r.incident.problems.is_empty(), "{:?}", r.incident.problems);
    let labels: Vec<&str> = r.baselines.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels[0].starts_with("the rehearsal of 20"), "{labels:?}");
    assert!(labels[1].starts_with("the run of 20"), "{labels:?}");
    let md = incident::markdown(&r);
    // the kernel check ran in the rehearsal and in the run before: both comparisons
    let kernel = md
        .lines()
        .find(|l| l.contains("| kernel log |"))
        .expect("the kernel step's row");
    let cells: Vec<&str> = kernel.split('|').map(str::trim).collect();
    let compared = &cells[cells.len() - 3..cells.len() - 1];
    assert!(
        compared
            .iter()
            .all(|c| *c == "same" || c.ends_with(" longer") || c.ends_with(" shorter")),
        "{kernel}"
    );
    assert!(
        md.contains("| vs rehearsal of 20") && md.contains("| vs run of 20"),
        "{md}"
    );
    // the POST wait did not run in the rehearsal (it changes state): compared with the run only
    let post = md
        .lines()
        .find(|l| l.contains("| wait for POST |"))
        .unwrap();
    let cells: Vec<&str> = post.split('|').map(str::trim).collect();
    assert_eq!(cells[cells.len() - 3], "", "{post}");
    assert_ne!(cells[cells.len() - 2], "", "{post}");
    // the differences of a second or more, as sentences
    for line in md
        .split("## Compared with before\n\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| l.starts_with("- "))
    {
        assert!(
            line.contains(" longer than the ") || line.contains(" shorter than the "),
            "{line}"
        );
    }
    // the first phase really overran its 2 s window
    let phase1 = md
        .lines()
        .find(|l| l.contains("| Power on and POST |"))
        .unwrap();
    assert!(phase1.contains("**ok, OVERRAN**"), "{phase1}");
    // where the time went adds up to the whole run
    let split = r.time_split();
    assert!(
        (split.total() - r.incident.wall()).abs() < 0.01,
        "{split:?}"
    );
    assert!(
        split.commands >= 3.0,
        "the 3 s POST wait is a command: {split:?}"
    );
    assert!(
        split.waiting > 0.0,
        "wait_ssh is waiting on the box: {split:?}"
    );
    assert_md("clean_run", &md);

    let f = report_of(&state, &failed);
    let md = incident::markdown(&f);
    assert!(md.contains("- stopped at: step 4 (kernel log)"), "{md}");
    assert!(md.contains("| 4 | kernel log |"), "{md}");
    assert!(md.contains("| FAILED |"), "{md}");
    assert!(md.contains("- result: FAILED: "), "{md}");
    assert!(md.contains("- steps: 4 of 6 ran; 2 not reached"), "{md}");
    assert!(md.contains("| 3 | (not reached) |"), "{md}");
    assert_md("failure", &md);

    let a = report_of(&state, &aborted);
    let md = incident::markdown(&a);
    assert!(md.contains("- result: ABORTED: "), "{md}");
    assert!(md.contains("**abort procedure (step 4)"), "{md}");
    assert_md("abort", &md);

    let i = report_of(&state, &interrupted);
    let md = incident::markdown(&i);
    assert!(md.contains("- stopped at: step 3 (wait for POST)"), "{md}");
    assert!(md.contains("- resume with: recover run"), "{md}");
    assert_md("interrupted", &md);

    // The resumed run's report is the whole incident: both journals, steps 1-2 from the first.
    let res = report_of(&state, &resumed);
    assert_eq!(res.incident.segments.len(), 2);
    assert_eq!(
        res.incident.first().run_id,
        i.incident.last().run_id,
        "the resumed run chains to the interrupted one"
    );
    let steps = res.incident.steps();
    assert_eq!(steps.len(), 6);
    assert_eq!(
        steps[1].outcome,
        Some(recover::engine::StepOutcome::Passed),
        "wait_ssh comes from the interrupted run, not the resumed run's skip"
    );
    let md = incident::markdown(&res);
    assert!(md.contains("**resumed (run "), "{md}");
    assert_md("resumed", &md);

    // The history: every run and the rehearsal, oldest first, the edit marked.
    let (all, problems) = incident::journals(&state.join("recover/runs"), "incident");
    assert!(problems.is_empty(), "{problems:?}");
    let rows = incident::history(&all);
    let kinds: Vec<(&str, &str)> = rows.iter().map(|h| (h.kind.as_str(), h.result)).collect();
    assert_eq!(
        kinds,
        [
            ("rehearsal", "success"),
            ("run", "success"),
            ("run", "success"),
            ("run", "failed"),
            ("run", "aborted"),
            ("run", "interrupted"),
            ("resumed run", "success"),
            ("run", "success"),
        ]
    );
    let changed: Vec<Option<bool>> = rows.iter().map(|h| h.sha_changed).collect();
    assert_eq!(changed[0], None);
    assert!(
        changed[1..7].iter().all(|c| *c == Some(false)),
        "{changed:?}"
    );
    assert_eq!(changed[7], Some(true));
    assert_eq!(rows[7].path, edited);
    assert_eq!(rows[0].path, rehearsal);
    assert_eq!(rows[1].path, clean1);
    assert_md("history", &incident::history_markdown("incident", &rows));

    // --- the same through `recover report` ----------------------------------------------------
    let md = report_cmd(&state, &["report", p(&resumed)], 0);
    assert_eq!(
        md,
        incident::markdown(&res),
        "the command renders what the library does"
    );
    let last = report_of(&state, &edited);
    assert_eq!(
        report_cmd(&state, &["report", "--last", "incident"], 0),
        incident::markdown(&last),
        "--last NAME is the newest run"
    );
    let out = dir.path().join("out.html");
    assert_eq!(
        report_cmd(
            &state,
            &[
                "report",
                "--last",
                p(&rb),
                "--format",
                "html",
                "-o",
                p(&out)
            ],
            0
        ),
        ""
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), incident::html(&last));
    assert_eq!(
        report_cmd(&state, &["report", "--history", p(&rb)], 0),
        incident::history_markdown("incident", &rows)
    );
    let page = report_cmd(
        &state,
        &["report", "--history", "incident", "--format", "html"],
        0,
    );
    assert!(page.contains("<td>resumed run</td>"), "{page}");
    assert_eq!(references(&page), Vec::<String>::new());
    let err = report_cmd(&state, &["report", "--last", "nosuch"], 2);
    assert!(err.contains("no journal of `nosuch` under "), "{err}");
    let err = report_cmd(&state, &["report", p(&dir.path().join("nope.jsonl"))], 2);
    assert!(err.contains("cannot read the journal"), "{err}");
    let err = report_cmd(&state, &["report"], 2);
    assert!(
        err.contains("<JOURNAL|--last <RUNBOOK>|--history <RUNBOOK>>"),
        "{err}"
    );

    // --- the HTML in a real browser ----------------------------------------------------------
    let html = incident::html(&res);
    assert!(
        html.contains("&lt;img src=") && !html.contains("<img"),
        "a step name is text, never markup"
    );
    assert_eq!(
        references(&html),
        Vec::<String>::new(),
        "the page refers outside itself"
    );
    assert!(html.contains("default-src 'none'"));
    let page = dir.path().join("report.html");
    fs::write(&page, &html).unwrap();
    let Some(browser) = require_tool(&["chromium", "chromium-browser"]) else {
        return;
    };
    api.clear_requests();
    let (w, h, px) = screenshot(&browser, &page, dir.path());
    // To look at them: INCIDENT_KEEP=DIR keeps the page and its screenshot there.
    if let Some(keep) = std::env::var_os("INCIDENT_KEEP") {
        let keep = PathBuf::from(keep);
        fs::create_dir_all(&keep).unwrap();
        fs::copy(&page, keep.join("report.html")).unwrap();
        fs::copy(dir.path().join("shot.png"), keep.join("report.png")).unwrap();
        fs::write(keep.join("report.md"), incident::markdown(&res)).unwrap();
    }
    assert!(w >= 1000 && h >= 1000, "{w}x{h}");
    let ink = px.iter().filter(|p| p.iter().any(|c| *c < 200)).count();
    assert!(
        ink * 100 > px.len(),
        "the screenshot is blank: {ink} of {} pixels have ink",
        px.len()
    );
    // the phase bars (#1f4e79) and the overrun hatch (#c62828) were drawn
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 12);
    assert!(
        px.iter().any(|p| near(p, [0x1f, 0x4e, 0x79])),
        "no phase bar on the page"
    );
    assert!(
        px.iter().any(|p| near(p, [0xc6, 0x28, 0x28])),
        "no overrun mark on the page"
    );
    // and the page fetched nothing, not even the URL written into a step's name
    thread::sleep(Duration::from_millis(200));
    assert!(
        api.requests().is_empty(),
        "the page made a request: {:?}",
        api.requests()
            .iter()
            .map(|r| r.path_only().to_owned())
            .collect::<Vec<_>>()
    );
}

/// The box reboots under the run: sshd goes away, and when it is back the target reports a
/// new boot id (a forced command in authorized_keys answers the boot id read with another
/// value; everything else runs as sent). The engine sees a real reconnect and a real boot id
/// change; the report draws the reboot.
#[test]
fn a_reboot_mid_run_is_drawn_where_the_box_rebooted() {
    let mut sshd = Sshd::start();
    let (api, hook) = servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = write_runbook(dir.path(), &sshd, &api, &hook);
    let keys = sshd.dir().join("authorized_keys");
    let key = fs::read_to_string(&keys).expect("authorized_keys");

    let before = journals_in(&state);
    let mut bg = Background::start(&state, &["run", "--yes", p(&rb)], &[]);
    assert!(
        step_started(&state, &before, "wait for POST"),
        "the POST wait never started"
    );
    sshd.stop();
    let forced = format!(
        "command=\"if [ \\\"$SSH_ORIGINAL_COMMAND\\\" = 'cat /proc/sys/kernel/random/boot_id' ]; then echo 00000000-1111-2222-3333-444444444444; else exec /bin/sh -c \\\"$SSH_ORIGINAL_COMMAND\\\"; fi\" {key}"
    );
    fs::write(&keys, forced).unwrap();
    sshd.start_again();
    assert_eq!(
        bg.wait(Duration::from_secs(60)).and_then(|s| s.code()),
        Some(0),
        "the run did not succeed: {}",
        bg.output()
    );
    let new: Vec<PathBuf> = journals_in(&state)
        .into_iter()
        .filter(|j| !before.contains(j))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let journal = new[0].clone();
    let r = report_of(&state, &journal);
    let reboots: Vec<_> = r
        .incident
        .marks()
        .into_iter()
        .filter(|m| matches!(m.what, incident::MarkKind::BootIdChanged { .. }))
        .collect();
    assert_eq!(reboots.len(), 1, "{:?}", r.incident.marks());
    let md = incident::markdown(&r);
    assert!(md.contains("**lab REBOOTED: boot id "), "{md}");
    assert!(md.contains("is now 00000000-111…**"), "{md}");
    let html = incident::html(&r);
    assert!(
        html.contains("lab rebooted</text>"),
        "the reboot line is drawn"
    );
    assert_md("reboot", &md);
}

/// A journal cut by a crash mid-line, with a garbled line and an event from a later version:
/// the report says what it could not use and shows the rest.
#[test]
fn a_cut_and_garbled_journal_gives_a_partial_report() {
    let sshd = Sshd::start();
    let (api, hook) = servers();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = write_runbook(dir.path(), &sshd, &api, &hook);
    let journal = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 0));
    let text = fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // keep the run up to the kernel check's start, garble one line, cut the next in half
    let cut = lines
        .iter()
        .position(|l| l.contains(r#""event":"step_started""#) && l.contains("kernel log"))
        .expect("the kernel check started");
    let mut damaged: Vec<String> = lines[..=cut].iter().map(|l| l.to_string()).collect();
    damaged.insert(2, "\u{0}\u{1}garbage{{{".into());
    damaged.insert(3, r#"{"event":"from_the_future","x":1}"#.into());
    let next = lines[cut + 1];
    damaged.push(next[..next.len() / 2].to_owned());
    let cut_path = dir.path().join("cut.jsonl");
    fs::write(&cut_path, damaged.join("\n")).unwrap();

    let r = report_of(&state, &cut_path);
    assert_eq!(r.incident.problems.len(), 3, "{:?}", r.incident.problems);
    assert!(r.incident.problems[0].starts_with("line 3: not JSON"));
    assert!(r.incident.problems[1].contains("`from_the_future` not understood"));
    assert!(r.incident.last().end.is_none());
    let md = incident::markdown(&r);
    assert!(md.contains("- result: unfinished"), "{md}");
    assert!(
        md.contains("| still running when the journal stops |"),
        "{md}"
    );
    assert!(md.contains("## Journal lines not used"), "{md}");
    let html = incident::html(&r);
    assert!(
        html.contains("url(#p-running)"),
        "the open step is drawn as running"
    );

    // Nothing usable at all: a clear error, no panic.
    let empty = dir.path().join("empty.jsonl");
    fs::write(&empty, "not json\n").unwrap();
    let err = incident::load(&empty, &[]).expect_err("no run in it");
    assert!(err.to_string().contains("holds no run"), "{err}");
    assert!(err.to_string().contains("line 1: not JSON"), "{err}");
    let err = report_cmd(&state, &["report", p(&empty)], 2);
    assert!(err.contains("holds no run"), "{err}");
    // the damaged one through the command: a report, and a warning per line not used
    let out = recover_in(&state)
        .args(["report", p(&cut_path)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("warning: ")
            .count(),
        3
    );
    let missing = incident::load(&dir.path().join("nope.jsonl"), &[]).expect_err("missing");
    assert!(
        missing.to_string().starts_with("cannot read the journal"),
        "{missing}"
    );
}

/// A gate's probes as the engine journals them (`gate_probe`, written by the journal sink the
/// engine uses, on a real file): ticks for the passed probes, crosses for the failed ones (with
/// their reason), and the probes column. A real `start:` gate needs systemd: the same report
/// from a real gate's journal is asserted on the lab (`tests/lab_heal.rs`, `remedy-kill`).
#[test]
fn gate_probes_in_the_journal_are_ticks_and_the_probes_column() {
    use recover::engine::{Event, Mode, RunOutcome, Sink, StepOutcome};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gated.jsonl");
    let mut j = recover::journal::Journal::open(&path).unwrap();
    let mut emit = |e: Event| j.emit(&e);
    emit(Event::RunStarted {
        run_id: "a1b2c3d4".into(),
        mode: Mode::Run,
        runbook: "gated".into(),
        path: "gated.yaml".into(),
        sha256: "ab".repeat(32),
        budget: 600.0,
        steps: 1,
        phases: 1,
        resumed_from: None,
        first_step: 1,
        origin_step: None,
        targets: Vec::new(),
        files: Vec::new(),
        unattended: false,
        started_by: None,
    });
    emit(Event::PhaseStarted {
        phase: 1,
        name: "Start".into(),
        window_start: 0.0,
        window_end: 600.0,
        at: 0.0,
    });
    emit(Event::StepStarted {
        step: 1,
        phase: 1,
        name: "start vllm-qwen36.service".into(),
        kind: recover::runbook::model::Kind::Start,
        target: "spark".into(),
        mutates: true,
        command: None,
        timeout: 540.0,
        at: 0.1,
    });
    for (at, ok) in [(10.0, false), (20.0, false), (30.0, false), (95.0, true)] {
        emit(Event::GateProbe {
            step: 1,
            at,
            ok,
            detail: (!ok).then(|| "HTTP 503 Service Unavailable".to_owned()),
        });
    }
    emit(Event::StepFinished {
        step: 1,
        phase: 1,
        name: "start vllm-qwen36.service".into(),
        outcome: StepOutcome::Passed,
        exit: None,
        duration: 95.0,
        at: 95.1,
        reason: Some("vllm-qwen36.service active and healthy after 1m35s (4 probes)".into()),
        stdout: None,
        stderr: None,
        waited: None,
    });
    emit(Event::PhaseFinished {
        phase: 1,
        name: "Start".into(),
        started: 0.0,
        at: 95.2,
        window_start: 0.0,
        window_end: 600.0,
        result: StepOutcome::Passed,
    });
    emit(Event::RunFinished {
        outcome: RunOutcome::Success,
        exit_code: 0,
        at: 95.3,
        budget: 600.0,
        failed_step: None,
        message: "Recovered.".into(),
        resume: None,
    });
    drop(j);
    let text = fs::read_to_string(&path).unwrap();
    let probe_lines: Vec<&str> = text.lines().filter(|l| l.contains("gate_probe")).collect();
    assert_eq!(probe_lines.len(), 4, "{text}");
    // compact: no line of a probe is longer than a step's start
    assert!(probe_lines.iter().all(|l| l.len() < 160), "{probe_lines:?}");

    let r = incident::report(&path, dir.path(), None, fixed_now()).unwrap();
    let step = &r.incident.last().steps[0];
    assert_eq!(step.probes.len(), 4);
    assert_eq!(step.probes.iter().filter(|p| p.passed).count(), 1);
    assert!((step.probes[3].at - 95.0).abs() < 1e-9, "{:?}", step.probes);
    let md = incident::markdown(&r);
    assert!(md.contains("| 4 (1 passed, 3 failed) |"), "{md}");
    let html = incident::html(&r);
    assert_eq!(
        html.matches("probe FAILED: HTTP 503 Service Unavailable</title>")
            .count(),
        3,
        "{html}"
    );
    assert_eq!(html.matches(" probe passed</title>").count(), 1, "{html}");
}

/// A journal of a run or rehearsal of `det` with fixed times: one phase and two steps whose
/// durations are given, on the wall clock `date`.
fn fixed_journal(mode: &str, run_id: &str, date: &str, steps: [f64; 2]) -> String {
    let ts = |at: f64| {
        (DateTime::parse_from_rfc3339(date).unwrap()
            + chrono::Duration::milliseconds((at * 1000.0) as i64))
        .with_timezone(&Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut at = 0.0;
    let mut lines = vec![
        format!(
            r#"{{"event":"run_started","run_id":"{run_id}","mode":"{mode}","runbook":"det","path":"det.yaml","sha256":"{}","budget":600.0,"steps":2,"phases":1,"resumed_from":null,"first_step":1,"targets":[],"ts":"{}"}}"#,
            "ab".repeat(32),
            ts(0.0)
        ),
        format!(
            r#"{{"event":"phase_started","phase":1,"name":"Start services","window_start":0.0,"window_end":600.0,"at":0.0,"ts":"{}"}}"#,
            ts(0.0)
        ),
    ];
    for (i, (name, took)) in ["kernel log", "chat"].iter().zip(steps).enumerate() {
        let n = i + 1;
        lines.push(format!(r#"{{"event":"step_started","step":{n},"phase":1,"name":"{name}","kind":"run","target":"box","mutates":false,"command":"true","timeout":600.0,"at":{at},"ts":"{}"}}"#, ts(at)));
        at += took;
        lines.push(format!(r#"{{"event":"step_finished","step":{n},"phase":1,"name":"{name}","outcome":"passed","exit":0,"duration":{took},"at":{at},"reason":null,"stdout":null,"stderr":null,"ts":"{}"}}"#, ts(at)));
    }
    lines.push(format!(r#"{{"event":"phase_finished","phase":1,"name":"Start services","started":0.0,"at":{at},"window_start":0.0,"window_end":600.0,"result":"passed","ts":"{}"}}"#, ts(at)));
    lines.push(format!(r#"{{"event":"run_finished","outcome":"success","exit_code":0,"at":{at},"budget":600.0,"failed_step":null,"message":"ok","resume":null,"ts":"{}"}}"#, ts(at)));
    lines.join("\n") + "\n"
}

/// "Compared with before", exactly: the sentences for differences of a second or more, biggest
/// first, against the last rehearsal and the previous run; none for a difference under a second.
/// (The snapshots of real runs filter this section out: their times vary.)
#[test]
fn compared_with_before_says_the_differences_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    fs::create_dir_all(&runs).unwrap();
    let write = |name: &str, text: String| {
        let p = runs.join(name);
        fs::write(&p, text).unwrap();
        p
    };
    write(
        "det-rehearsal-20260902T100000.000Z-aaaaaaaa.jsonl",
        fixed_journal(
            "rehearse",
            "aaaaaaaa",
            "2026-09-02T10:00:00Z",
            [188.0, 40.0],
        ),
    );
    write(
        "det-20261001T100000.000Z-bbbbbbbb.jsonl",
        fixed_journal("run", "bbbbbbbb", "2026-10-01T10:00:00Z", [250.4, 9.5]),
    );
    let now = write(
        "det-20261122T050100.000Z-cccccccc.jsonl",
        fixed_journal("run", "cccccccc", "2026-11-22T05:01:00Z", [250.0, 10.0]),
    );
    let r = incident::report(&now, &runs, None, fixed_now()).unwrap();
    let md = incident::markdown(&r);
    let section: Vec<&str> = md
        .split("## Compared with before\n\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no comparison:\n{md}"))
        .lines()
        .take_while(|l| l.starts_with("- "))
        .collect();
    assert_eq!(
        section,
        [
            "- kernel log 4m10s, 1m02s longer than the rehearsal of 2026-09-02",
            "- phase Start services 4m20s, 32s longer than the rehearsal of 2026-09-02",
            "- chat 10s, 30s shorter than the rehearsal of 2026-09-02",
        ],
        "{md}"
    );
    // the previous run differs by under a second everywhere: "same" in its column, no sentence
    assert!(md.contains("| 4m20s | ok | 32s longer | same |"), "{md}");
}

/// Where the time went, for a retried step of a real run: the failed attempts and the pauses
/// before the last attempt are waiting on the box (the journal's `waited`), the last attempt is
/// the command's.
#[test]
fn a_retried_step_is_waiting_until_its_last_attempt() {
    let Some(sshd) = Sshd::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = dir.path().join("retried.yaml");
    // fails twice (counting in a file), then passes: two pauses of 1 s before the last attempt
    fs::write(
        &rb,
        format!(
            "name: retried\nbudget: 1m\ntargets:\n{target}phases:\n  - name: All\n    window: 0s-1m\n    steps:\n      - name: endpoint up\n        local: 'n=$(cat {d}/n 2>/dev/null || echo 0); echo $((n+1)) > {d}/n; [ \"$n\" -ge 2 ]'\n        mutates: false\n        retry: {{ every: 1s, timeout: 20s }}\n",
            d = dir.path().display(),
            target = sshd.runbook_target_yaml("box"),
        ),
    )
    .unwrap();
    let journal = new_journal(&state, || run(&state, &["run", "--yes", p(&rb)], 0));
    assert_eq!(
        fs::read_to_string(dir.path().join("n")).unwrap().trim(),
        "3"
    );
    let text = fs::read_to_string(&journal).unwrap();
    let finished: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "step_finished")
        .expect("the step finished");
    let waited = finished["waited"]
        .as_f64()
        .expect("a retried step says how long it waited");
    let took = finished["duration"].as_f64().unwrap();
    assert!(
        waited >= 2.0 && waited < took,
        "waited {waited} of {took}\n{text}"
    );
    let r = report_of(&state, &journal);
    let split = r.time_split();
    assert!((split.waiting - waited).abs() < 1e-6, "{split:?}");
    assert!((split.commands - (took - waited)).abs() < 1e-6, "{split:?}");
}
