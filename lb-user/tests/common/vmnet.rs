//! Network namespaces for the in-VM test binaries (`cargo xtask vm-test`, `cargo xtask
//! bench`): `ip -batch` runs, entering a namespace from one thread, checksum offload off, and
//! the balancer topology that vm_sched_equivalence and vm_bench share:
//!
//! ```text
//!  client c0 10.10.0.2, extra .a-.b ── l0 10.10.0.1  [balancer]  lK 10.11.K.1 ── b0 10.11.K.2  backend K
//!                                        vip0 (dummy): 10.0.0.1 kernel VIP, 10.0.0.2 fast-path VIP
//! ```
//! Every namespace is made here and deleted when the [`BalancerNet`] is dropped.
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

pub const IP: &str = "/sbin/ip"; // busybox's shell would prefer its own `ip` applet
pub const KVIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const FVIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
/// Backends 1..=BACKENDS, at 10.11.K.2.
pub const BACKENDS: usize = 3;

/// Backend `k`'s address (1-based).
pub fn backend(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 11, k as u8, 2)
}

/// `ip [-n ns] -batch -` with `cmds`; panics with ip's message if any line fails.
pub fn ip_batch(ns: Option<&str>, cmds: &str) {
    let mut c = Command::new(IP);
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    let mut child = c
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/sbin/ip");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cmds.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ip {ns:?} -batch failed: {}\n{cmds}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (made and deleted by its owner, e.g. [`BalancerNet`]).
pub struct Ns(pub String);

impl Ns {
    pub fn batch(&self, cmds: &str) {
        ip_batch(Some(&self.0), &format!("link set lo up\n{cmds}"));
    }

    /// Runs `f` with this thread in the namespace (sockets made there stay there), and moves
    /// the thread back afterwards.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Back(File);
        impl Drop for Back {
            fn drop(&mut self) {
                unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
            }
        }
        let _back = Back(File::open("/proc/thread-self/ns/net").unwrap());
        self.join();
        f()
    }

    /// Moves this thread into the namespace for good (threads spawned for it).
    pub fn join(&self) {
        let target = File::open(format!("/run/netns/{}", self.0)).unwrap();
        assert_eq!(
            unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {}",
            self.0
        );
    }

    pub fn sysctl(&self, path: &str, value: &str) {
        self.enter(|| {
            std::fs::write(format!("/proc/sys/{path}"), value)
                .unwrap_or_else(|e| panic!("sysctl {path}={value} in {}: {e}", self.0))
        });
    }

    /// The MAC address of `dev` here.
    pub fn mac(&self, dev: &str) -> String {
        let out = Command::new(IP)
            .args(["-n", &self.0, "-o", "link", "show", "dev", dev])
            .output()
            .expect("/sbin/ip");
        let s = String::from_utf8_lossy(&out.stdout);
        s.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no MAC address for {dev} in {}: {s}", self.0))
    }
}

/// `ethtool -K dev tx off` (the initramfs has no ethtool): full checksums on the wire, as a
/// real NIC sends them, so the XDP program's incremental updates are checked by the receivers.
pub fn tx_csum_off(dev: &str) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let mut v = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut r = IfReq {
        name: [0; 16],
        data: &mut v,
        _pad: [0; 16],
    };
    r.name[..dev.len()].copy_from_slice(dev.as_bytes());
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut r);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "ETHTOOL_STXCSUM {dev}: {err}");
    }
}

/// The client, the balancer (forwarding on, with the two VIPs on a dummy device) and
/// [`BACKENDS`] backends routed through it, every veth with transmit checksum offload off.
pub struct BalancerNet {
    pub client: Ns,
    pub lb: Ns,
    pub backends: Vec<Ns>,
}

impl BalancerNet {
    pub fn all(&self) -> impl Iterator<Item = &Ns> {
        [&self.client, &self.lb].into_iter().chain(&self.backends)
    }

    /// Namespaces `<prefix><tag>-<pid>` (one `ip` run for all: each costs ~0.2 s under TCG);
    /// the client also holds 10.10.0.`extra.0`..=`extra.1`; `serve(ns, k)` starts backend
    /// k's servers (1-based) once its namespace is up.
    pub fn build(prefix: &str, extra: (u8, u8), serve: impl Fn(&Ns, usize)) -> BalancerNet {
        let ns = |tag: &str| Ns(format!("{prefix}{tag}-{}", std::process::id()));
        let net = BalancerNet {
            client: ns("c"),
            lb: ns("l"),
            backends: (1..=BACKENDS).map(|k| ns(&format!("b{k}"))).collect(),
        };
        let add: String = net.all().map(|n| format!("netns add {}\n", n.0)).collect();
        ip_batch(None, &add);
        let (c, l) = (&net.client.0, &net.lb.0);
        let mut links = format!("link add c0 netns {c} type veth peer name l0 netns {l}\n");
        for (i, b) in net.backends.iter().enumerate() {
            links += &format!(
                "link add l{} netns {l} type veth peer name b0 netns {}\n",
                i + 1,
                b.0
            );
        }
        ip_batch(None, &links);
        let mut cmds = format!("addr add {CLIENT}/24 dev c0\n");
        for i in extra.0..=extra.1 {
            cmds += &format!("addr add 10.10.0.{i}/24 dev c0\n");
        }
        net.client.batch(&format!(
            "{cmds}link set c0 up\nroute add default via 10.10.0.1\n"
        ));
        let mut cmds = "addr add 10.10.0.1/24 dev l0\nlink set l0 up\n".to_string();
        for k in 1..=BACKENDS {
            cmds += &format!("addr add 10.11.{k}.1/24 dev l{k}\nlink set l{k} up\n");
        }
        cmds += &format!(
            "link add vip0 type dummy\naddr add {KVIP}/32 dev vip0\naddr add {FVIP}/32 dev vip0\n\
             link set vip0 up\n"
        );
        net.lb.batch(&cmds);
        for (i, b) in net.backends.iter().enumerate() {
            let k = i + 1;
            b.batch(&format!(
                "addr add 10.11.{k}.2/24 dev b0\nlink set b0 up\nroute add default via 10.11.{k}.1\n"
            ));
            b.enter(|| tx_csum_off("b0"));
            serve(b, k);
        }
        net.client.enter(|| tx_csum_off("c0"));
        net.lb.sysctl("net/ipv4/ip_forward", "1");
        net
    }
}

impl Drop for BalancerNet {
    fn drop(&mut self) {
        let del: String = self.all().map(|n| format!("netns del {}\n", n.0)).collect();
        let _ = Command::new(IP)
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(del.as_bytes())?;
                c.wait()
            });
    }
}
