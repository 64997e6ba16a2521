//! A real IPMI BMC simulator, `ipmi_sim` (Debian's openipmi), on 127.0.0.1 for integration
//! tests: one LAN channel (RMCP+, so `ipmitool -I lanplus` works), one admin user, and a
//! chassis whose power is a file in the directory. ipmi_sim runs the directory's
//! `chassis` script (its `chassis_control` hook) for `chassis power on|off|status`, so a
//! power-on really changes state the test can read ([`IpmiSim::power_is_on`]).

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{require_tool, run_bounded};

const IPMI_SIM: &str = "/usr/bin/ipmi_sim";
const IPMITOOL: &str = "/usr/bin/ipmitool";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 5;

/// The BMC's admin user and password.
pub const USER: &str = "ops";
pub const PASSWORD: &str = "s3cret-ipmi";

/// A running ipmi_sim. Dropping it stops the simulator and removes the directory.
pub struct IpmiSim {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl IpmiSim {
    /// Starts the simulator with the chassis powered off, and waits until
    /// `ipmitool ... chassis power status` answers. `None`, with a visible skip line (a
    /// failure under CI), when openipmi or ipmitool is not installed.
    pub fn start() -> Option<IpmiSim> {
        for tool in [IPMI_SIM, IPMITOOL] {
            require_tool(&[tool])?;
        }
        let dir = tempfile::Builder::new()
            .prefix("recover-ipmi-")
            .tempdir()
            .expect("create the ipmi_sim tempdir");
        let mut sim = IpmiSim {
            dir,
            port: 0,
            child: None,
        };
        fs::create_dir(sim.path("state")).expect("create the ipmi_sim state dir");
        fs::write(sim.path("power"), "0\n").expect("write the power file");
        let script = sim.path("chassis");
        fs::write(&script, CHASSIS_SCRIPT).expect("write the chassis script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod chassis");
        fs::write(
            sim.path("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 dynsens\nmc_enable 0x20\n",
        )
        .expect("write bmc.emu");
        for _ in 0..PORT_ATTEMPTS {
            sim.port = free_udp_port();
            fs::write(sim.path("lan.conf"), sim.lan_conf()).expect("write lan.conf");
            let log = fs::File::create(sim.path("ipmi_sim.log")).expect("create the log");
            let child = Command::new(IPMI_SIM)
                .arg("-c")
                .arg(sim.path("lan.conf"))
                .arg("-f")
                .arg(sim.path("bmc.emu"))
                .arg("-s")
                .arg(sim.path("state"))
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn ipmi_sim");
            sim.child = Some(child);
            if sim.wait_ready() {
                return Some(sim);
            }
            sim.stop();
        }
        panic!(
            "ipmi_sim never answered chassis power status\n--- ipmi_sim.log\n{}",
            fs::read_to_string(sim.path("ipmi_sim.log")).unwrap_or_default()
        );
    }

    /// 127.0.0.1.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the chassis power file says (written by ipmi_sim through the chassis script).
    pub fn power_is_on(&self) -> bool {
        fs::read_to_string(self.path("power")).is_ok_and(|s| s.trim() == "1")
    }

    /// `ipmitool` against the simulator, with the right password, bounded.
    pub fn ipmitool(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(IPMITOOL);
        cmd.args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", USER, "-E", "-R", "1", "-N", "1"])
            .args(args)
            .env("IPMI_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        run_bounded(cmd, Duration::from_secs(10))
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && !matches!(c.try_wait(), Ok(None))
            {
                return false;
            }
            let out = self.ipmitool(&["chassis", "power", "status"]);
            if String::from_utf8_lossy(&out.stdout).contains("Chassis Power is") {
                return true;
            }
            thread::sleep(Duration::from_millis(200));
        }
        false
    }

    fn lan_conf(&self) -> String {
        format!(
            "name \"recover-test\"\n\
             set_working_mc 0x20\n\
             startlan 1\n\
             addr 127.0.0.1 {port}\n\
             priv_limit admin\n\
             allowed_auths_callback none md2 md5 straight\n\
             allowed_auths_user none md2 md5 straight\n\
             allowed_auths_operator none md2 md5 straight\n\
             allowed_auths_admin none md2 md5 straight\n\
             guid a123456789abcdefa123456789abcdef\n\
             endlan\n\
             chassis_control \"{script} {dir}\"\n\
             user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 none md2 md5 straight\n",
            port = self.port,
            script = self.path("chassis").display(),
            dir = self.dir.path().display(),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ipmi_sim's `chassis_control` hook: `chassis DIR get power...` prints `power:0|1`,
/// `chassis DIR set power 0|1 ...` writes it.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
dir=$1; op=$2; shift 2
case $op in
  get)
    for p in "$@"; do
      case $p in
        power) echo "power:$(cat "$dir/power")" ;;
        boot) echo "boot:default" ;;
        *) exit 1 ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      case $1 in
        power) echo "$2" > "$dir/power" ;;
        reset|boot|identify) ;;
        *) exit 1 ;;
      esac
      shift 2
    done ;;
  *) exit 1 ;;
esac
"#;

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind udp 127.0.0.1:0")
        .port()
}
