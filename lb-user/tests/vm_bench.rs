//! A benchmark, not a test: the same end-to-end traffic through kernel IPVS and through the
//! fast path (XDP native and generic, and tc), on the same kernel in the test VM, next to plain
//! forwarding through the same balancer. Run by `vm::vm_bench` in xtask (part of
//! `cargo xtask bench`). It does nothing and passes unless both XVS_IN_VM and XVS_VM_BENCH=1
//! are set, so `cargo xtask vm-test` never runs it; XVS_VM_BENCH_QUICK=1 makes it short.
//!
//! The VM is qemu TCG (software emulation, one vCPU): absolute figures mean little, so every
//! figure is also given as a ratio to plain forwarding measured in the same round.
//!
//! The network (namespaces made here, deleted on every exit path), as in vm_sched_equivalence:
//!
//! ```text
//!  client c0 10.10.0.2, .10-.49 ── l0 10.10.0.1  [balancer]  lK 10.11.K.1 ── b0 10.11.K.2  backend rsK
//!                                   vip0 (dummy): 10.0.0.1 kernel VIP, 10.0.0.2 fast-path VIP
//! ```
//!
//! The table, on both VIPs: TCP :80 and UDP :80 -> the three backends :8080, TCP :81 -> :8081,
//! rr, masquerading. Kernel IPVS is programmed over netlink; the fast path is loaded, attached
//! to l0..l3 and dropped (detached) once per mode and round, so the plain and kernel IPVS runs
//! have no XDP program anywhere. Native mode redirects (the pass-through program on c0 and
//! the b0s); generic mode redirects too (as xvsd does); tc redirects with bpf_redirect (no
//! program on the peers). The VM's kernel may predate tcx (6.6): the tc program is then
//! attached through netlink (clsact ingress), the same program at the same place.
//!
//! Workloads, each for a fixed time, from the client namespace:
//! - `tcp-conns`: [`TCP_CLIENTS`] threads, each looping connect / one request and response /
//!   close (client first), from rotating source addresses (each path its own ten): connections
//!   per second;
//! - `udp-rr`: [`UDP_FLOWS`] sockets (distinct source address and port, new ones each run)
//!   with one request in flight each: answered requests per second;
//! - `tcp-stream`: one connection writing 64 KiB buffers: Mbit/s of payload, until the sink
//!   has confirmed every byte.
//!
//! Paths: `plain` (straight to the backends' own addresses, routed by the balancer, no NAT),
//! `ipvs` (10.0.0.1), `xdp-native`, `xdp-generic` and `tc` (10.0.0.2). Each round runs every path
//! (order reversed every other round, so slow drift of the host does not favour one).
//!
//! Each measurement checks that its packets were really processed where it says: kernel IPVS
//! counters (connections exactly equal to the connections made, UDP packets in between the
//! answered and the sent requests, bytes at least the payload), the fast path's counters and
//! packet-path counters likewise (and redirects), the balancer's forwarded datagrams for plain
//! forwarding; every answer came from the address asked and names a backend; rr spread the
//! connections evenly; no connection failed.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::time::{Duration, Instant};

use lb_common::path;
use lb_user::fastpath::{AttachMode, FastPath, FastPathConfig};
use lb_user::ipvs_nl::IpvsClient;
use lb_user::model::{Destination, Op, Protocol, ServiceConfig, ServiceKey, Table};
use serde_json::{json, Value};

mod common;
use common::vmnet::{backend, BalancerNet, Ns, CLIENT, FVIP, IP, KVIP};

/// Extra client addresses 10.10.0.10..=10.10.0.59: [`ADDRS_PER_PATH`] for each path.
const EXTRA: (u8, u8) = (10, 59);
/// Each path sends from its own client addresses, so that no two paths share a 4-tuple as
/// the backends see it: kernel IPVS keeps its connections (2 min in TIME_WAIT) and, on the
/// way back, SNATs whatever a backend sends from a port it knows to a client address and
/// port it knows, plain forwarding's answers included (seen here: a connect timing out).
const ADDRS_PER_PATH: usize = 10;
const VPORT: u16 = 80;
const RPORT: u16 = 8080;
const STREAM_VPORT: u16 = 81;
const STREAM_RPORT: u16 = 8081;
const TCP_CLIENTS: usize = 4;
const UDP_FLOWS: usize = 64;
/// UDP source ports: UDP_PORT_BASE + run * UDP_FLOWS + k (a new flow in every run).
const UDP_PORT_BASE: u16 = 2000;
const IO_TIMEOUT: Duration = Duration::from_secs(3);
const UDP_RESEND: Duration = Duration::from_millis(500);

fn say(s: &str) {
    let _ = std::io::stderr().write_all(format!("{s}\n").as_bytes());
}

// ---------------------------------------------------------------------------------------
// Namespaces and network (common/vmnet.rs, shared with vm_sched_equivalence)

type Net = BalancerNet;

impl Ns {
    /// One field of /proc/net/snmp (e.g. "Ip", "ForwDatagrams").
    fn snmp(&self, group: &str, field: &str) -> u64 {
        let text = self.enter(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap());
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{group}:")))
            .collect();
        let i = rows[0]
            .split_whitespace()
            .position(|n| n == field)
            .unwrap_or_else(|| panic!("no {group} {field} in /proc/net/snmp"));
        rows[1].split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

impl BalancerNet {
    fn for_bench() -> Net {
        let net = BalancerNet::build("xvsb", EXTRA, serve);
        // Tens of thousands of client connections in TIME_WAIT over a run: room for them.
        net.client
            .sysctl("net/ipv4/ip_local_port_range", "10000 65000");
        net.client.sysctl("net/ipv4/tcp_max_tw_buckets", "1000000");
        net.static_neighbours();
        net
    }

    /// Permanent neighbour entries on every link, so that no run waits for ARP and, above all,
    /// the fast path finds every next hop: a reply whose FIB lookup finds no neighbour is
    /// passed to the stack already rewritten to come from the VIP, which is local here, and
    /// the stack drops it as a martian; nothing then resolves the client's address (the
    /// stack never sends to it), so a client address the balancer has not seen before could
    /// never connect through the fast path (seen here).
    fn static_neighbours(&self) {
        let mut lb = String::new();
        let c0 = self.client.mac("c0");
        for a in
            std::iter::once(CLIENT).chain((EXTRA.0..=EXTRA.1).map(|i| Ipv4Addr::new(10, 10, 0, i)))
        {
            lb += &format!("neigh replace {a} lladdr {c0} dev l0 nud permanent\n");
        }
        self.client.batch(&format!(
            "neigh replace 10.10.0.1 lladdr {} dev c0 nud permanent\n",
            self.lb.mac("l0")
        ));
        for (i, b) in self.backends.iter().enumerate() {
            let k = i + 1;
            lb += &format!(
                "neigh replace {} lladdr {} dev l{k} nud permanent\n",
                backend(k),
                b.mac("b0")
            );
            b.batch(&format!(
                "neigh replace 10.11.{k}.1 lladdr {} dev b0 nud permanent\n",
                self.lb.mac(&format!("l{k}"))
            ));
        }
        self.lb.batch(&lb);
    }
}

// ---------------------------------------------------------------------------------------
// Backends

/// Backend k: TCP :8080 answers one line with `rsK` and waits for the client to close (so
/// TIME_WAIT stays on the client); UDP :8080 echoes the request followed by `rsK`; TCP :8081
/// reads everything, then writes the byte count. Worker threads, no thread per connection.
fn serve(ns: &Ns, k: usize) {
    let (tcp, udp, sink) = ns.enter(|| {
        (
            TcpListener::bind(("0.0.0.0", RPORT)).unwrap(),
            UdpSocket::bind(("0.0.0.0", RPORT)).unwrap(),
            TcpListener::bind(("0.0.0.0", STREAM_RPORT)).unwrap(),
        )
    });
    let name = format!("rs{k}");
    for _ in 0..TCP_CLIENTS + 1 {
        let l = tcp.try_clone().unwrap();
        let n = name.clone();
        std::thread::spawn(move || loop {
            let Ok((mut s, _)) = l.accept() else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            if read_line(&mut s).is_ok() && s.write_all(format!("{n}\n").as_bytes()).is_ok() {
                let _ = s.read_to_end(&mut Vec::new());
            }
        });
    }
    let n = name.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            if let Ok((len, from)) = udp.recv_from(&mut buf[..64]) {
                let end = len + n.len();
                buf[len..end].copy_from_slice(n.as_bytes());
                let _ = udp.send_to(&buf[..end], from);
            }
        }
    });
    for _ in 0..2 {
        let l = sink.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let Ok((mut s, _)) = l.accept() else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = s.write_all(format!("{total}\n").as_bytes());
            }
        });
    }
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

// ---------------------------------------------------------------------------------------
// Paths and workloads

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Plain,
    Kernel,
    Native,
    Generic,
    Tc,
}

const PATHS: [Path; 5] = [
    Path::Plain,
    Path::Kernel,
    Path::Native,
    Path::Generic,
    Path::Tc,
];

impl Path {
    fn id(self) -> &'static str {
        match self {
            Path::Plain => "plain",
            Path::Kernel => "ipvs",
            Path::Native => "xdp-native",
            Path::Generic => "xdp-generic",
            Path::Tc => "tc",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Path::Plain => "plain forwarding (no NAT)",
            Path::Kernel => "kernel IPVS (masq, rr)",
            Path::Native => "fast path, XDP native",
            Path::Generic => "fast path, XDP generic",
            Path::Tc => "fast path, tc",
        }
    }

    fn index(self) -> usize {
        PATHS.iter().position(|&p| p == self).unwrap()
    }

    /// The path's own client address `j` (0..ADDRS_PER_PATH).
    fn src(self, j: usize) -> Ipv4Addr {
        assert!(j < ADDRS_PER_PATH);
        let a = EXTRA.0 as usize + self.index() * ADDRS_PER_PATH + j;
        assert!(a <= EXTRA.1 as usize);
        Ipv4Addr::new(10, 10, 0, a as u8)
    }

    fn vip(self) -> Option<Ipv4Addr> {
        match self {
            Path::Plain => None,
            Path::Kernel => Some(KVIP),
            Path::Native | Path::Generic | Path::Tc => Some(FVIP),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Conns,
    Udp,
    Stream,
}

const WORKS: [Work; 3] = [Work::Conns, Work::Udp, Work::Stream];

impl Work {
    fn id(self) -> &'static str {
        match self {
            Work::Conns => "tcp-conns",
            Work::Udp => "udp-rr",
            Work::Stream => "tcp-stream",
        }
    }

    fn what(self) -> String {
        match self {
            Work::Conns => format!(
                "TCP connections (connect, one request and response, close; {TCP_CLIENTS} \
                 concurrent clients)"
            ),
            Work::Udp => format!(
                "UDP request/response ({UDP_FLOWS} flows from distinct source ports, one \
                 request in flight each)"
            ),
            Work::Stream => "one TCP stream (client to backend, 64 KiB writes)".to_string(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Work::Conns => "conn/s",
            Work::Udp => "req/s",
            Work::Stream => "Mbit/s",
        }
    }

    fn vport(self) -> u16 {
        if self == Work::Stream {
            STREAM_VPORT
        } else {
            VPORT
        }
    }

    fn rport(self) -> u16 {
        if self == Work::Stream {
            STREAM_RPORT
        } else {
            RPORT
        }
    }

    fn key(self, vip: Ipv4Addr) -> ServiceKey {
        ServiceKey::Inet {
            proto: if self == Work::Udp {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            addr: IpAddr::V4(vip),
            port: self.vport(),
        }
    }
}

/// The table of one VIP (the same on both): every workload's service, rr over the backends.
fn table_ops(vip: Ipv4Addr) -> Vec<Op> {
    let mut ops = Vec::new();
    for w in WORKS {
        let key = w.key(vip);
        ops.push(Op::AddService(key, ServiceConfig::with_scheduler("rr")));
        for k in 1..=3 {
            ops.push(Op::AddDest(
                key,
                Destination::masq(IpAddr::V4(backend(k)), w.rport(), 1),
            ));
        }
    }
    ops
}

/// Where connection/request `i` goes on a path (plain forwarding rotates over the backends).
fn target(path: Path, work: Work, i: usize) -> SocketAddrV4 {
    match path.vip() {
        Some(vip) => SocketAddrV4::new(vip, work.vport()),
        None => SocketAddrV4::new(backend(i % 3 + 1), work.rport()),
    }
}

// ---------------------------------------------------------------------------------------
// Traffic generators (in the client namespace)

/// What one run of a workload did.
#[derive(Debug, Default)]
struct Outcome {
    /// The figure, in the workload's unit.
    value: f64,
    secs: f64,
    /// tcp-conns: connections completed; udp-rr: requests answered in time; tcp-stream: bytes.
    count: u64,
    /// tcp-conns: connections attempted; udp-rr: requests sent (resends included).
    attempts: u64,
    /// udp-rr: every answer received (late ones included).
    answered: u64,
    resent: u64,
    /// udp-rr: round-trip times of the answered requests (ms), and when resends happened
    /// (s after the start, the first few).
    rtts: Vec<f64>,
    resent_at: Vec<f64>,
    /// Requests still unanswered when the sockets closed.
    unanswered: u64,
    /// Answers per backend.
    per_backend: [u64; 3],
    /// Failures (connection errors, answers from elsewhere), the first few kept.
    failures: u64,
    errors: Vec<String>,
}

impl Outcome {
    fn fail(&mut self, e: String) {
        self.failures += 1;
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
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

/// A TCP connection from `src` (its port chosen at connect time, unique for the 4-tuple, so
/// TIME_WAIT sockets of other destinations do not use up the port range) to `dst`.
fn tcp_connect(src: Ipv4Addr, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            4,
        );
        // Bounds connect() too.
        let tv = libc::timeval {
            tv_sec: IO_TIMEOUT.as_secs() as _,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let (l, r) = (sockaddr(SocketAddrV4::new(src, 0)), sockaddr(dst));
        if libc::bind(fd, &l as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::connect(fd, &r as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

fn backend_index(name: &str) -> Option<usize> {
    match name {
        "rs1" => Some(0),
        "rs2" => Some(1),
        "rs3" => Some(2),
        _ => None,
    }
}

/// tcp-conns: [`TCP_CLIENTS`] threads until `secs` have passed; each finishes the connection
/// it is in.
fn run_conns(net: &Net, path: Path, secs: f64) -> Outcome {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..TCP_CLIENTS)
        .map(|t| {
            let ns = Ns(net.client.0.clone());
            std::thread::spawn(move || {
                ns.join();
                let mut o = Outcome::default();
                let mut i = 0usize;
                while Instant::now() < deadline {
                    // Thread t takes two of the path's addresses in turn.
                    let src = path.src(2 * t + i % 2);
                    let dst = target(path, Work::Conns, i + t);
                    i += 1;
                    o.attempts += 1;
                    let r = tcp_connect(src, dst).and_then(|mut s| {
                        s.set_read_timeout(Some(IO_TIMEOUT))?;
                        s.write_all(b"hi\n")?;
                        read_line(&mut s)
                    });
                    match r {
                        Ok(name) => match backend_index(&name) {
                            Some(b) if path == Path::Plain && backend(b + 1) != *dst.ip() => {
                                o.fail(format!("{dst} answered as {name}"))
                            }
                            Some(b) => {
                                o.per_backend[b] += 1;
                                o.count += 1;
                            }
                            None => o.fail(format!("{src} -> {dst}: answer {name:?}")),
                        },
                        Err(e) => o.fail(format!("{src} -> {dst}: {e}")),
                    }
                }
                o
            })
        })
        .collect();
    let mut o = Outcome::default();
    for w in workers {
        let r = w.join().unwrap();
        o.count += r.count;
        o.attempts += r.attempts;
        o.failures += r.failures;
        o.errors.extend(r.errors);
        for b in 0..3 {
            o.per_backend[b] += r.per_backend[b];
        }
    }
    o.secs = t0.elapsed().as_secs_f64();
    o.value = o.count as f64 / o.secs;
    o
}

struct Flow {
    sock: UdpSocket,
    dst: SocketAddrV4,
    seq: u64,
    sent_at: Instant,
    waiting: bool,
    backend: Option<usize>,
}

impl Flow {
    fn send(&mut self, o: &mut Outcome) {
        self.sock
            .send_to(&self.seq.to_be_bytes(), self.dst)
            .unwrap();
        self.sent_at = Instant::now();
        self.waiting = true;
        o.attempts += 1;
    }
}

/// udp-rr: [`UDP_FLOWS`] non-blocking sockets, one request each in flight (resent after
/// [`UDP_RESEND`]); `run` picks the source ports. Requests answered before the deadline
/// count; the answers still due are awaited (up to 1 s) for the counter checks.
fn run_udp(net: &Net, path: Path, run: usize, secs: f64) -> Outcome {
    net.client.enter(|| {
        let base = UDP_PORT_BASE as usize + run * UDP_FLOWS;
        assert!(
            base + UDP_FLOWS < 10000,
            "UDP source ports would run into the ephemeral range"
        );
        let mut flows: Vec<Flow> = (0..UDP_FLOWS)
            .map(|k| {
                let src = SocketAddrV4::new(path.src(k % ADDRS_PER_PATH), (base + k) as u16);
                let sock = UdpSocket::bind(src).unwrap_or_else(|e| panic!("bind {src}: {e}"));
                sock.set_nonblocking(true).unwrap();
                Flow {
                    sock,
                    dst: target(path, Work::Udp, k),
                    seq: 0,
                    sent_at: Instant::now(),
                    waiting: false,
                    backend: None,
                }
            })
            .collect();
        let mut o = Outcome::default();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(secs);
        let drain_until = deadline + Duration::from_secs(1);
        for f in flows.iter_mut() {
            f.send(&mut o);
        }
        let mut pfds: Vec<libc::pollfd> = flows
            .iter()
            .map(|f| libc::pollfd {
                fd: f.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = [0u8; 256];
        loop {
            let now = Instant::now();
            let open = now < deadline;
            if !open && (now >= drain_until || flows.iter().all(|f| !f.waiting)) {
                break;
            }
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, 20) };
            if n > 0 {
                for (f, p) in flows.iter_mut().zip(pfds.iter_mut()) {
                    if p.revents == 0 {
                        continue;
                    }
                    p.revents = 0;
                    // One answer per flow and pass: a flow whose answers come back at once
                    // must not keep the loop to itself while the others wait.
                    while let Ok((len, from)) = f.sock.recv_from(&mut buf) {
                        if from != SocketAddr::V4(f.dst) {
                            o.fail(format!("answer to {} from {from}", f.dst));
                            continue;
                        }
                        if len < 8 || buf[..8] != f.seq.to_be_bytes() || !f.waiting {
                            continue; // the answer to a resent request, already counted
                        }
                        let name = String::from_utf8_lossy(&buf[8..len]).to_string();
                        let Some(b) = backend_index(&name) else {
                            o.fail(format!("answer {name:?} from {from}"));
                            continue;
                        };
                        if *f.backend.get_or_insert(b) != b {
                            o.fail(format!("flow to {} moved to {name}", f.dst));
                        }
                        o.answered += 1;
                        o.rtts.push(f.sent_at.elapsed().as_secs_f64() * 1e3);
                        o.per_backend[b] += 1;
                        f.waiting = false;
                        if Instant::now() < deadline {
                            o.count += 1;
                            f.seq += 1;
                            f.send(&mut o);
                        }
                        break;
                    }
                }
            }
            if open {
                for f in flows.iter_mut() {
                    if f.waiting && f.sent_at.elapsed() > UDP_RESEND {
                        o.resent += 1;
                        if o.resent_at.len() < 20 {
                            o.resent_at.push(t0.elapsed().as_secs_f64());
                        }
                        f.send(&mut o);
                    }
                }
            }
        }
        let unanswered = flows.iter().filter(|f| f.waiting).count();
        o.unanswered = unanswered as u64;
        if unanswered > 0 {
            o.errors.push(format!(
                "{unanswered} last requests unanswered after 1 s (not counted)"
            ));
        }
        o.secs = secs;
        o.value = o.count as f64 / secs;
        o
    })
}

/// tcp-stream: one connection writing for `secs`; the time runs until the sink has confirmed
/// every byte.
fn run_stream(net: &Net, path: Path, secs: f64) -> Outcome {
    net.client.enter(|| {
        let mut o = Outcome {
            attempts: 1,
            ..Default::default()
        };
        let dst = target(path, Work::Stream, 0);
        let buf = vec![0x5au8; 1 << 16];
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(secs);
        let r = tcp_connect(path.src(ADDRS_PER_PATH - 1), dst).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                s.write_all(&buf)?;
                sent += buf.len() as u64;
            }
            s.shutdown(Shutdown::Write)?;
            let got = read_line(&mut s)?;
            Ok((sent, got))
        });
        o.secs = t0.elapsed().as_secs_f64();
        match r {
            Ok((sent, got)) if got == sent.to_string() => {
                o.count = sent;
                o.value = sent as f64 * 8.0 / o.secs / 1e6;
            }
            Ok((sent, got)) => o.fail(format!("sent {sent} bytes, the sink counted {got:?}")),
            Err(e) => o.fail(format!("stream to {dst}: {e}")),
        }
        o
    })
}

fn run_work(net: &Net, path: Path, work: Work, run: usize, secs: f64) -> Outcome {
    match work {
        Work::Conns => run_conns(net, path, secs),
        Work::Udp => run_udp(net, path, run, secs),
        Work::Stream => run_stream(net, path, secs),
    }
}

// ---------------------------------------------------------------------------------------
// Checks: were the packets really processed where they should be?

type KStats = lb_user::ipvs_nl::Stats;

/// Kernel IPVS counters lag: 6.1 copies them from the per-CPU counters every 2 s (the
/// estimator). So what each run must add is booked, and checked after the next estimator
/// run ([`KernelBook::settle`]).
struct KernelBook {
    ipvs: IpvsClient,
    /// Per workload: the counters at the last settle, and what was booked since.
    base: Vec<KStats>,
    conns: Vec<u64>,
    pkts_min: Vec<u64>,
    pkts_max: Vec<u64>,
    bytes_min: Vec<u64>,
}

impl KernelBook {
    fn new(ipvs: IpvsClient) -> KernelBook {
        let n = WORKS.len();
        let mut b = KernelBook {
            ipvs,
            base: Vec::new(),
            conns: vec![0; n],
            pkts_min: vec![0; n],
            pkts_max: vec![0; n],
            bytes_min: vec![0; n],
        };
        b.base = WORKS.iter().map(|&w| b.stats(w)).collect();
        b
    }

    fn stats(&self, w: Work) -> KStats {
        self.ipvs
            .service(&w.key(KVIP))
            .unwrap_or_else(|e| panic!("kernel IPVS service {}: {e}", w.id()))
            .stats
    }

    fn book(&mut self, w: Work, o: &Outcome) {
        let i = w as usize;
        match w {
            Work::Conns => self.conns[i] += o.attempts,
            Work::Udp => {
                self.conns[i] += UDP_FLOWS as u64;
                self.pkts_min[i] += o.answered;
                // A late answer (to a resent request, or after the sockets closed) meets a
                // closed port: the client's ICMP port unreachable counts as a packet in too.
                self.pkts_max[i] += o.attempts + o.resent + o.unanswered;
            }
            Work::Stream => {
                self.conns[i] += 1;
                self.bytes_min[i] += o.count;
            }
        }
    }

    /// Waits (up to 8 s) until the counters show everything booked, checks them, and makes
    /// them the new base. Returns a line per workload.
    fn settle(&mut self) -> Vec<String> {
        let t0 = Instant::now();
        loop {
            let now: Vec<KStats> = WORKS.iter().map(|&w| self.stats(w)).collect();
            let done = WORKS.iter().all(|&w| {
                let (i, b) = (w as usize, &self.base[w as usize]);
                now[i].conns - b.conns >= self.conns[i]
                    && now[i].inpkts - b.inpkts >= self.pkts_min[i]
                    && now[i].inbytes - b.inbytes >= self.bytes_min[i]
            });
            if !done && t0.elapsed() < Duration::from_secs(8) {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            let mut lines = Vec::new();
            for w in WORKS {
                let i = w as usize;
                let (b, n) = (self.base[i], now[i]);
                let (dc, dp, db) = (
                    n.conns - b.conns,
                    n.inpkts - b.inpkts,
                    n.inbytes - b.inbytes,
                );
                let ok = dc == self.conns[i]
                    && dp >= self.pkts_min[i]
                    && (w != Work::Udp || dp <= self.pkts_max[i])
                    && db >= self.bytes_min[i];
                let line = format!(
                    "kernel IPVS {}: conns +{dc} (made {}), inpkts +{dp}{}, inbytes +{db} \
                     (payload {})",
                    w.id(),
                    self.conns[i],
                    if w == Work::Udp {
                        format!(
                            " (answered {}, sent {})",
                            self.pkts_min[i], self.pkts_max[i]
                        )
                    } else {
                        String::new()
                    },
                    self.bytes_min[i]
                );
                assert!(ok, "kernel IPVS counters do not match the traffic: {line}");
                lines.push(line);
                self.base[i] = n;
                self.conns[i] = 0;
                self.pkts_min[i] = 0;
                self.pkts_max[i] = 0;
                self.bytes_min[i] = 0;
            }
            return lines;
        }
    }
}

type FastSnap = (lb_user::fastpath::Counters, Vec<u64>);

/// The fast path's counters of a workload's service, and its packet-path counters.
fn fast_snapshot(fp: &FastPath, w: Work) -> FastSnap {
    let (total, _) = fp
        .counters(&w.key(FVIP))
        .expect("fast path counters")
        .expect("fast path service");
    (total, fp.path_stats().expect("path stats"))
}

/// Checks the fast path's counters against a run; returns them with the packet-path
/// counters that moved.
fn check_fast(path: Path, w: Work, o: &Outcome, before: &FastSnap, after: &FastSnap) -> Value {
    let d = |i: u32| after.1[i as usize] - before.1[i as usize];
    let (dc, dp, db) = (
        after.0.conns - before.0.conns,
        after.0.inpkts - before.0.inpkts,
        after.0.inbytes - before.0.inbytes,
    );
    let flows = UDP_FLOWS as u64;
    let (want_conns, ok) = match w {
        Work::Conns => (
            o.attempts,
            dc == o.attempts && d(path::FWD_NEW) == o.attempts,
        ),
        Work::Udp => (
            flows,
            dc == flows && d(path::FWD_NEW) == flows && dp >= o.answered && dp <= o.attempts,
        ),
        Work::Stream => (1, dc == 1 && d(path::FWD_NEW) == 1 && db >= o.count),
    };
    let moved = path_delta(&before.1, &after.1);
    assert!(
        ok,
        "{} {}: fast path counters do not match the traffic: conns +{dc} (want {want_conns}), \
         inpkts +{dp} (answered {}, sent {}), inbytes +{db} (payload {}); paths {moved}",
        path.id(),
        w.id(),
        o.answered,
        o.attempts,
        o.count
    );
    assert!(
        d(path::TX_REDIRECT) + d(path::TX_REDIRECT_NEIGH) > 0,
        "{} {}: no packet was redirected (paths {moved})",
        path.id(),
        w.id()
    );
    json!({ "conns": dc, "inpkts": dp, "inbytes": db, "paths": moved })
}

fn path_delta(before: &[u64], after: &[u64]) -> String {
    use path::*;
    let names = [
        (PASS_NOT_IPV4, "not-ipv4"),
        (PASS_NOT_VIP, "not-vip"),
        (PASS_OTHER_PROTO, "other-proto"),
        (PASS_NO_DEST, "no-dest"),
        (PASS_TCP_NOT_SYN, "tcp-not-syn"),
        (FWD_NEW, "new"),
        (FWD_ESTABLISHED, "established"),
        (REPLY, "reply"),
        (TX_REDIRECT, "redirect"),
        (TX_REDIRECT_NEIGH, "redirect-neigh"),
        (TX_PASS, "tx-pass"),
        (CONN_EXPIRED, "expired"),
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

/// Checks of every run: nothing failed, something got through, rr spread the connections
/// evenly.
fn check_outcome(path: Path, w: Work, o: &Outcome) {
    assert!(
        o.failures == 0,
        "{} {}: {} failures: {:?}",
        path.id(),
        w.id(),
        o.failures,
        o.errors
    );
    assert!(o.count > 0, "{} {}: nothing got through", path.id(), w.id());
    if w == Work::Conns {
        // rr gives every backend its turn; plain forwarding rotates per client thread.
        let lo = *o.per_backend.iter().min().unwrap();
        let hi = *o.per_backend.iter().max().unwrap();
        let slack = if path == Path::Plain {
            TCP_CLIENTS as u64
        } else {
            1
        };
        assert!(
            hi - lo <= slack,
            "{} {}: uneven spread {:?}",
            path.id(),
            w.id(),
            o.per_backend
        );
    }
}

// ---------------------------------------------------------------------------------------
// The fast path, per mode

fn load_fast(net: &Net, mode: AttachMode) -> (FastPath, f64) {
    let t = Instant::now();
    let mut fp = FastPath::load(FastPathConfig {
        max_services: 16,
        max_dests: 64,
        sched_slots: 1 << 12,
        conn_table_size: 1 << 17,
        fib_redirect: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("FastPath::load: {e}"));
    let mut table = Table::new();
    for op in table_ops(FVIP) {
        let changes = table.apply_op(&op).unwrap();
        fp.apply(&changes)
            .unwrap_or_else(|e| panic!("fast path: {op:?}: {e}"));
    }
    net.lb.enter(|| {
        for i in 0..=3 {
            let dev = format!("l{i}");
            if mode == AttachMode::Tc {
                attach_tc(&mut fp, &dev);
                continue;
            }
            fp.attach(&dev, mode, true)
                .unwrap_or_else(|e| panic!("attach {dev} {mode:?}: {e}"));
        }
    });
    if mode == AttachMode::Native {
        // A native redirect into a veth delivers only when the peer runs an XDP program.
        net.client
            .enter(|| fp.attach_pass("c0", AttachMode::Native))
            .unwrap();
        for b in &net.backends {
            b.enter(|| fp.attach_pass("b0", AttachMode::Native))
                .unwrap();
        }
    }
    (fp, t.elapsed().as_secs_f64())
}

/// The tc program at `dev`'s ingress: through tcx where the kernel has it (as xvsd attaches
/// it), else through netlink (clsact), which older kernels such as the VM's 6.1 have. Either
/// link belongs to the program and goes when the FastPath is dropped.
fn attach_tc(fp: &mut FastPath, dev: &str) {
    if fp.attach(dev, AttachMode::Tc, true).is_ok() {
        return;
    }
    use aya::programs::{tc, SchedClassifier, TcAttachType};
    let _ = tc::qdisc_add_clsact(dev);
    let p: &mut SchedClassifier = fp
        .ebpf_mut()
        .program_mut(lb_common::prog_names::TC)
        .expect("tc program")
        .try_into()
        .expect("tc program type");
    p.attach(dev, TcAttachType::Ingress)
        .unwrap_or_else(|e| panic!("attach tc {dev} (netlink): {e:#}"));
}

/// Dropping the FastPath detaches its programs: make sure, so that the next plain or kernel
/// IPVS run has no XDP program in its way.
fn unload_fast(net: &Net, fp: FastPath) {
    drop(fp);
    for (ns, dev) in [(&net.lb, "l0"), (&net.client, "c0")] {
        let out = Command::new(IP)
            .args(["-n", &ns.0, "link", "show", "dev", dev])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(!s.contains("xdp"), "XDP still attached after the drop: {s}");
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and report

fn min_med_max(v: &[f64]) -> [f64; 3] {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    [s[0], med, s[n - 1]]
}

/// p50, p99 and max of round-trip times.
fn rtt_summary(rtts: &[f64]) -> Option<[f64; 3]> {
    if rtts.is_empty() {
        return None;
    }
    let mut s = rtts.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    Some([at(0.5), at(0.99), s[s.len() - 1]])
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: f64) -> String {
    format!("{r:.2}×")
}

fn fmt3(t: [f64; 3], f: fn(f64) -> String) -> String {
    format!("{} / {} / {}", f(t[0]), f(t[1]), f(t[2]))
}

/// values[round][path][workload] -> the JSON summary and the markdown tables.
fn summarise(values: &[Vec<Vec<f64>>]) -> (Value, String) {
    let mut summary = serde_json::Map::new();
    let mut md = String::new();
    for w in WORKS {
        let wi = w as usize;
        md.push_str(&format!("### {} — {}\n\n", w.what(), w.unit()));
        md.push_str(&format!(
            "| path | {} min / median / max | ÷ plain forwarding | ÷ kernel IPVS | rounds \
             faster than plain / than kernel IPVS |\n|---|---|---|---|---|\n",
            w.unit()
        ));
        let mut per_path = serde_json::Map::new();
        for p in PATHS {
            let pi = p.index();
            let of = |q: Option<Path>| -> Vec<f64> {
                values
                    .iter()
                    .map(|r| r[pi][wi] / q.map_or(1.0, |q| r[q.index()][wi]))
                    .collect()
            };
            let (v, vs_plain, vs_ipvs) = (of(None), of(Some(Path::Plain)), of(Some(Path::Kernel)));
            let (a, b, c) = (
                min_med_max(&v),
                min_med_max(&vs_plain),
                min_med_max(&vs_ipvs),
            );
            let faster = |r: &[f64]| r.iter().filter(|&&x| x > 1.0).count();
            let (above_plain, above_ipvs) = (faster(&vs_plain), faster(&vs_ipvs));
            let n = values.len();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} / {} |\n",
                p.what(),
                fmt3(a, fmt_value),
                if p == Path::Plain {
                    "1".into()
                } else {
                    fmt3(b, fmt_ratio)
                },
                if p == Path::Kernel {
                    "1".into()
                } else {
                    fmt3(c, fmt_ratio)
                },
                if p == Path::Plain {
                    "–".into()
                } else {
                    format!("{above_plain} of {n}")
                },
                if p == Path::Kernel {
                    "–".into()
                } else {
                    format!("{above_ipvs} of {n}")
                },
            ));
            per_path.insert(
                p.id().into(),
                json!({
                    "what": p.what(),
                    "per_round": v,
                    "min_median_max": a,
                    "vs_plain": { "per_round": vs_plain, "min_median_max": b },
                    "vs_ipvs": { "per_round": vs_ipvs, "min_median_max": c },
                    "rounds_faster_than_plain": above_plain,
                    "rounds_faster_than_ipvs": above_ipvs,
                }),
            );
        }
        md.push('\n');
        summary.insert(
            w.id().into(),
            json!({ "what": w.what(), "unit": w.unit(), "paths": per_path }),
        );
    }
    (Value::Object(summary), md)
}

// ---------------------------------------------------------------------------------------
// The benchmark

#[test]
fn vm_bench() {
    if std::env::var_os("XVS_IN_VM").is_none() {
        say("note: skipped: a benchmark inside the test VM (cargo xtask bench)");
        return;
    }
    if std::env::var("XVS_VM_BENCH").as_deref() != Ok("1") {
        say("note: skipped: runs only with XVS_VM_BENCH=1 (cargo xtask bench)");
        return;
    }
    let quick = std::env::var("XVS_VM_BENCH_QUICK").as_deref() == Ok("1");
    let (rounds, secs) = if quick { (2usize, 3.0f64) } else { (5, 5.0) };
    let t0 = Instant::now();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let net = Net::for_bench();
    say(&format!(
        "vm-bench: kernel {kernel}, {cpus} vCPU, {rounds} rounds x {secs} s per case; network \
         up in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));

    // Kernel IPVS: the table on 10.0.0.1, programmed over netlink inside the balancer.
    let ipvs = net.lb.enter(|| IpvsClient::new().expect("IPVS netlink"));
    ipvs.flush().unwrap();
    for op in table_ops(KVIP) {
        match &op {
            Op::AddService(k, c) => ipvs.add_service(k, c),
            Op::AddDest(k, d) => ipvs.add_dest(k, d),
            _ => unreachable!(),
        }
        .unwrap_or_else(|e| panic!("kernel IPVS: {op:?}: {e}"));
    }
    let conn_tab = ipvs.info().map(|i| i.conn_tab_size).unwrap_or(0);
    let mut book = KernelBook::new(ipvs);

    // Warm-up (neighbours, caches, first connections), not measured; checked all the same.
    let mut run = 0usize;
    for path in [Path::Plain, Path::Kernel] {
        for w in WORKS {
            let o = run_work(&net, path, w, run, 0.3);
            run += 1;
            check_outcome(path, w, &o);
            if path == Path::Kernel {
                book.book(w, &o);
            }
        }
    }
    book.settle();
    say(&format!(
        "vm-bench: warmed up at {:.1} s",
        t0.elapsed().as_secs_f64()
    ));

    let mut values = vec![vec![vec![0f64; WORKS.len()]; PATHS.len()]; rounds];
    let mut rounds_json = Vec::new();
    let mut load_secs = Vec::new();
    for (r, round_values) in values.iter_mut().enumerate() {
        let order: Vec<Path> = if r % 2 == 0 {
            PATHS.to_vec()
        } else {
            PATHS.iter().rev().copied().collect()
        };
        let mut cases = Vec::new();
        for &path in &order {
            let fast = match path {
                Path::Native => Some(load_fast(&net, AttachMode::Native)),
                Path::Generic => Some(load_fast(&net, AttachMode::Generic)),
                Path::Tc => Some(load_fast(&net, AttachMode::Tc)),
                _ => None,
            };
            if let Some((_, s)) = &fast {
                load_secs.push(*s);
            }
            for w in WORKS {
                let fwd0 = net.lb.snmp("Ip", "ForwDatagrams");
                let snap0 = fast.as_ref().map(|(fp, _)| fast_snapshot(fp, w));
                let o = run_work(&net, path, w, run, secs);
                run += 1;
                check_outcome(path, w, &o);
                let fwd = net.lb.snmp("Ip", "ForwDatagrams") - fwd0;
                let counters = match (&fast, &snap0) {
                    (Some((fp, _)), Some(s0)) => check_fast(path, w, &o, s0, &fast_snapshot(fp, w)),
                    _ if path == Path::Kernel => {
                        book.book(w, &o);
                        json!("checked at the end of the round (the kernel's estimator lags)")
                    }
                    _ => {
                        // Plain forwarding: the balancer forwarded at least the packets that
                        // had to cross it.
                        let min = match w {
                            Work::Conns => 4 * o.count,
                            Work::Udp => 2 * o.answered,
                            Work::Stream => o.count / 1500,
                        };
                        assert!(
                            fwd >= min,
                            "plain {}: the balancer forwarded {fwd} datagrams, want >= {min}",
                            w.id()
                        );
                        json!({ "forwarded_datagrams": fwd })
                    }
                };
                say(&format!(
                    "round {} {:<11} {:<10} {:>8} {:<6} ({} in {:.1} s{}{})",
                    r + 1,
                    path.id(),
                    w.id(),
                    fmt_value(o.value),
                    w.unit(),
                    o.count,
                    o.secs,
                    match rtt_summary(&o.rtts) {
                        Some([a, b, c]) => format!(
                            ", rtt p50/p99/max {a:.0}/{b:.0}/{c:.0} ms, {} resent {:.2?}",
                            o.resent,
                            &o.resent_at[..o.resent_at.len().min(6)]
                        ),
                        None => String::new(),
                    },
                    match counters.get("paths") {
                        Some(Value::String(p)) => format!("; {p}"),
                        _ => format!("; forwarded {fwd}"),
                    }
                ));
                round_values[path.index()][w as usize] = o.value;
                cases.push(json!({
                    "path": path.id(),
                    "workload": w.id(),
                    "value": o.value,
                    "unit": w.unit(),
                    "count": o.count,
                    "attempts": o.attempts,
                    "answered": o.answered,
                    "resent": o.resent,
                    "resent_at_secs": o.resent_at,
                    "unanswered": o.unanswered,
                    "rtt_ms_p50_p99_max": rtt_summary(&o.rtts),
                    "secs": o.secs,
                    "per_backend": o.per_backend,
                    "balancer_forwarded_datagrams": fwd,
                    "counters": counters,
                    "notes": o.errors,
                }));
            }
            if let Some((fp, _)) = fast {
                unload_fast(&net, fp);
            }
        }
        let kernel_checks = book.settle();
        for l in &kernel_checks {
            say(&format!("round {} {l}", r + 1));
        }
        rounds_json.push(json!({
            "round": r + 1,
            "order": order.iter().map(|p| p.id()).collect::<Vec<_>>(),
            "cases": cases,
            "kernel_ipvs_checks": kernel_checks,
        }));
    }

    let (summary, tables) = summarise(&values);
    let mut md = String::from("## Kernel IPVS and the fast path in the qemu VM\n\n");
    md.push_str(&format!(
        "Kernel {kernel} (Debian) under qemu TCG (software emulation, {cpus} vCPU): a client, \
         the balancer and three backends in namespaces joined by veth pairs; the same table on \
         both VIPs (rr over 3 masquerading destinations). {rounds} rounds × {secs} s per case; \
         every round runs every path, in reverse order every other round. Min / median / max \
         over the rounds; ratios are taken within each round, then summarised.\n\n"
    ));
    md.push_str(
        "**Reading.** Under TCG every guest instruction is emulated, so absolute figures are far \
         below real hardware and mean little. The ratio to plain forwarding (the same traffic \
         routed through the same balancer to the backends' own addresses, no NAT, measured in \
         the same round) is the figure that carries over; ratios to kernel IPVS are given too. \
         TCG timing follows the host: a round takes about a minute, whatever else the host \
         runs changes within it, and the ratios spread with it (the host's load average is \
         given below the tables). Read the medians, and trust a difference only when it holds \
         in most rounds (the last column counts them).\n\n",
    );
    md.push_str(
        "**What the figures include.** With one vCPU, each figure is the cost of a \
         transaction to the whole system: the client's and the backends' stacks run on the same \
         CPU as the balancer, so the balancer's share is diluted, and whatever a path changes \
         at the endpoints counts too. XDP on veth is not a NIC driver's fast path: XDP wants \
         256 bytes of headroom and packets from local sockets have less, so generic XDP \
         reallocates their heads and veth's native XDP copies them into new buffers; native \
         mode also moves both ends of each veth to NAPI with the pass-through program on the \
         client and backends (a redirect into a veth is delivered only then) and turns off GSO \
         on the peers. tc works on the skb the stack already has (no copy, GSO packets whole) \
         and redirects into the next veth without any program on the peers. These figures therefore say how the fast path does on veth in an \
         emulated VM against kernel IPVS on the same kernel, not what it does on hardware.\n\n",
    );
    md.push_str(&tables);
    md.push_str(&format!(
        "Checked in every measurement: no connection failed, every answer came from the address \
         asked (the VIP, or the backend for plain forwarding) and named a backend, rr spread \
         the connections evenly; kernel IPVS's counters (read after its 2 s estimator ran) \
         grew by exactly the connections made, its UDP packets by between the answered and the \
         sent requests, its bytes by at least the payload; the fast path's service and \
         packet-path counters likewise, with redirects in every mode; for plain forwarding the \
         balancer's ForwDatagrams grew by at least the packets that had to cross it. Kernel \
         IPVS keeps its default connection table ({conn_tab} buckets) and its connections \
         (TIME_WAIT 2 min) over the whole run; every fast-path run starts with fresh maps \
         (loading and attaching took {} s, not measured).\n",
        fmt3(min_med_max(&load_secs), |s| format!("{s:.1}"))
    ));

    let report = json!({
        "what": "kernel IPVS vs the fast path, end to end in the qemu VM",
        "kernel": kernel,
        "vcpus": cpus,
        "quick": quick,
        "rounds": rounds,
        "secs_per_case": secs,
        "tcp_clients": TCP_CLIENTS,
        "udp_flows": UDP_FLOWS,
        "ipvs_conn_tab_size": conn_tab,
        "fast_path_load_secs": load_secs,
        "paths": PATHS.iter().map(|p| json!({ "id": p.id(), "what": p.what() })).collect::<Vec<_>>(),
        "workloads": WORKS
            .iter()
            .map(|w| json!({ "id": w.id(), "what": w.what(), "unit": w.unit() }))
            .collect::<Vec<_>>(),
        "summary": summary,
        "rounds_detail": rounds_json,
        "bench_secs": t0.elapsed().as_secs_f64(),
    });
    say(&md);
    let out =
        std::path::PathBuf::from(std::env::var("XVS_VM_OUT").unwrap_or_else(|_| "/tmp".into()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("vm-bench.json"),
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(out.join("vm-bench.md"), md).unwrap();
    say(&format!(
        "vm-bench: done in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
}
