//! The power clients against real peers on 127.0.0.1: NUT's `upsd` with the `dummy-ups`
//! driver, UDP listeners for Wake-on-LAN, and `ipmi_sim` for IPMI.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::free_port;
use common::ipmi::{self, IpmiSim};
use common::nut::{MAXAGE_SECS, Upsd};
use recover::power::ipmi::{Bmc, IpmiError, Power};
use recover::power::nut::{NutError, Stable, Status, Tracker, Ups};
use recover::power::wol::{self, Mac};

const READ: Duration = Duration::from_secs(3);
const EVERY: Duration = Duration::from_millis(100);

fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn ups_of(upsd: &Upsd) -> Ups {
    Ups {
        name: upsd.name().to_string(),
        host: upsd.host().to_string(),
        port: upsd.port(),
    }
}

/// Feeds real readings to `tracker` every 100 ms for `span`, or until it passes; returns
/// whether it passed.
fn observe_for(tracker: &mut Tracker, ups: &Ups, start: Instant, span: Duration) -> bool {
    let until = Instant::now() + span;
    loop {
        if tracker.observe(start.elapsed(), block(ups.read(READ))) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(EVERY);
    }
}

#[test]
fn reads_status_and_charge() {
    let Some(upsd) = Upsd::start("myups", "OL CHRG", 64) else {
        return;
    };
    let reading = block(ups_of(&upsd).read(READ)).expect("a reading");
    assert_eq!(reading.status, Status::parse("OL CHRG"));
    assert!(reading.status.on_line());
    assert_eq!(reading.charge, Some(64.0));
}

#[test]
fn a_flap_to_battery_restarts_the_count() {
    let Some(mut upsd) = Upsd::start("myups", "OB DISCHRG", 40) else {
        return;
    };
    let ups = ups_of(&upsd);
    let stable_for = Duration::from_secs(2);
    let mut tracker = Tracker::new(Stable {
        stable_for,
        min_charge: Some(50.0),
    });
    let start = Instant::now();
    assert!(!observe_for(&mut tracker, &ups, start, Duration::ZERO));
    assert_eq!(
        tracker.progress(),
        "on battery (OB DISCHRG), charge 40% (needs 50%)"
    );

    upsd.set("OL CHRG", 64);
    assert!(
        !observe_for(&mut tracker, &ups, start, Duration::from_millis(1200)),
        "passed before stable_for"
    );
    assert!(
        tracker
            .progress()
            .starts_with("on line for 1s of 2s, charge 64%"),
        "{}",
        tracker.progress()
    );

    upsd.set("OB DISCHRG", 63);
    assert!(!observe_for(&mut tracker, &ups, start, Duration::ZERO));
    assert_eq!(
        tracker.progress(),
        "on battery (OB DISCHRG), charge 63%; 1 flap off line so far"
    );

    upsd.set("OL CHRG", 64);
    let back = Instant::now();
    assert!(
        observe_for(&mut tracker, &ups, start, Duration::from_secs(10)),
        "never passed: {}",
        tracker.progress()
    );
    let waited = back.elapsed();
    assert!(
        waited >= stable_for,
        "passed {waited:?} after mains returned: the 1.2 s before the flap still counted"
    );
    assert!(waited < stable_for + Duration::from_secs(3), "{waited:?}");
    assert_eq!(tracker.flaps(), 1);
    assert_eq!(
        tracker.progress(),
        "on line for 2s of 2s, charge 64%; 1 flap off line so far"
    );
}

#[test]
fn low_charge_holds_the_gate_until_it_rises() {
    let Some(mut upsd) = Upsd::start("myups", "OL CHRG", 30) else {
        return;
    };
    let ups = ups_of(&upsd);
    let mut tracker = Tracker::new(Stable {
        stable_for: Duration::from_millis(500),
        min_charge: Some(50.0),
    });
    let start = Instant::now();
    assert!(!observe_for(
        &mut tracker,
        &ups,
        start,
        Duration::from_secs(1)
    ));
    assert!(
        tracker.progress().ends_with("charge 30% (needs 50%)"),
        "{}",
        tracker.progress()
    );
    upsd.set("OL CHRG", 55);
    let risen = Instant::now();
    assert!(observe_for(
        &mut tracker,
        &ups,
        start,
        Duration::from_secs(5)
    ));
    assert!(
        risen.elapsed() < Duration::from_millis(500),
        "the count restarted when only the charge was short: {:?}",
        risen.elapsed()
    );
}

#[test]
fn low_battery_and_forced_shutdown_never_pass() {
    let Some(mut upsd) = Upsd::start("myups", "OL LB", 80) else {
        return;
    };
    let ups = ups_of(&upsd);
    let mut tracker = Tracker::new(Stable {
        stable_for: Duration::ZERO,
        min_charge: None,
    });
    let start = Instant::now();
    assert!(!observe_for(
        &mut tracker,
        &ups,
        start,
        Duration::from_millis(500)
    ));
    assert_eq!(tracker.progress(), "battery low (OL LB), charge 80%");
    upsd.set("OL FSD", 80);
    assert!(!observe_for(
        &mut tracker,
        &ups,
        start,
        Duration::from_millis(500)
    ));
    assert_eq!(tracker.progress(), "forced shutdown (OL FSD), charge 80%");
    upsd.set("OL CHRG", 80);
    assert!(observe_for(&mut tracker, &ups, start, Duration::ZERO));
}

#[test]
fn stale_data_and_a_missing_driver_are_named() {
    let Some(mut upsd) = Upsd::start("myups", "OL", 90) else {
        return;
    };
    let ups = ups_of(&upsd);
    let frozen = Instant::now();
    upsd.freeze_driver();
    assert!(frozen.elapsed() < Duration::from_secs(MAXAGE_SECS + 10));
    assert_eq!(block(ups.read(READ)), Err(NutError::DataStale));

    upsd.thaw_driver();
    assert!(block(ups.read(READ)).is_ok_and(|r| r.status.on_line()));

    upsd.stop_driver();
    let err = block(ups.read(READ)).expect_err("no driver");
    assert_eq!(err, NutError::DriverNotConnected);
    assert!(err.to_string().contains("DRIVER-NOT-CONNECTED"), "{err}");
}

#[test]
fn an_unknown_ups_is_named() {
    let Some(upsd) = Upsd::start("myups", "OL", 90) else {
        return;
    };
    let other = Ups {
        name: "otherups".into(),
        ..ups_of(&upsd)
    };
    assert_eq!(block(other.read(READ)), Err(NutError::UnknownUps));
}

#[test]
fn a_refused_connection_is_named() {
    let ups = Ups {
        name: "myups".into(),
        host: "127.0.0.1".into(),
        port: free_port(),
    };
    let err = block(ups.read(READ)).expect_err("nothing listens");
    assert_eq!(err, NutError::Refused);
    assert!(err.to_string().contains("is upsd running"), "{err}");
}

/// A TCP peer on 127.0.0.1 that accepts one connection and hands it to `serve`.
fn peer(serve: impl FnOnce(std::net::TcpStream) + Send + 'static) -> Ups {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a peer");
    let port = listener.local_addr().expect("peer address").port();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve(stream);
        }
    });
    Ups {
        name: "myups".into(),
        host: "127.0.0.1".into(),
        port,
    }
}

#[test]
fn a_silent_peer_costs_only_the_deadline() {
    let ups = peer(|s| {
        thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let started = Instant::now();
    let deadline = Duration::from_millis(500);
    assert_eq!(block(ups.read(deadline)), Err(NutError::Timeout(deadline)));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_endless_line_is_refused() {
    let ups = peer(|mut s| {
        let mut request = [0u8; 64];
        let _ = s.read(&mut request);
        let _ = s.write_all(&[b'x'; 8192]);
        thread::sleep(Duration::from_secs(1));
    });
    assert_eq!(block(ups.read(READ)), Err(NutError::LineTooLong));
}

#[test]
fn a_peer_that_is_not_upsd_is_named() {
    let ups = peer(|mut s| {
        let mut request = [0u8; 64];
        let _ = s.read(&mut request);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\xff\r\n");
        thread::sleep(Duration::from_secs(1));
    });
    match block(ups.read(READ)) {
        Err(NutError::Unexpected(line)) => assert!(line.starts_with("SSH-2.0"), "{line}"),
        other => panic!("{other:?}"),
    }
}

const MAC: &str = "02:1a:2B:3c:4d:5e";

/// 6 x 0xFF, then 02 1a 2b 3c 4d 5e sixteen times, written out here rather than computed by
/// the code under test.
fn expected_packet() -> Vec<u8> {
    let mut p = vec![0xFF; 6];
    for _ in 0..16 {
        p.extend_from_slice(&[0x02, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]);
    }
    p
}

fn receive(listener: &UdpSocket) -> Vec<u8> {
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut buf = [0u8; 512];
    let (n, _) = listener.recv_from(&mut buf).expect("a packet within 5 s");
    buf[..n].to_vec()
}

#[test]
fn the_magic_packet_arrives_byte_for_byte() {
    let listener = UdpSocket::bind("127.0.0.1:0").expect("bind a udp listener");
    let port = listener.local_addr().expect("listener address").port();
    let mac: Mac = MAC.parse().expect("a MAC");
    let to = block(wol::send(mac, "127.0.0.1", port)).expect("sent");
    assert_eq!(to.to_string(), format!("127.0.0.1:{port}"));
    let got = receive(&listener);
    assert_eq!(got.len(), 102);
    assert_eq!(got, expected_packet());
}

#[test]
fn a_broadcast_address_gets_so_broadcast() {
    // 127.255.255.255 is the loopback network's broadcast address: the kernel refuses a send
    // there without SO_BROADCAST, so this passes only if the retry with it works.
    let listener = UdpSocket::bind("127.255.255.255:0").expect("bind the loopback broadcast");
    let port = listener.local_addr().expect("listener address").port();
    let plain = UdpSocket::bind("127.0.0.1:0").expect("bind a sender");
    assert!(
        plain.send_to(b"x", ("127.255.255.255", port)).is_err(),
        "this kernel sends to a broadcast address without SO_BROADCAST: the test proves nothing"
    );
    let mac: Mac = MAC.parse().expect("a MAC");
    block(wol::send(mac, "127.255.255.255", port)).expect("sent");
    assert_eq!(receive(&listener), expected_packet());
}

fn bmc_of(sim: &IpmiSim) -> Bmc {
    Bmc {
        host: sim.host().to_string(),
        port: sim.port(),
        user: ipmi::USER.to_string(),
    }
}

#[test]
fn ipmi_power_on_then_status_on() {
    let Some(sim) = IpmiSim::start() else {
        return;
    };
    let bmc = bmc_of(&sim);
    let deadline = Duration::from_secs(30);
    assert_eq!(block(bmc.status(ipmi::PASSWORD, deadline)), Ok(Power::Off));
    assert!(!sim.power_is_on());
    block(bmc.power_on(ipmi::PASSWORD, deadline)).expect("powered on");
    assert!(
        sim.power_is_on(),
        "the simulator's chassis was not switched on"
    );
    assert_eq!(block(bmc.status(ipmi::PASSWORD, deadline)), Ok(Power::On));
    let out = sim.ipmitool(&["chassis", "power", "status"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Chassis Power is on"
    );
}

#[test]
fn ipmi_with_a_wrong_password_names_the_session() {
    let Some(sim) = IpmiSim::start() else {
        return;
    };
    let bmc = bmc_of(&sim);
    let started = Instant::now();
    match block(bmc.power_on("not-the-password", Duration::from_secs(60))) {
        Err(IpmiError::Session { host, user, .. }) => {
            assert_eq!((host.as_str(), user.as_str()), ("127.0.0.1", ipmi::USER));
        }
        other => panic!("{other:?}"),
    }
    eprintln!("wrong password refused in {:?}", started.elapsed());
    assert!(!sim.power_is_on());
}

/// A one-phase runbook whose steps are `steps` (YAML list items, indented six spaces).
fn runbook(dir: &std::path::Path, steps: &str) -> std::path::PathBuf {
    let path = dir.join("power.yaml");
    std::fs::write(
        &path,
        format!(
            "name: power\nbudget: 5m\ntargets:\n  box: {{ host: 127.0.0.1 }}\nphases:\n  - name: Power\n    window: 0m-5m\n    steps:\n{steps}"
        ),
    )
    .expect("write the runbook");
    path
}

/// Every journal written under the state directory `dir`, concatenated.
fn journals(dir: &std::path::Path) -> String {
    let runs = dir.join("recover").join("runs");
    let mut all = String::new();
    for entry in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
        all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    all
}

#[test]
fn the_ups_step_passes_only_after_a_flap_has_settled() {
    let Some(mut upsd) = Upsd::start("myups", "OB DISCHRG", 40) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = runbook(
        dir.path(),
        &format!(
            "      - ups: {{ name: myups, host: 127.0.0.1, port: {}, stable_for: 3s, min_charge: 50, every: 200ms, timeout: 1m }}\n",
            upsd.port()
        ),
    );
    let started = Instant::now();
    let mut run = common::Background::start(dir.path(), &["run", rb.to_str().expect("utf-8")], &[]);
    thread::sleep(Duration::from_secs(1));
    upsd.set("OL CHRG", 60);
    thread::sleep(Duration::from_millis(1500));
    upsd.set("OB DISCHRG", 58);
    thread::sleep(Duration::from_millis(500));
    upsd.set("OL CHRG", 60);
    let back = Instant::now();
    let status = run.wait(Duration::from_secs(30));
    let out = run.output();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
    assert!(
        back.elapsed() >= Duration::from_millis(2500),
        "passed {:?} after mains came back for good, before 3s of stable mains:\n{out}",
        back.elapsed()
    );
    assert!(out.contains("on battery (OB DISCHRG)"), "{out}");
    let journal = journals(dir.path());
    assert!(
        journal.contains("on line for 3s of 3s, charge 60%; 1 flap off line so far"),
        "{journal}"
    );
    eprintln!("ups step passed after {:?}", started.elapsed());
}

#[test]
fn the_ups_step_fails_at_its_timeout_and_says_why() {
    let Some(mut upsd) = Upsd::start("myups", "OL", 90) else {
        return;
    };
    upsd.freeze_driver();
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = runbook(
        dir.path(),
        &format!(
            "      - ups: {{ name: myups, host: 127.0.0.1, port: {}, stable_for: 1s, every: 200ms, timeout: 3s }}\n",
            upsd.port()
        ),
    );
    let ran = common::run_to_end(
        dir.path(),
        &["run", rb.to_str().expect("utf-8")],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, Some(1), "{}", ran.context());
    let all = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        all.contains(&format!(
            "myups@127.0.0.1:{} was not on line for 1s within 3s; last: no reading: upsd says the UPS data is stale (ERR DATA-STALE)",
            upsd.port()
        )),
        "{}",
        ran.context()
    );
    assert!(ran.took < Duration::from_secs(15), "{}", ran.context());
}

#[test]
fn the_power_on_step_sends_the_magic_packet() {
    let listener = UdpSocket::bind("127.0.0.1:0").expect("bind a udp listener");
    let port = listener.local_addr().expect("listener address").port();
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = runbook(
        dir.path(),
        &format!("      - power_on: {{ wol: \"{MAC}\", address: 127.0.0.1, port: {port} }}\n"),
    );
    let ran = common::run_to_end(
        dir.path(),
        &["run", rb.to_str().expect("utf-8")],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    assert_eq!(receive(&listener), expected_packet());
}

#[test]
fn the_dry_run_shows_the_lines_and_hides_the_password() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = runbook(
        dir.path(),
        "      - ups: { name: myups, host: nut.internal, stable_for: 1m, min_charge: 50 }\n      - power_on: { wol: \"02:1a:2b:3c:4d:5e\" }\n      - power_on: { ipmi: bmc.internal, user: admin, password: \"{{ env.IPMI_PASSWORD }}\" }\n",
    );
    let ran = common::run_to_end(
        dir.path(),
        &["run", "--dry-run", rb.to_str().expect("utf-8")],
        &[("IPMI_PASSWORD", "hunter2-bmc")],
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.context());
    for want in [
        "GET VAR myups ups.status, GET VAR myups battery.charge at nut.internal:3493",
        "OL and none of OB, LB, FSD for 1m without a break, battery.charge at least 50%; read every 5s, give up after 30m",
        "magic packet for 02:1a:2b:3c:4d:5e to 255.255.255.255:9 (UDP, 102 bytes)",
        "wakeonlan -i 255.255.255.255 -p 9 02:1a:2b:3c:4d:5e",
        "ipmitool -I lanplus -H bmc.internal -U admin -E chassis power on",
        "ipmitool -I lanplus -H bmc.internal -U admin -E chassis power status prints \"Chassis Power is on\"",
    ] {
        assert!(ran.stdout.contains(want), "{want}\n{}", ran.context());
    }
    assert!(!ran.stdout.contains("hunter2"), "{}", ran.context());
}

/// A runbook with one `wait_ssh` that, when it times out, asks for the power button through
/// the `operators` channel (the webhook of `api`), then waits again.
fn ask_runbook(dir: &std::path::Path, sshd: &common::Sshd, api: &common::HttpServer) -> String {
    let path = dir.join("ask.yaml");
    std::fs::write(
        &path,
        format!(
            "name: ask\nbudget: 5m\ntargets:\n{}notify:\n  operators: {{ webhook: \"{}\", format: json }}\nphases:\n  - name: Power\n    window: 0m-5m\n    steps:\n      - wait_ssh:\n          every: 1s\n          timeout: 3s\n          otherwise:\n            manual: Press the power button.\n            notify: operators\n            timeout: 20s\n",
            sshd.runbook_target_yaml("box"),
            api.url_for("/hook")
        ),
    )
    .expect("write the runbook");
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn a_wait_that_times_out_asks_for_the_button_then_waits_again() {
    let Some(mut sshd) = common::Sshd::start_or_skip() else {
        return;
    };
    let api = common::HttpServer::start();
    api.respond("POST", "/hook", 200, "ok");
    sshd.stop();
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = ask_runbook(dir.path(), &sshd, &api);
    let mut run = common::Background::start(dir.path(), &["run", "--yes", &rb], &[]);
    assert!(
        api.wait_for_requests("/hook", 1, Duration::from_secs(30)),
        "the ask was never posted:\n{}",
        run.output()
    );
    let post = &api.requests_to("/hook")[0];
    assert!(
        post.body.contains("Press the power button."),
        "{}",
        post.body
    );
    sshd.start_again();
    let status = run.wait(Duration::from_secs(40));
    let out = run.output();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
    let journal = journals(dir.path());
    assert!(
        journal.contains("no SSH within 3s, so a person was asked; then SSH answered after"),
        "{journal}"
    );
}

#[test]
fn a_second_timeout_after_the_ask_aborts_and_says_both() {
    let Some(mut sshd) = common::Sshd::start_or_skip() else {
        return;
    };
    let api = common::HttpServer::start();
    api.respond("POST", "/hook", 200, "ok");
    sshd.stop();
    let dir = tempfile::tempdir().expect("a tempdir");
    let rb = ask_runbook(dir.path(), &sshd, &api);
    let text = std::fs::read_to_string(&rb).expect("read the runbook");
    std::fs::write(&rb, text.replace("timeout: 20s", "timeout: 2s")).expect("rewrite it");
    let ran = common::run_to_end(
        dir.path(),
        &["run", "--yes", &rb],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(3), "{}", ran.context());
    assert!(
        format!("{}{}", ran.stdout, ran.stderr).contains("then no SSH 2s after asking a person"),
        "{}",
        ran.context()
    );
    assert!(
        !api.requests_to("/hook").is_empty(),
        "the ask was never posted"
    );
}
