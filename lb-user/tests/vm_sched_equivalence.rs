//! Scheduler equivalence between the real kernel IPVS and the fast path, inside the test VM
//! (`cargo xtask vm-test`). Outside the VM (no XVS_IN_VM) the test prints a note and returns.
//!
//! The network, all in namespaces made here (deleted on every exit path):
//!
//! ```text
//!  client c0 10.10.0.2, .10-.41 ── l0 10.10.0.1  [balancer]  lK 10.11.K.1 ── b0 10.11.K.2  backend rsK
//!                                   vip0 (dummy): 10.0.0.1 kernel VIP, 10.0.0.2 fast-path VIP
//! ```
//! Backends answer on port 8080 (TCP and UDP) with their own name; they route via the balancer.
//! Every case is a script of table edits and series of new connections. It runs twice, in the
//! same order and from the same client addresses (and, where sh-port hashes them, the same
//! source ports): against kernel IPVS (a masquerading service at 10.0.0.1, programmed over
//! netlink from inside the balancer namespace) and against the fast path (the same service at
//! 10.0.0.2, in one FastPath loaded here; XDP native on the balancer's veths, redirecting, with
//! the pass-through program on the peers). The backends that answered (or "refused") must be
//! the same, connection by connection. Each case has its own virtual port, so neither side
//! carries scheduler state or connections from one case into the next, and every series ends
//! with the backends idle (see [`Net::quiesce`]) before the table changes.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use lb_user::fastpath::{AttachMode, FastPath, FastPathConfig};
use lb_user::ipvs_nl::IpvsClient;
use lb_user::model::{Destination, Op, Protocol, ServiceConfig, ServiceFlags, ServiceKey, Table};

mod common;
use common::vmnet::{BalancerNet, Ns, CLIENT, FVIP, KVIP};

const RPORT: u16 = 8080;
/// Extra client addresses 10.10.0.10..=10.10.0.41 (sh).
const EXTRA: (u8, u8) = (10, 41);
const IO_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// Namespaces and network (common/vmnet.rs, shared with vm_bench), servers, clients

type Net = BalancerNet;

impl BalancerNet {
    fn for_equivalence() -> Net {
        let net = BalancerNet::build("xvsq", EXTRA, |b, k| serve(b, format!("rs{k}")));
        // Kernel IPVS refuses with ICMP port unreachable: unlimited, so that every refused
        // connection gets its answer to its one SYN (one scheduling attempt).
        net.lb.sysctl("net/ipv4/icmp_ratelimit", "0");
        net
    }

    /// Waits until no backend has a TCP connection left (only listeners), so that the last
    /// FIN/ACK or RST of a series has been through the balancer before the table changes.
    /// Otherwise one lost to a deleted service leaves a socket on a backend, and a later SYN
    /// from the same client address and port (the backend cannot tell the VIPs apart) meets
    /// it: a challenge ACK, the client's RST, its SYN again 2 jiffies later, which both kernel
    /// IPVS and the fast path reschedule (conn_reuse_mode, state CLOSE): one pick too many.
    fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let busy = |ns: &Ns| {
            let t = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap());
            // "sl local rem st ...": st 0A is LISTEN.
            t.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) != Some("0A"))
                .count()
        };
        while self.backends.iter().map(busy).sum::<usize>() > 0 {
            if Instant::now() > deadline {
                say("note: backends still have connections after 2 s");
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// TCP and UDP on 8080 in `ns`, answering `name\n` (TCP: to the first line, then it waits
/// for the client to close first, so no TIME_WAIT is left on the backend).
fn serve(ns: &Ns, name: String) {
    let (tcp, udp) = ns.enter(|| {
        (
            TcpListener::bind(("0.0.0.0", RPORT)).unwrap(),
            UdpSocket::bind(("0.0.0.0", RPORT)).unwrap(),
        )
    });
    let n = name.clone();
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            let (Ok(mut s), n) = (s, n.clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                if read_line(&mut s).is_ok() && s.write_all(format!("{n}\n").as_bytes()).is_ok() {
                    let _ = s.read_to_end(&mut Vec::new());
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        loop {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{name}\n").as_bytes(), from);
            }
        }
    });
}

fn read_line(s: &mut impl Read) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 64];
    while !out.contains(&b'\n') {
        let n = s.read(&mut b)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[..n]);
    }
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// One new TCP connection from `src` (port 0: any) to `dst`, asked once: the backend that
/// answered, "refused" (RST or ICMP port unreachable), or the error. With `abort` it ends with
/// an RST (SO_LINGER 0), so `src` can connect again at once (no TIME_WAIT).
fn tcp_ask(src: SocketAddrV4, dst: SocketAddrV4, abort: bool) -> String {
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, flags, 0);
        assert!(fd >= 0);
        let s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        // The same source address and port is used again, towards the other VIP.
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let (l, r) = (sockaddr(src), sockaddr(dst));
        if libc::bind(fd, &l as *const _ as *const libc::sockaddr, len) != 0 {
            panic!("bind {src}: {}", std::io::Error::last_os_error());
        }
        if libc::connect(fd, &r as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return format!("connect:{e}");
            }
        }
        s
    };
    // Polled, and SO_ERROR read every few ms: it also returns a *soft* error. With one CPU the
    // kernel IPVS's ICMP port unreachable is often processed while connect() still holds the
    // socket lock; TCP then only records it as soft and acts at the SYN retransmission 1 s
    // later (a second scheduling attempt). The refusal is known at once this way.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut p, 1, 5) } > 0;
        match s.take_error() {
            Ok(Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return "refused".into()
            }
            Ok(Some(e)) | Err(e) => return format!("connect:{e}"),
            Ok(None) if ready => break,
            Ok(None) if Instant::now() > deadline => return "connect:timeout".into(),
            Ok(None) => {}
        }
    }
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    if abort {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let len = std::mem::size_of::<libc::linger>() as u32;
        let p = &l as *const _ as *const libc::c_void;
        unsafe { libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, p, len) };
    }
    if let Err(e) = s.write_all(b"hi\n") {
        return format!("write:{e}");
    }
    read_line(&mut s).unwrap_or_else(|e| format!("read:{e}"))
}

/// One datagram from a new socket bound to `src`: the backend that answered (with the address
/// the answer came from when that is not `dst`), or the error.
fn udp_ask(src: SocketAddrV4, dst: SocketAddrV4) -> String {
    let s = UdpSocket::bind(src).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.send_to(b"hi\n", dst).unwrap();
    let mut buf = [0u8; 64];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            let name = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            if from == SocketAddr::V4(dst) {
                name
            } else {
                format!("{name}@{from}")
            }
        }
        Err(e) => format!("recv:{e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Cases

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Add backend k with a weight (it goes to the head of the list).
    Add(usize, u32),
    /// Change backend k's weight.
    Weight(usize, u32),
    Del(usize),
    /// Switch the service to another scheduler (`ipvsadm -E`).
    Sched(&'static str),
    /// n new connections from 10.10.0.2 (kernel-chosen source ports).
    Conns(usize),
    /// One new connection from each client address 10.10.0.a..=b.
    FromAddrs(u8, u8),
    /// From each address 10.10.0.a..=b, n connections from source ports p, p+1, ...
    FromPorts(u8, u8, u16, u16),
    /// n connections from 10.10.0.2:41000, each ended by an RST: every new SYN finds the
    /// previous connection of the same addresses and ports in state CLOSE (conn_reuse_mode).
    Reuse(usize),
}
use Step::*;

struct Case {
    name: &'static str,
    proto: Protocol,
    sched: &'static str,
    flags: u32,
    steps: &'static [Step],
}

const SH1: u32 = ServiceFlags::SCHED1; // sh-fallback
const SH2: u32 = ServiceFlags::SCHED2; // sh-port

const CASES: &[Case] = &[
    Case {
        name: "rr 1,1,1",
        proto: Protocol::Tcp,
        sched: "rr",
        flags: 0,
        steps: &[Add(1, 1), Add(2, 1), Add(3, 1), Conns(9)],
    },
    Case {
        name: "rr with weight 0, deletion of the cursor's destination, re-add",
        proto: Protocol::Tcp,
        sched: "rr",
        flags: 0,
        steps: &[
            Add(1, 1),
            Add(2, 1),
            Add(3, 1),
            Conns(4),
            Weight(2, 0),
            Conns(3),
            Weight(2, 1),
            Conns(2),
            Del(2),
            Conns(3),
            Add(2, 2),
            Conns(4),
            Del(1),
            Conns(3),
        ],
    },
    Case {
        name: "wrr 3,2,1",
        proto: Protocol::Tcp,
        sched: "wrr",
        flags: 0,
        steps: &[Add(1, 3), Add(2, 2), Add(3, 1), Conns(12)],
    },
    Case {
        name: "wrr with weight changes, a deletion, a re-add (cw carries over)",
        proto: Protocol::Tcp,
        sched: "wrr",
        flags: 0,
        steps: &[
            Add(1, 3),
            Add(2, 2),
            Add(3, 1),
            Conns(5),
            Weight(1, 1),
            Conns(5),
            Del(2),
            Conns(5),
            Add(2, 4),
            Conns(8),
            Weight(3, 0),
            Conns(6),
            Weight(2, 4),
            Conns(4),
        ],
    },
    Case {
        name: "wrr with weights of gcd 2, then gcd 1 (mw and di change), then a weight 0",
        proto: Protocol::Tcp,
        sched: "wrr",
        flags: 0,
        steps: &[
            Add(1, 4),
            Add(2, 6),
            Add(3, 2),
            Conns(7),
            Weight(3, 3),
            Conns(8),
            Weight(2, 0),
            Conns(5),
        ],
    },
    Case {
        name: "wrr with edits that change nothing (the kernel runs its hook anyway)",
        proto: Protocol::Tcp,
        sched: "wrr",
        flags: 0,
        steps: &[
            Add(1, 3),
            Add(2, 2),
            Add(3, 1),
            Conns(4),
            Weight(2, 2),
            Conns(4),
            Weight(1, 3),
            Conns(4),
        ],
    },
    Case {
        name: "wrr with every weight 0 (refused picks), then restored",
        proto: Protocol::Tcp,
        sched: "wrr",
        flags: 0,
        steps: &[
            Add(1, 3),
            Add(2, 2),
            Add(3, 1),
            Conns(4),
            Weight(1, 0),
            Weight(2, 0),
            Weight(3, 0),
            Conns(2),
            Weight(2, 2),
            Conns(2),
            Weight(1, 3),
            Weight(3, 1),
            Conns(8),
        ],
    },
    Case {
        name: "rr -> wrr -> rr -> sh -> wrr switches (ipvsadm -E)",
        proto: Protocol::Tcp,
        sched: "rr",
        flags: 0,
        steps: &[
            Add(1, 3),
            Add(2, 2),
            Add(3, 1),
            Conns(4),
            Sched("wrr"),
            Conns(6),
            Sched("rr"),
            Conns(4),
            Sched("sh"),
            Conns(2),
            Sched("wrr"),
            Conns(4),
        ],
    },
    Case {
        name: "rr, one client address and port again and again (RST, state CLOSE)",
        proto: Protocol::Tcp,
        sched: "rr",
        flags: 0,
        steps: &[Add(1, 1), Add(2, 1), Add(3, 1), Reuse(5)],
    },
    Case {
        name: "udp rr with a deletion",
        proto: Protocol::Udp,
        sched: "rr",
        flags: 0,
        steps: &[Add(1, 1), Add(2, 1), Add(3, 1), Conns(5), Del(3), Conns(4)],
    },
    Case {
        name: "udp wrr 3,2,1",
        proto: Protocol::Udp,
        sched: "wrr",
        flags: 0,
        steps: &[Add(1, 3), Add(2, 2), Add(3, 1), Conns(12)],
    },
    Case {
        name: "udp sh 1,2,1",
        proto: Protocol::Udp,
        sched: "sh",
        flags: 0,
        steps: &[Add(1, 1), Add(2, 2), Add(3, 1), FromAddrs(10, 41)],
    },
    Case {
        name: "sh 1,2,1 then a weight change and a deletion",
        proto: Protocol::Tcp,
        sched: "sh",
        flags: 0,
        steps: &[
            Add(1, 1),
            Add(2, 2),
            Add(3, 1),
            FromAddrs(10, 41),
            Weight(2, 1),
            FromAddrs(10, 25),
            Del(3),
            FromAddrs(10, 25),
        ],
    },
    Case {
        name: "sh with a weight-0 destination (no fallback: refused)",
        proto: Protocol::Tcp,
        sched: "sh",
        flags: 0,
        steps: &[
            Add(1, 1),
            Add(2, 1),
            Add(3, 1),
            Weight(2, 0),
            FromAddrs(10, 29),
        ],
    },
    Case {
        name: "sh-fallback with a weight-0 destination",
        proto: Protocol::Tcp,
        sched: "sh",
        flags: SH1,
        steps: &[
            Add(1, 1),
            Add(2, 1),
            Add(3, 1),
            Weight(2, 0),
            FromAddrs(10, 29),
        ],
    },
    Case {
        name: "sh-port",
        proto: Protocol::Tcp,
        sched: "sh",
        flags: SH2,
        steps: &[Add(1, 1), Add(2, 1), Add(3, 1), FromPorts(10, 13, 40000, 8)],
    },
    Case {
        name: "sh-fallback,sh-port with a weight-0 destination",
        proto: Protocol::Tcp,
        sched: "sh",
        flags: SH1 | SH2,
        steps: &[
            Add(1, 2),
            Add(2, 1),
            Add(3, 1),
            Weight(1, 0),
            FromPorts(14, 17, 40100, 6),
        ],
    },
];

fn rs(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 11, k as u8, 2))
}

fn config(sched: &str, flags: u32) -> ServiceConfig {
    ServiceConfig {
        flags: ServiceFlags::from_bits(flags),
        ..ServiceConfig::with_scheduler(sched)
    }
}

/// The operation a step is (None: a series of connections).
fn op(key: ServiceKey, flags: u32, step: Step) -> Option<Op> {
    Some(match step {
        Add(k, w) => Op::AddDest(key, Destination::masq(rs(k), RPORT, w)),
        Weight(k, w) => Op::EditDest(key, Destination::masq(rs(k), RPORT, w)),
        Del(k) => Op::DelDest(key, rs(k), RPORT),
        Sched(s) => Op::EditService(key, config(s, flags)),
        _ => return None,
    })
}

/// The sources of a series of connections.
fn sources(step: Step) -> Vec<SocketAddrV4> {
    let a = |i: u8| Ipv4Addr::new(10, 10, 0, i);
    match step {
        Conns(n) => vec![SocketAddrV4::new(CLIENT, 0); n],
        FromAddrs(x, y) => (x..=y).map(|i| SocketAddrV4::new(a(i), 0)).collect(),
        FromPorts(x, y, p, n) => (x..=y)
            .flat_map(|i| (p..p + n).map(move |port| SocketAddrV4::new(a(i), port)))
            .collect(),
        Reuse(n) => vec![SocketAddrV4::new(CLIENT, 41000); n],
        _ => unreachable!(),
    }
}

/// Kernel IPVS or the fast path.
enum Side {
    Kernel(IpvsClient),
    Fast(Box<FastPath>, Table),
}

impl Side {
    fn apply(&mut self, op: &Op) {
        match self {
            Side::Kernel(c) => match op {
                Op::AddService(k, cfg) => c.add_service(k, cfg),
                Op::EditService(k, cfg) => c.edit_service(k, cfg),
                Op::DelService(k) => c.del_service(k),
                Op::AddDest(k, d) => c.add_dest(k, d),
                Op::EditDest(k, d) => c.edit_dest(k, d),
                Op::DelDest(k, a, p) => c.del_dest(k, *a, *p),
                Op::Clear => c.flush(),
            }
            .unwrap_or_else(|e| panic!("kernel IPVS: {op:?}: {e}")),
            Side::Fast(fp, table) => {
                let changes = table.apply_op(op).unwrap();
                fp.apply(&changes)
                    .unwrap_or_else(|e| panic!("fast path: {op:?}: {e}"));
            }
        }
    }

    fn vip(&self) -> Ipv4Addr {
        match self {
            Side::Kernel(_) => KVIP,
            Side::Fast(..) => FVIP,
        }
    }
}

/// Runs a case on one side: the answers, series by series.
fn run_case(net: &Net, side: &mut Side, case: &Case, vport: u16) -> Vec<Vec<String>> {
    let dst = SocketAddrV4::new(side.vip(), vport);
    let key = ServiceKey::Inet {
        proto: case.proto,
        addr: IpAddr::V4(*dst.ip()),
        port: vport,
    };
    side.apply(&Op::AddService(key, config(case.sched, case.flags)));
    let mut out = Vec::new();
    for &step in case.steps {
        match op(key, case.flags, step) {
            Some(op) => side.apply(&op),
            None => {
                out.push(net.client.enter(|| {
                    sources(step)
                        .into_iter()
                        .map(|src| match case.proto {
                            Protocol::Udp => udp_ask(src, dst),
                            _ => tcp_ask(src, dst, matches!(step, Reuse(_))),
                        })
                        .collect()
                }));
                net.quiesce();
            }
        }
    }
    side.apply(&Op::DelService(key));
    out
}

fn show(series: &[Vec<String>]) -> String {
    series
        .iter()
        .map(|s| s.join(" "))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Written straight to stderr: libtest captures print!, and these sequences are the point.
fn say(s: &str) {
    let _ = std::io::stderr().write_all(format!("{s}\n").as_bytes());
}

#[test]
fn kernel_ipvs_and_fast_path_pick_the_same_destinations() {
    if std::env::var_os("XVS_IN_VM").is_none() {
        say("note: skipped: needs a kernel with IPVS (run `cargo xtask vm-test`)");
        return;
    }
    let t0 = Instant::now();
    let net = Net::for_equivalence();
    let t_net = t0.elapsed();

    // Netlink is per namespace: the socket belongs to the one it was opened in.
    let mut kernel = Side::Kernel(net.lb.enter(|| IpvsClient::new().expect("IPVS netlink")));
    kernel.apply(&Op::Clear);
    // As kube-proxy sets it, and as the fast path behaves (README): a connection whose
    // destination was deleted expires on its next packet.
    net.lb
        .enter(|| std::fs::write("/proc/sys/net/ipv4/vs/expire_nodest_conn", "1").unwrap());

    let t1 = Instant::now();
    let mut fp = FastPath::load(FastPathConfig {
        max_services: 64,
        max_dests: 256,
        sched_slots: 1 << 16,
        conn_table_size: 1 << 14,
        fib_redirect: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("FastPath::load on {}: {e}", kernel_release()));
    let t_load = t1.elapsed();
    net.lb.enter(|| {
        for i in 0..=3 {
            fp.attach(&format!("l{i}"), AttachMode::Native, true)
                .unwrap_or_else(|e| panic!("attach l{i}: {e}"));
        }
    });
    // A native redirect into a veth delivers only when the peer runs an XDP program.
    net.client
        .enter(|| fp.attach_pass("c0", AttachMode::Native))
        .unwrap();
    for b in &net.backends {
        b.enter(|| fp.attach_pass("b0", AttachMode::Native))
            .unwrap();
    }
    let mut fast = Side::Fast(Box::new(fp), Table::new());
    say(&format!(
        "sched-equivalence: kernel {}; network {:.2} s, fast path load {:.2} s",
        kernel_release(),
        t_net.as_secs_f64(),
        t_load.as_secs_f64()
    ));

    let mut differ = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let t = Instant::now();
        let vport = 1000 + i as u16;
        let k = run_case(&net, &mut kernel, case, vport);
        let tk = t.elapsed();
        let before = path_stats(&fast);
        let f = run_case(&net, &mut fast, case, vport);
        let paths = path_delta(&before, &path_stats(&fast));
        let same = k == f;
        say(&format!(
            "case {:?} ({} {}{}) kernel {:.2} s, fast path {:.2} s: {}\n  kernel IPVS: {}\n  \
             fast path:   {}\n  fast path packets: {}",
            case.name,
            if case.proto == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            },
            case.sched,
            match case.flags {
                0 => "",
                SH1 => " sh-fallback",
                SH2 => " sh-port",
                _ => " sh-fallback,sh-port",
            },
            tk.as_secs_f64(),
            (t.elapsed() - tk).as_secs_f64(),
            if same { "same" } else { "DIFFERENT" },
            show(&k),
            show(&f),
            paths
        ));
        if !same {
            differ.push(case.name);
        }
        // Every answer came from a backend or was a refusal, never a timeout or an error.
        for s in k.iter().chain(&f).flatten() {
            assert!(
                s == "refused" || (s.starts_with("rs") && !s.contains('@')),
                "case {:?}: unexpected answer {s:?}",
                case.name
            );
        }
    }
    say(&format!(
        "sched-equivalence: {} cases in {:.2} s",
        CASES.len(),
        t0.elapsed().as_secs_f64()
    ));
    assert!(
        differ.is_empty(),
        "kernel IPVS and the fast path differ in: {differ:?}"
    );
}

fn path_stats(side: &Side) -> Vec<u64> {
    match side {
        Side::Fast(fp, _) => fp.path_stats().unwrap(),
        Side::Kernel(_) => unreachable!(),
    }
}

/// The fast path's packet-path counters that moved, by name.
fn path_delta(before: &[u64], after: &[u64]) -> String {
    use lb_common::path::*;
    let names = [
        (PASS_NOT_VIP, "not-vip"),
        (PASS_NO_DEST, "no-dest"),
        (PASS_TCP_NOT_SYN, "tcp-not-syn"),
        (FWD_NEW, "new"),
        (FWD_ESTABLISHED, "established"),
        (REPLY, "reply"),
        (TX_REDIRECT, "redirect"),
        (TX_PASS, "tx-pass"),
        (CONN_EXPIRED, "expired"),
        (CONN_NODEST, "nodest"),
        (CONN_REUSED, "reused"),
        (REPLY_NO_CONN, "reply-no-conn"),
        (INSERT_FAILED, "insert-failed"),
    ];
    names
        .iter()
        .filter_map(|&(i, n)| {
            let d = after[i as usize] - before[i as usize];
            (d > 0).then(|| format!("{n}={d}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}
