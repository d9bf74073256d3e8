//! The gateway image, booted: Debian's kernel (with BTF) and an initramfs
//! laid out like the Yocto image (`hil-tests/image/build.sh`), in QEMU
//! (TCG: no KVM needed), with a persistent ext4 data disk at
//! /var/lib/picket. picketd loads its probes on that kernel, enrolls with
//! a `picket-backend` on the host, and detects an attack run inside the
//! guest; the alert reaches the backend's API.
//!
//! The guest's only network is QEMU's user networking with `restrict=on`:
//! it reaches nothing but 10.0.2.100, which `guestfwd` maps to the
//! backend's HTTP and MQTT ports on the host's loopback.
//!
//! The test drives the guest through its serial console (a Unix socket):
//! `/init` reads one shell command per line and answers with its output and
//! an `@@END@@ <status>` marker.
//!
//! `boot_enroll_detect_deliver` (one boot, CI) and the full scenario
//! `offline_reboot_then_every_alert_arrives` (two boots: link cut, attacks
//! offline, reboot with the link still down, link back, every alert
//! delivered once), which CI can leave out:
//!
//!     PICKET_IMAGE_FULL=1 cargo test -p picket-hil-tests --test image
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failure must stop the test with its cause"
)]

use picket_hil_tests::backend::{Backend, BackendOptions};
use picket_hil_tests::{picketd_bin, require_root, wait_for};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The address in the guest that `guestfwd` maps to the host's loopback.
const HOST_IN_GUEST: &str = "10.0.2.100";
/// How long a TCG boot up to a running picketd may take.
const BOOT: Duration = Duration::from_secs(300);

fn image_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/image"))
}

/// Builds the kernel + initramfs pair under `out`.
fn build_image(out: &Path) {
    let st = Command::new("sh")
        .arg(image_dir().join("build.sh"))
        .arg(out)
        .arg(picketd_bin())
        .status()
        .unwrap();
    assert!(st.success(), "build.sh failed");
}

/// A raw ext4 disk holding `files`.
fn data_disk(path: &Path, files: &[(&str, String)]) {
    let staging = path.with_extension("d");
    std::fs::create_dir_all(&staging).unwrap();
    for (name, text) in files {
        std::fs::write(staging.join(name), text).unwrap();
    }
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&staging)
        .arg(path)
        .arg("256M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file from the (unmounted) data disk.
fn disk_file(disk: &Path, name: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat /{name}"))
        .arg(disk)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running QEMU, killed on drop; its console is a Unix socket.
struct Qemu {
    child: Child,
    console: UnixStream,
    output: Arc<Mutex<String>>,
    log: PathBuf,
}

impl Qemu {
    fn boot(dir: &Path, image: &Path, disk: &Path, http: u16, mqtt: u16) -> Qemu {
        let sock = dir.join("console.sock");
        let _ = std::fs::remove_file(&sock);
        let fwd = |p: u16| format!("guestfwd=tcp:{HOST_IN_GUEST}:{p}-cmd:busybox nc 127.0.0.1 {p}");
        let mut child = Command::new("qemu-system-x86_64")
            // KVM hangs on some CI hosts; TCG always works.
            .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initramfs.cpio.gz"))
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-nic")
            .arg(format!(
                "user,model=virtio-net-pci,restrict=on,{},{}",
                fwd(http),
                fwd(mqtt)
            ))
            .arg("-chardev")
            .arg(format!(
                "socket,id=con,path={},server=on,wait=on",
                sock.display()
            ))
            .args(["-serial", "chardev:con"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.stderr")).unwrap())
            .spawn()
            .unwrap();
        // QEMU waits for us before starting the guest: nothing is missed.
        let console = wait_for("the console socket", Duration::from_secs(30), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "qemu exited ({st}): {}",
                    std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default()
                );
            }
            UnixStream::connect(&sock).ok()
        });
        let output = Arc::new(Mutex::new(String::new()));
        let log = dir.join("console.log");
        let mut reader = console.try_clone().unwrap();
        let (out, log_path) = (output.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .unwrap();
            let mut buf = [0_u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = f.write_all(&buf[..n]);
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
            }
        });
        Qemu {
            child,
            console,
            output,
            log,
        }
    }

    fn console_text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the console shows `text`.
    fn wait_text(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.console_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the console in {timeout:?}:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a shell command in the guest: (status, output).
    fn sh(&mut self, cmd: &str) -> (i32, String) {
        let start = self.output.lock().unwrap().len();
        self.console
            .write_all(format!("{cmd}\n").as_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = self.output.lock().unwrap()[start..].to_owned();
            if let Some(at) = text.find("@@END@@ ") {
                let rest = &text[at + 8..];
                if let Some(nl) = rest.find('\n') {
                    let status = rest[..nl].trim().parse().unwrap_or(-1);
                    return (status, text[..at].to_owned());
                }
            }
            assert!(
                Instant::now() < deadline,
                "guest command {cmd:?} did not finish:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a guest command that must succeed; its output.
    fn ok(&mut self, cmd: &str) -> String {
        let (st, out) = self.sh(cmd);
        assert_eq!(st, 0, "guest: {cmd}: {out}");
        out
    }

    /// Polls a guest command until `f` accepts its output.
    fn poll<T>(
        &mut self,
        what: &str,
        cmd: &str,
        timeout: Duration,
        f: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, out) = self.sh(cmd);
            if let Some(v) = f(&out) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "guest: timed out waiting for {what}; last output of {cmd:?}: {out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until picketd in the guest has reported each of its six
    /// modules (started or failed) in this boot's part of its log; returns whether the process probes
    /// loaded, and the report.
    fn wait_picketd(&mut self) -> (bool, String) {
        self.poll(
            "picketd's modules",
            "awk '/^PICKET-BOOT /{b=\"\"} {b=b $0 \"\\n\"} END{printf \"%s\", b}' \
             /var/lib/picket/picketd.log | grep -E 'started:|failed to start|disabled'",
            BOOT,
            |out| {
                let n = out
                    .lines()
                    .filter(|l| l.contains("started:") || l.contains("failed to start"))
                    .count();
                (n >= 6).then(|| {
                    let process = out
                        .lines()
                        .any(|l| l.contains("started:") && l.contains("process"));
                    (process, out.to_owned())
                })
            },
        )
    }

    /// Attack `n`: a process whose command line uses /dev/tcp ("Shell
    /// Redirected to a Network Socket", needs the process probes) and a
    /// failed SSH login in the auth log (the image's site rule "HIL failed
    /// SSH login", user space only).
    /// The process is a copy of busybox under another name, so the shell
    /// really executes it instead of running an applet in-process.
    fn attack(&mut self, n: u32) {
        self.ok("[ -x /tmp/revshell ] || cp /bin/busybox /tmp/revshell");
        let _ = self.sh(&format!(
            "/tmp/revshell hil-attack-{n} /dev/tcp/127.0.0.1/9 >/dev/null 2>&1"
        ));
        self.ok(&format!(
            "echo 'Nov 28 21:00:01 gw sshd[813]: Failed password for invalid user hil{n} \
             from 198.51.100.2 port 4242 ssh2' >> /var/log/auth.log"
        ));
    }

    /// Waits until the guest's alerts file has at least `n` alerts.
    fn wait_guest_alerts(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.ok("cat /var/lib/picket/alerts.jsonl 2>/dev/null; true");
            if out.lines().filter(|l| l.contains("\"alert_id\"")).count() >= n {
                return;
            }
            if Instant::now() > deadline {
                let log = self.sh("grep -v \"^[0-9]*: \" /var/lib/picket/picketd.log | grep -iE \"rule|auth|left out|warn|error\" | tail -n 30; tail -n 3 /var/log/auth.log; ls -la /var/lib/picket").1;
                let console = self.console_text();
                let tail = &console[console.len().saturating_sub(3000)..];
                panic!("guest: not {n} alerts: {out}\npicketd.log:\n{log}\nconsole:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn spool_depth(&mut self) -> f64 {
        let out =
            self.ok("wget -qO- http://127.0.0.1:9750/metrics | grep '^picket_spool_depth' ; true");
        out.lines()
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum()
    }

    /// picketd stops cleanly, the disk is unmounted, the guest powers off.
    fn shut_down(&mut self) {
        let _ = self.console.write_all(b"stop_gateway\n");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "qemu: {st}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not power off:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            self.console_text().contains("picketd exited: 0"),
            "{}",
            self.console_text()
        );
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        eprintln!("console log: {}", self.log.display());
    }
}

/// Everything one image test needs on the host.
struct Rig {
    dir: tempfile::TempDir,
    image: PathBuf,
    disk: PathBuf,
    backend: Backend,
    bearer: String,
}

impl Rig {
    fn new() -> Rig {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("picket-image-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let t = Instant::now();
        let image = dir.path().join("image");
        build_image(&image);
        eprintln!("image built in {:.1} s", t.elapsed().as_secs_f64());
        std::fs::create_dir_all(dir.path().join("backend")).unwrap();
        let backend = Backend::start_with(
            &dir.path().join("backend"),
            BackendOptions {
                hostnames: vec![HOST_IN_GUEST.into(), "127.0.0.1".into()],
                ..BackendOptions::default()
            },
        );
        let bearer = backend.admin_session("admin", "correct horse battery");
        let token = backend.enrollment_token("qemu");
        let disk = dir.path().join("data.img");
        data_disk(
            &disk,
            &[(
                "hil.env",
                format!(
                    "PICKET_URL=http://{HOST_IN_GUEST}:{}\nPICKET_BROKER={HOST_IN_GUEST}:{}\n\
                     PICKET_TOKEN={token}\nPICKET_HOSTNAME=gw-qemu\n",
                    backend.http, backend.mqtt
                ),
            )],
        );
        Rig {
            dir,
            image,
            disk,
            backend,
            bearer,
        }
    }

    fn boot(&self, n: u32) -> Qemu {
        let d = self.dir.path().join(format!("boot{n}"));
        std::fs::create_dir_all(&d).unwrap();
        let q = Qemu::boot(
            &d,
            &self.image,
            &self.disk,
            self.backend.http,
            self.backend.mqtt,
        );
        let mut q = q;
        q.wait_text(&format!("PICKET-BOOTED {n}"), BOOT);
        if q.console_text().contains("PICKET-INIT-ERROR") {
            let logs = q
                .sh("tail -n 20 /var/lib/picket/enroll.log /var/lib/picket/picketd.log")
                .1;
            panic!("{}\n{logs}", q.console_text());
        }
        q
    }

    fn device_id(&self) -> String {
        wait_for(
            "the gateway in the inventory",
            Duration::from_secs(30),
            || {
                self.backend
                    .devices(&self.bearer)
                    .iter()
                    .find(|d| d["hostname"] == "gw-qemu")
                    .and_then(|d| d["id"].as_str().map(str::to_owned))
            },
        )
    }

    fn remote_ids(&self, device: &str) -> Vec<String> {
        self.backend
            .all_alerts(&self.bearer, &format!("device={device}"), 500)
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn wait_remote(&self, device: &str, n: usize, timeout: Duration) -> Duration {
        let t = Instant::now();
        wait_for(&format!("{n} alerts in the backend"), timeout, || {
            (self.remote_ids(device).len() >= n).then_some(())
        });
        t.elapsed()
    }
}

/// Every alert is one of the two the attacks raise.
fn assert_rules(rig: &Rig, device: &str) {
    for a in rig
        .backend
        .all_alerts(&rig.bearer, &format!("device={device}"), 500)
    {
        let title = a["rule_title"].as_str().unwrap_or("");
        assert!(
            title == "Shell Redirected to a Network Socket via /dev/tcp"
                || title == "HIL failed SSH login",
            "{a}"
        );
    }
}

/// The alert ids in the alerts file on the (unmounted) data disk.
fn disk_alert_ids(disk: &Path) -> Vec<String> {
    disk_file(disk, "alerts.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|a| a["alert_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Raised by picketd's verifier log when the process probes did not load:
/// checked last, so the rest of the path is proven either way.
fn assert_probes(process: bool, report: &str) {
    assert!(
        process,
        "the process probes must load on the image's kernel:\n{report}"
    );
}

#[test]
fn boot_enroll_detect_deliver() {
    let t = Instant::now();
    let rig = Rig::new();
    let mut q = rig.boot(1);
    let booted = t.elapsed();
    let (process, report) = q.wait_picketd();
    let ready = t.elapsed();
    let per_attack = 1 + usize::from(process);
    let device = rig.device_id();
    let attacked = Instant::now();
    q.attack(1);
    q.wait_guest_alerts(per_attack);
    rig.wait_remote(&device, per_attack, Duration::from_secs(60));
    let latency = attacked.elapsed();
    assert_rules(&rig, &device);
    q.shut_down();
    drop(q);
    let local = disk_alert_ids(&rig.disk);
    let remote = rig.remote_ids(&device);
    assert_eq!(remote.len(), per_attack, "{remote:?}");
    assert_eq!(
        remote.iter().cloned().collect::<BTreeSet<_>>(),
        local.iter().cloned().collect::<BTreeSet<_>>()
    );
    eprintln!(
        "image: booted {:.1} s, picketd ready {:.1} s, {per_attack} alert(s) in the backend {:.1} s after the attack, total {:.1} s",
        booted.as_secs_f64(),
        ready.as_secs_f64(),
        latency.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_probes(process, &report);
}

#[test]
fn offline_reboot_then_every_alert_arrives() {
    if std::env::var_os("PICKET_IMAGE_FULL").is_none() {
        eprintln!("skipped: set PICKET_IMAGE_FULL=1 for the two-boot scenario");
        return;
    }
    let t = Instant::now();
    let rig = Rig::new();

    // boot 1: online, then the link is cut and attacks go on
    let mut q = rig.boot(1);
    let (process, report) = q.wait_picketd();
    let per = 1 + usize::from(process);
    let device = rig.device_id();
    q.attack(1);
    q.wait_guest_alerts(per);
    rig.wait_remote(&device, per, Duration::from_secs(60));
    q.ok("ip link set eth0 down");
    let cut = Instant::now();
    for n in 2..=3 {
        q.attack(n);
        q.wait_guest_alerts(per * n as usize);
    }
    let depth1 = q.spool_depth();
    assert!(depth1 >= (2 * per) as f64, "spool depth {depth1}");
    // the reboot keeps the uplink broken
    q.ok("touch /var/lib/picket/link-down");
    q.shut_down();
    drop(q);
    assert_eq!(
        rig.remote_ids(&device).len(),
        per,
        "nothing arrives while cut"
    );

    // boot 2: still offline, one more attack; then the link returns
    let mut q = rig.boot(2);
    assert_eq!(q.wait_picketd().0, process);
    q.attack(4);
    q.wait_guest_alerts(per * 4);
    let depth2 = q.spool_depth();
    assert!(
        depth2 >= (3 * per) as f64,
        "the spool survived the reboot: depth {depth2}"
    );
    assert_eq!(rig.remote_ids(&device).len(), per);
    let offline = cut.elapsed();
    q.ok("rm /var/lib/picket/link-down && ip link set eth0 up");
    q.attack(5);
    q.wait_guest_alerts(per * 5);
    let catch_up = rig.wait_remote(&device, per * 5, Duration::from_secs(300));
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.spool_depth() > 0.0 {
        assert!(Instant::now() < deadline, "the guest's spool did not drain");
        std::thread::sleep(Duration::from_millis(500));
    }
    q.shut_down();
    drop(q);

    let local = disk_alert_ids(&rig.disk);
    assert_eq!(local.len(), per * 5, "{local:?}");
    let remote = rig.remote_ids(&device);
    assert_eq!(remote.len(), per * 5, "each alert once: {remote:?}");
    assert_eq!(
        remote.iter().cloned().collect::<BTreeSet<_>>(),
        local.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_rules(&rig, &device);
    eprintln!(
        "image full: offline {:.1} s across a reboot (spool depth {depth1} before it, {depth2} after), \
         all {} alerts in the backend {:.1} s after the link returned, total {:.1} s",
        offline.as_secs_f64(),
        per * 5,
        catch_up.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_probes(process, &report);
}
