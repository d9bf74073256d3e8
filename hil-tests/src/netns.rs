//! Network namespaces for system tests, removed by RAII guards.
//!
//! [`NetNs`] creates a named namespace (`ip netns add`) whose name carries
//! the test process's pid, so concurrent and crashed runs never collide;
//! dropping it kills whatever still runs inside (only processes this test
//! started can be there) and deletes it, also when the test panics.
//!
//! Code runs inside a namespace through [`NetNs::run`]: a scoped thread
//! that `setns(2)`s into it first. Threads and children inherit the
//! namespace of the thread that creates them, so a [`crate::Picketd`] or a
//! backend started from that closure lives in the namespace, and a socket
//! opened there stays there after the thread ends. That is how a test on
//! the host reads a daemon's metrics on the loopback of *its* namespace
//! without wrapper scripts or a changed harness.
//!
//! [`Lan`] wires one "hq" namespace and several site namespaces through a
//! bridge in hq: a private 10.77.0.0/24 with nothing else reachable.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `pk-{tag}-{pid}-{n}` with its loopback up.
    pub fn new(tag: &str) -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        crate::require_root();
        let name = format!(
            "pk-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...`; panics with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// Runs a command inside the namespace (`ip netns exec`) and returns
    /// its output, whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    /// Runs `f` on a thread inside the namespace (see the module doc).
    /// A panic in `f` is re-raised here with its message.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Only this test's children can be in its namespace.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a scoped thread that first joins the namespace `name`.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace fd we own; it only changes this thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The hq namespace and its sites on one bridge.
#[derive(Debug)]
pub struct Lan {
    /// The sites, in the order given to [`Lan::new`]. Dropped before hq.
    pub sites: Vec<NetNs>,
    /// Where the backend runs: owns the bridge, at [`Lan::HQ`].
    pub hq: NetNs,
}

impl Lan {
    /// hq's address on the bridge.
    pub const HQ: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    /// Site `i`'s address.
    pub fn site_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 11 + u8::try_from(i).expect("few sites"))
    }

    /// Creates hq (bridge `br0`, 10.77.0.1/24) and one namespace per tag,
    /// each with `eth0` (10.77.0.11.., /24) on the bridge. No default
    /// route and no link to the host: only this LAN is reachable.
    pub fn new(tags: &[&str]) -> Lan {
        let hq = NetNs::new("hq");
        hq.ip(&["link", "add", "br0", "type", "bridge"]);
        hq.ip(&["addr", "add", &format!("{}/24", Self::HQ), "dev", "br0"]);
        hq.ip(&["link", "set", "br0", "up"]);
        let mut sites = Vec::new();
        for (i, tag) in tags.iter().enumerate() {
            let site = NetNs::new(tag);
            let port = format!("s{i}");
            hq.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                site.name(),
            ]);
            hq.ip(&["link", "set", &port, "master", "br0", "up"]);
            site.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::site_ip(i)),
                "dev",
                "eth0",
            ]);
            site.ip(&["link", "set", "eth0", "up"]);
            sites.push(site);
        }
        Lan { sites, hq }
    }

    /// Cuts site `i` off: its `eth0` goes down (the daemon sees the
    /// route vanish, as when a gateway's uplink fails).
    pub fn cut(&self, i: usize) {
        self.sites[i].ip(&["link", "set", "eth0", "down"]);
    }

    /// Brings site `i`'s link back.
    pub fn restore(&self, i: usize) {
        self.sites[i].ip(&["link", "set", "eth0", "up"]);
    }

    /// Whether site `i` can open a TCP connection to hq's `port` (1 s).
    pub fn reaches_hq(&self, i: usize, port: u16) -> bool {
        self.sites[i].run(|| {
            std::net::TcpStream::connect_timeout(
                &(Self::HQ, port).into(),
                std::time::Duration::from_secs(1),
            )
            .is_ok()
        })
    }
}
