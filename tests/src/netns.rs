//! Network namespaces made by a test, named uniquely, deleted on every exit path (Drop).
//! Every address a test uses lives inside these namespaces.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace named `xvs-<tag>-<pid>-<n>`, with loopback up.
    pub fn new(tag: &str) -> Netns {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("xvs{}-{}-{}", tag, std::process::id() % 100000, n);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip netns exec NS cmd ...`
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.name.as_str(), cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` with the calling thread inside this namespace, then moves it back. Sockets
    /// created in `f` stay in this namespace, whichever thread uses them later.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        let home = File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        assert_eq!(
            unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        struct Back(File);
        impl Drop for Back {
            fn drop(&mut self) {
                unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
            }
        }
        let _back = Back(home);
        f()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair with one end in each namespace.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    run(
        "ip",
        &[
            "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
            &b.name,
        ],
    );
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

/// The standard test topology: a client, the balancer, and `n` backends, each on its own veth.
///
/// ```text
///  client c0 10.10.0.2/24 ── l0 10.10.0.1/24  [balancer]  lK 10.11.K.1/24 ── b0 10.11.K.2/24 backend K
/// ```
/// The VIPs (10.0.0.x) are not assigned anywhere: the client routes everything via the
/// balancer, whose XDP program answers for them.
pub struct Topology {
    pub client: Netns,
    pub lb: Netns,
    pub backends: Vec<Netns>,
}

impl Topology {
    /// Senders with tx checksum offload off: full checksums on the wire, as a NIC sends them.
    pub fn new(tag: &str, n: usize) -> Topology {
        Topology::with_offloads(tag, n, false)
    }

    /// `offloads`: the client's and backends' veths keep their default offloads (tx checksum
    /// offload, TSO/GSO), as pods have them: their packets carry CHECKSUM_PARTIAL.
    pub fn with_offloads(tag: &str, n: usize, offloads: bool) -> Topology {
        let client = Netns::new(&format!("{tag}c"));
        let lb = Netns::new(&format!("{tag}l"));
        let backends: Vec<Netns> = (1..=n).map(|i| Netns::new(&format!("{tag}b{i}"))).collect();
        veth(&client, "c0", &lb, "l0");
        client.ip(&["addr", "add", "10.10.0.2/24", "dev", "c0"]);
        client.ip(&["route", "add", "default", "via", "10.10.0.1"]);
        lb.ip(&["addr", "add", "10.10.0.1/24", "dev", "l0"]);
        lb.sysctl("net.ipv4.ip_forward", "1");
        for (i, b) in backends.iter().enumerate() {
            let k = i + 1;
            let l = format!("l{k}");
            veth(&lb, &l, b, "b0");
            lb.ip(&["addr", "add", &format!("10.11.{k}.1/24"), "dev", &l]);
            b.ip(&["addr", "add", &format!("10.11.{k}.2/24"), "dev", "b0"]);
            b.ip(&["route", "add", "default", "via", &format!("10.11.{k}.1")]);
            if !offloads {
                // Full checksums on the wire, as a real NIC sends them (see toolchain notes).
                b.exec("ethtool", &["-K", "b0", "tx", "off"]);
            }
        }
        if !offloads {
            client.exec("ethtool", &["-K", "c0", "tx", "off"]);
        }
        Topology {
            client,
            lb,
            backends,
        }
    }

    /// Names of the balancer's interfaces.
    pub fn lb_ifaces(&self) -> Vec<String> {
        (0..=self.backends.len()).map(|i| format!("l{i}")).collect()
    }

    /// Adds extra client source addresses 10.10.0.<from>..=<to>.
    pub fn add_client_addrs(&self, from: u8, to: u8) {
        for i in from..=to {
            self.client
                .ip(&["addr", "add", &format!("10.10.0.{i}/24"), "dev", "c0"]);
        }
    }
}
