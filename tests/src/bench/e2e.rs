//! Item 2: real packets through the balancer's namespace on veth.
//!
//! ```text
//!  client ns                balancer ns                        destination ns 1 and 2
//!  c0 10.10.0.2/16 ── l0 10.10.0.1/16   l1 10.11.1.1/24 ── b0 10.11.1.2-6/24   (5 endpoints)
//!                                       l2 10.11.2.1/24 ── b0 10.11.2.2-6/24   (5 endpoints)
//! ```
//! One such topology per method (its own namespaces, so conntrack or XDP state of one method
//! never touches another), all alive at once; the rounds go through the methods in turn, the
//! same traffic and the same table each time:
//! * `xdp-native`: the fast path in XDP driver mode, forwarding by FIB lookup + XDP_REDIRECT;
//! * `xdp-generic`: the fast path in generic (skb) mode, the kernel routes the rewritten packet;
//! * `tc`: the fast path at the tc hook (tcx ingress), forwarding by FIB lookup + bpf_redirect,
//!   with the socket-level hooks (cgroup connect4 / sendmsg4) balancing the balancer
//!   namespace's own processes, as xvsd runs it by default on veth;
//! * `forward`: no NAT at all, the client sends to the endpoints directly (the upper bound);
//! * `iptables`: kube-proxy iptables-mode rules (iptables-legacy), conntrack NAT;
//! * `nftables`: kube-proxy nftables-mode rules (verdict maps), conntrack NAT.
//!
//! Each method runs as it would be deployed: only `xdp-native` puts the pass-through XDP
//! program on the client's c0 and the endpoints' b0 (a redirect into a veth is delivered only
//! when the peer runs one; the other methods do not need it, and on veth it would make them
//! copy every skb). GRO/GSO/TSO and checksum offloads are off on every veth, so every method
//! handles the same packets one by one, except in the `-offloads` patterns, where the
//! senders (c0, b0) have their default offloads (tx checksum offload, TSO, GSO: packets carry
//! CHECKSUM_PARTIAL and are GSO super-packets, as pods send them). XDP cannot see
//! CHECKSUM_PARTIAL, so those patterns run without the XDP methods.
//!
//! The `host-` patterns are the balancer namespace's own processes talking to a VIP (the
//! node's own clients): new connections, and one bulk stream. `tc` balances them at the
//! socket, `iptables` and `nftables` with the same rules through their OUTPUT hooks, and
//! `forward` is a direct connection to an endpoint (the baseline).
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_common::path;
use lb_user::fastpath::{AttachMode, FastPath, FastPathConfig};

use super::micro::vip;
use super::report::{E2eFigure, E2eRound};
use super::rules::{self, endpoint, EPORT, VPORT};
use super::stats::{ratios, Summary};
use super::sys::{cmd_stdin, CpuSample};
use super::traffic::{
    tcp_sink, udp_sink, Sink, TcpConnects, TcpStreams, UdpFlows, UdpGen, UdpSpec,
};
use super::{BenchResult, Ctx};
use crate::ensure;
use crate::netns::Netns;
use crate::packet::{TCP, UDP};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Forward,
    XdpNative,
    XdpGeneric,
    Tc,
    Iptables,
    Nftables,
}

pub const METHODS: [Method; 6] = [
    Method::Forward,
    Method::XdpNative,
    Method::XdpGeneric,
    Method::Tc,
    Method::Iptables,
    Method::Nftables,
];

impl Method {
    pub fn id(self) -> &'static str {
        match self {
            Method::Forward => "forward",
            Method::XdpNative => "xdp-native",
            Method::XdpGeneric => "xdp-generic",
            Method::Tc => "tc",
            Method::Iptables => "iptables",
            Method::Nftables => "nftables",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Method::Forward => "plain forwarding, no NAT (the upper bound; the baseline)",
            Method::XdpNative => "xvs, XDP native mode (FIB lookup + XDP_REDIRECT)",
            Method::XdpGeneric => "xvs, XDP generic mode (the kernel routes the rewritten packet)",
            Method::Tc => "xvs at the tc hook (tcx ingress; FIB lookup + bpf_redirect), and at the socket (cgroup connect4/sendmsg4) for the balancer's own processes: xvsd's default on veth",
            Method::Iptables => "iptables-legacy, kube-proxy iptables-mode rules, conntrack NAT",
            Method::Nftables => "nftables, kube-proxy nftables-mode rules, conntrack NAT",
        }
    }

    fn tag(self) -> char {
        match self {
            Method::Forward => 'f',
            Method::XdpNative => 'n',
            Method::XdpGeneric => 'g',
            Method::Tc => 'c',
            Method::Iptables => 'i',
            Method::Nftables => 't',
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    UdpOne,
    UdpMany,
    UdpNew,
    TcpOne,
    TcpMany,
    TcpOneOffloads,
    TcpManyOffloads,
    HostConns,
    HostStream,
}

pub const PATTERNS: [Pattern; 9] = [
    Pattern::UdpOne,
    Pattern::UdpMany,
    Pattern::UdpNew,
    Pattern::TcpOne,
    Pattern::TcpMany,
    Pattern::TcpOneOffloads,
    Pattern::TcpManyOffloads,
    Pattern::HostConns,
    Pattern::HostStream,
];

/// Threads opening connections in `host-tcp-conns`.
pub const CONNECT_THREADS: usize = 2;

/// Flows of the "many flows" patterns.
pub const UDP_FLOWS: u32 = 10_000;
pub const TCP_FLOWS: usize = 16;

impl Pattern {
    pub fn id(self) -> &'static str {
        match self {
            Pattern::UdpOne => "udp-1-flow",
            Pattern::UdpMany => "udp-10k-flows",
            Pattern::UdpNew => "udp-new-flows",
            Pattern::TcpOne => "tcp-1-flow",
            Pattern::TcpMany => "tcp-16-flows",
            Pattern::TcpOneOffloads => "tcp-1-flow-offloads",
            Pattern::TcpManyOffloads => "tcp-16-flows-offloads",
            Pattern::HostConns => "host-tcp-conns",
            Pattern::HostStream => "host-tcp-stream",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Pattern::UdpOne => "UDP, one flow, 60-byte frames",
            Pattern::UdpMany => "UDP, 10,000 flows in turn (established after their first packet), 60-byte frames",
            Pattern::UdpNew => "UDP, a flow never seen before on every packet (a new connection each), 60-byte frames",
            Pattern::TcpOne => "TCP, one connection streaming (MSS-sized segments; ACKs come back through the balancer)",
            Pattern::TcpMany => "TCP, 16 connections streaming",
            Pattern::TcpOneOffloads => "TCP, one connection streaming, the senders' default offloads (tx checksum offload, TSO, GSO)",
            Pattern::TcpManyOffloads => "TCP, 16 connections streaming, the senders' default offloads (tx checksum offload, TSO, GSO)",
            Pattern::HostConns => "the balancer namespace's own process opens TCP connections to the VIPs (connect, then close with an RST), 2 threads; `forward`: straight to the endpoints",
            Pattern::HostStream => "the balancer namespace's own process streams over one TCP connection to a VIP (default offloads); `forward`: straight to an endpoint",
        }
    }

    /// The senders keep their default offloads (c0 and b0; the balancer namespace's own
    /// veths always do).
    pub fn offloads(self) -> bool {
        matches!(
            self,
            Pattern::TcpOneOffloads
                | Pattern::TcpManyOffloads
                | Pattern::HostConns
                | Pattern::HostStream
        )
    }

    /// Traffic from the balancer namespace's own process.
    pub fn host(self) -> bool {
        matches!(self, Pattern::HostConns | Pattern::HostStream)
    }

    /// Whether `m` runs this pattern: XDP cannot see CHECKSUM_PARTIAL (its rewrite would
    /// corrupt those packets' checksums), and does not balance the node's own processes.
    pub fn runs(self, m: Method) -> bool {
        !(self.offloads() && matches!(m, Method::XdpNative | Method::XdpGeneric))
    }

    pub fn proto(self) -> u8 {
        match self {
            Pattern::UdpOne | Pattern::UdpMany | Pattern::UdpNew => UDP,
            _ => TCP,
        }
    }

    pub fn unit(self) -> &'static str {
        if self.proto() == UDP {
            "datagrams"
        } else if self == Pattern::HostConns {
            "connections"
        } else {
            "data segments"
        }
    }
}

#[derive(Clone, Debug)]
pub struct E2eOpts {
    pub services: Vec<u32>,
    pub rounds: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub patterns: Vec<Pattern>,
    /// Methods to run (`forward`, the baseline, always runs).
    pub methods: Vec<Method>,
}

impl Pattern {
    pub fn from_id(id: &str) -> Option<Pattern> {
        PATTERNS.iter().copied().find(|p| p.id() == id)
    }
}

impl Method {
    pub fn from_id(id: &str) -> Option<Method> {
        METHODS.iter().copied().find(|m| m.id() == id)
    }
}

const CLIENT: u32 = 0x0a0a_0002;

/// A veth pair with one queue per CPU on each end (a single-queue veth makes every CPU share
/// one XDP ring, which real multi-queue NICs do not), both ends up.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> BenchResult<()> {
    let q = super::sys::nproc().to_string();
    super::sys::cmd(
        "ip",
        &[
            "link",
            "add",
            a_dev,
            "netns",
            &a.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b_dev,
            "netns",
            &b.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ],
    )?;
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
    Ok(())
}

fn mac(ns: &Netns, dev: &str) -> BenchResult<[u8; 6]> {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let s = out
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| format!("no MAC for {dev}: {out}"))?;
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).ctx("MAC")?;
    }
    Ok(m)
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One SNMP counter ("Ip", "ForwDatagrams") of a namespace.
fn snmp(ns: &Netns, group: &str, field: &str) -> BenchResult<u64> {
    let text = ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .ctx("snmp")?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{group}:")))
        .collect();
    ensure!(lines.len() >= 2, "no {group} in snmp");
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == field)
        .ok_or_else(|| format!("no {group} {field}"))?;
    vals[i].parse().ctx("snmp value")
}

/// A topology set up for one method, with the table and the receivers in place.
struct Site {
    method: Method,
    services: u32,
    /// The balancer (XDP methods). Dropped first: detaches while the devices still exist.
    fp: Option<FastPath>,
    sinks: Vec<Sink>,
    client: Netns,
    lb: Netns,
    dests: Vec<Netns>,
    c0_mac: [u8; 6],
    l0_mac: [u8; 6],
    /// Whether c0 and b0 have their default offloads now (set per pattern).
    offloads: std::cell::Cell<bool>,
}

impl Site {
    /// The senders' default offloads on c0 and b0 (tx checksum offload, TSO, GSO), or off.
    fn set_offloads(&self, on: bool) {
        if self.offloads.get() == on {
            return;
        }
        let v = if on { "on" } else { "off" };
        let args = |dev: &'static str| -> Vec<&'static str> {
            if on {
                vec!["-K", dev, "tx", v, "tso", v, "gso", v]
            } else {
                vec!["-K", dev, "tx", v, "gso", v]
            }
        };
        self.client.exec("ethtool", &args("c0"));
        for d in &self.dests {
            d.exec("ethtool", &args("b0"));
        }
        self.offloads.set(on);
    }

    fn new(method: Method, proto: u8, services: u32) -> BenchResult<Site> {
        let t = Instant::now();
        let tag = format!("b{}{}", method.tag(), if proto == TCP { 't' } else { 'u' });
        let client = Netns::new(&format!("{tag}c"));
        let lb = Netns::new(&format!("{tag}l"));
        let dests = vec![
            Netns::new(&format!("{tag}1")),
            Netns::new(&format!("{tag}2")),
        ];
        veth(&client, "c0", &lb, "l0")?;
        client.ip(&["addr", "add", "10.10.0.2/16", "dev", "c0"]);
        client.ip(&["route", "add", "default", "via", "10.10.0.1"]);
        lb.ip(&["addr", "add", "10.10.0.1/16", "dev", "l0"]);
        for (i, d) in dests.iter().enumerate() {
            let k = i + 1;
            let l = format!("l{k}");
            veth(&lb, &l, d, "b0")?;
            lb.ip(&["addr", "add", &format!("10.11.{k}.1/24"), "dev", &l]);
            for h in 2..=6 {
                d.ip(&["addr", "add", &format!("10.11.{k}.{h}/24"), "dev", "b0"]);
            }
            d.ip(&["route", "add", "default", "via", &format!("10.11.{k}.1")]);
        }
        // The balancer's uplink, as a node's default route: its own processes' connect() to a
        // VIP needs a route before the OUTPUT hook's DNAT (iptables, nftables) rewrites it. A
        // VIP packet nothing rewrote goes back to the client (which does not forward), never
        // to an endpoint.
        lb.ip(&["route", "add", "default", "via", "10.10.0.2"]);
        lb.sysctl("net.ipv4.ip_forward", "1");
        for dev in ["all", "default", "l0", "l1", "l2"] {
            lb.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0");
        }
        // The same packets for every method: no offloads that batch or defer work.
        client.exec(
            "ethtool",
            &["-K", "c0", "tx", "off", "gso", "off", "gro", "off"],
        );
        for dev in ["l0", "l1", "l2"] {
            lb.exec("ethtool", &["-K", dev, "gro", "off"]);
        }
        for d in &dests {
            d.exec(
                "ethtool",
                &["-K", "b0", "tx", "off", "gso", "off", "gro", "off"],
            );
        }
        let c0_mac = mac(&client, "c0")?;
        let l0_mac = mac(&lb, "l0")?;
        // Static neighbours: no resolution in the middle of a run.
        client.ip(&[
            "neigh",
            "replace",
            "10.10.0.1",
            "lladdr",
            &fmt_mac(&l0_mac),
            "dev",
            "c0",
            "nud",
            "permanent",
        ]);
        lb.ip(&[
            "neigh",
            "replace",
            "10.10.0.2",
            "lladdr",
            &fmt_mac(&c0_mac),
            "dev",
            "l0",
            "nud",
            "permanent",
        ]);
        for (i, d) in dests.iter().enumerate() {
            let k = i + 1;
            let l = format!("l{k}");
            let b0 = mac(d, "b0")?;
            let lk = mac(&lb, &l)?;
            for h in 2..=6 {
                lb.ip(&[
                    "neigh",
                    "replace",
                    &format!("10.11.{k}.{h}"),
                    "lladdr",
                    &fmt_mac(&b0),
                    "dev",
                    &l,
                    "nud",
                    "permanent",
                ]);
            }
            d.ip(&[
                "neigh",
                "replace",
                &format!("10.11.{k}.1"),
                "lladdr",
                &fmt_mac(&lk),
                "dev",
                "b0",
                "nud",
                "permanent",
            ]);
        }
        let mut fp = None;
        match method {
            Method::XdpNative | Method::XdpGeneric => {
                let native = method == Method::XdpNative;
                let mut f = FastPath::load(FastPathConfig {
                    fib_redirect: native,
                    ..Default::default()
                })
                .ctx("loading the fast path")?;
                f.apply(&rules::xvs_changes(services, proto))
                    .ctx("applying the table")?;
                // UDP connections expire after 1 s (see `reclaim`); the timeout is one
                // comparison per packet whatever its value.
                f.set_timeouts(0, 0, 1).ctx("UDP timeout")?;
                let mode = if native {
                    AttachMode::Native
                } else {
                    AttachMode::Generic
                };
                lb.enter(|| -> BenchResult<()> {
                    for dev in ["l0", "l1", "l2"] {
                        f.attach(dev, mode, native).ctx(&format!("attach {dev}"))?;
                    }
                    Ok(())
                })?;
                if native {
                    // A redirect into a veth is delivered only if the peer runs an XDP program.
                    client
                        .enter(|| f.attach_pass("c0", AttachMode::Native))
                        .ctx("attach pass c0")?;
                    for d in &dests {
                        d.enter(|| f.attach_pass("b0", AttachMode::Native))
                            .ctx("attach pass b0")?;
                    }
                }
                fp = Some(f);
            }
            Method::Tc => {
                let mut f = FastPath::load(FastPathConfig {
                    fib_redirect: true,
                    // Room for every connection the host-conns pattern opens in a run (their
                    // entries expire only after the run).
                    sock_table_size: 1 << 19,
                    ..Default::default()
                })
                .ctx("loading the fast path")?;
                f.apply(&rules::xvs_changes(services, proto))
                    .ctx("applying the table")?;
                // UDP connections expire after 1 s (see `reclaim`); the timeout is one
                // comparison per packet whatever its value.
                f.set_timeouts(0, 0, 1).ctx("UDP timeout")?;
                let cgroup = lb_user::fastpath::sockets::cgroup2_root(std::path::Path::new(
                    "/sys/fs/cgroup",
                ))
                .ctx("cgroup v2")?;
                lb.enter(|| -> BenchResult<()> {
                    for dev in ["l0", "l1", "l2"] {
                        f.attach(dev, AttachMode::Tc, true)
                            .ctx(&format!("attach tc {dev}"))?;
                    }
                    // Sockets of this namespace (the netns cookie is the calling thread's).
                    f.attach_sockets(&cgroup).ctx("attach the socket hooks")
                })?;
                fp = Some(f);
            }
            Method::Iptables => {
                cmd_stdin(
                    "ip",
                    &["netns", "exec", &lb.name, "iptables-legacy-restore"],
                    &rules::iptables_script(services, proto),
                )?;
            }
            Method::Nftables => {
                for s in rules::nft_scripts(services, proto, 500) {
                    cmd_stdin("ip", &["netns", "exec", &lb.name, "nft", "-f", "-"], &s)?;
                }
            }
            Method::Forward => {}
        }
        let sinks = dests
            .iter()
            .map(|d| {
                if proto == TCP {
                    tcp_sink(d, EPORT)
                } else {
                    udp_sink(d, EPORT)
                }
            })
            .collect::<BenchResult<Vec<Sink>>>()?;
        eprintln!(
            "  e2e: {} with {services} {} services set up in {:.1} s",
            method.id(),
            rules::proto_name(proto),
            t.elapsed().as_secs_f64()
        );
        Ok(Site {
            method,
            services,
            fp,
            sinks,
            client,
            lb,
            dests,
            c0_mac,
            l0_mac,
            offloads: std::cell::Cell::new(false),
        })
    }

    /// Deletes the fast path's expired connections, as xvsd does periodically. The connection
    /// table is a hash map that refuses new entries when full (it never evicts): without this,
    /// udp-new-flows (a new connection per packet, hundreds of thousands a second) would fill
    /// it within a few rounds. Run outside the measured window.
    fn reclaim(&mut self) -> BenchResult<()> {
        if let Some(f) = &mut self.fp {
            f.reclaim_expired().ctx("reclaiming expired connections")?;
        }
        Ok(())
    }

    fn delivered(&self) -> Vec<u64> {
        self.sinks.iter().map(|s| s.get()).collect()
    }

    /// What a pattern counts at the receivers: connections accepted (host-tcp-conns), else
    /// bytes (TCP) or datagrams (UDP).
    fn delivered_for(&self, p: Pattern) -> Vec<u64> {
        if p == Pattern::HostConns {
            self.sinks.iter().map(|s| s.accepted()).collect()
        } else {
            self.delivered()
        }
    }

    fn paths(&self) -> BenchResult<Option<Vec<u64>>> {
        match &self.fp {
            Some(f) => Ok(Some(f.path_stats().ctx("PATH_STATS")?)),
            None => Ok(None),
        }
    }

    /// Where the client sends: the endpoints themselves without NAT, else the target VIPs.
    fn udp_targets(&self) -> Vec<(u32, u16)> {
        if self.method == Method::Forward {
            (0..rules::ENDPOINTS)
                .map(|j| (endpoint(j), EPORT))
                .collect()
        } else {
            rules::targets(self.services)
                .into_iter()
                .map(|i| (vip(i), VPORT))
                .collect()
        }
    }

    fn tcp_targets(&self, n: usize) -> Vec<SocketAddrV4> {
        let t = self.udp_targets();
        (0..n)
            .map(|c| {
                let (a, p) = t[c % t.len()];
                SocketAddrV4::new(Ipv4Addr::from(a), p)
            })
            .collect()
    }
}

struct Snap {
    at: Instant,
    sent: u64,
    delivered: Vec<u64>,
    cpu: CpuSample,
}

fn sum(v: &[u64]) -> u64 {
    v.iter().sum()
}

/// One run of one pattern on one site: warm-up, then the measured window.
fn measure(site: &Site, p: Pattern, o: &E2eOpts, seq: &Arc<AtomicU64>) -> BenchResult<E2eRound> {
    site.set_offloads(p.offloads());
    let paths0 = site.paths()?;
    let fwd0 = snmp(&site.lb, "Ip", "ForwDatagrams")?;
    let deliv0 = site.delivered_for(p);
    let rcvbuf0: u64 = if p.proto() == UDP {
        site.dests
            .iter()
            .map(|d| snmp(d, "Udp", "RcvbufErrors"))
            .sum::<BenchResult<u64>>()?
    } else {
        0
    };
    let mut gen_errors = 0u64;
    let (a, b, total_sent, mss) = match p {
        Pattern::UdpOne | Pattern::UdpMany | Pattern::UdpNew => {
            let flows = match p {
                Pattern::UdpOne => UdpFlows::One,
                Pattern::UdpMany => UdpFlows::Many(UDP_FLOWS),
                _ => UdpFlows::New,
            };
            let g = UdpGen::start(
                &site.client,
                UdpSpec {
                    ifname: "c0".into(),
                    src_mac: site.c0_mac,
                    dst_mac: site.l0_mac,
                    client: CLIENT,
                    targets: site.udp_targets(),
                    flows,
                },
                seq.clone(),
            )?;
            std::thread::sleep(o.warmup);
            let snap = |g: &UdpGen| Snap {
                at: Instant::now(),
                sent: g.sent.load(std::sync::atomic::Ordering::Relaxed),
                delivered: site.delivered(),
                cpu: CpuSample::now(),
            };
            let a = snap(&g);
            std::thread::sleep(o.duration);
            let b = snap(&g);
            let (sent, errors) = (g.sent.clone(), g.errors.clone());
            g.stop()?;
            gen_errors = errors.load(std::sync::atomic::Ordering::Relaxed);
            (a, b, sent.load(std::sync::atomic::Ordering::Relaxed), 0u32)
        }
        Pattern::HostConns => {
            for s in &site.sinks {
                s.close_on_accept.store(true, Ordering::SeqCst);
            }
            let c = TcpConnects::start(&site.lb, &site.tcp_targets(10), CONNECT_THREADS);
            std::thread::sleep(o.warmup);
            let snap = |c: &TcpConnects| Snap {
                at: Instant::now(),
                sent: c.made.load(Ordering::Relaxed),
                delivered: site.delivered_for(p),
                cpu: CpuSample::now(),
            };
            let a = snap(&c);
            std::thread::sleep(o.duration);
            let b = snap(&c);
            let (made, errors) = (c.made.clone(), c.errors.clone());
            c.stop();
            // Accept what is still queued before the sinks go back to reading.
            std::thread::sleep(Duration::from_millis(50));
            for s in &site.sinks {
                s.close_on_accept.store(false, Ordering::SeqCst);
            }
            gen_errors = errors.load(Ordering::Relaxed);
            (a, b, made.load(Ordering::Relaxed), 1u32)
        }
        Pattern::TcpOne
        | Pattern::TcpMany
        | Pattern::TcpOneOffloads
        | Pattern::TcpManyOffloads
        | Pattern::HostStream => {
            let n = if matches!(p, Pattern::TcpMany | Pattern::TcpManyOffloads) {
                TCP_FLOWS
            } else {
                1
            };
            let from = if p.host() { &site.lb } else { &site.client };
            let s = TcpStreams::start(from, &site.tcp_targets(n))?;
            std::thread::sleep(o.warmup);
            let snap = || Snap {
                at: Instant::now(),
                sent: 0,
                delivered: site.delivered_for(p),
                cpu: CpuSample::now(),
            };
            let a = snap();
            std::thread::sleep(o.duration);
            let b = snap();
            let mss = s.mss;
            s.stop();
            (a, b, 0, mss)
        }
    };
    // Let in-flight packets land before reading the totals.
    std::thread::sleep(Duration::from_millis(100));
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let per_dest: Vec<u64> = b
        .delivered
        .iter()
        .zip(&a.delivered)
        .map(|(x, y)| x - y)
        .collect();
    let units = |bytes_or_pkts: u64| -> f64 {
        if p.proto() == TCP && p != Pattern::HostConns {
            bytes_or_pkts as f64 / mss as f64
        } else {
            bytes_or_pkts as f64
        }
    };
    let delivered = units(sum(&per_dest));
    let cpu = b.cpu.since(&a.cpu);
    let deliv_total_raw: u64 = sum(&site.delivered_for(p)) - sum(&deliv0);
    let deliv_total = units(deliv_total_raw);
    let fwd = snmp(&site.lb, "Ip", "ForwDatagrams")? - fwd0;
    let m = site.method.id();
    let what = format!("{m} {} ({} services)", p.id(), site.services);
    ensure!(
        delivered > 0.0,
        "{what}: nothing delivered in the window ({} sent in it, {total_sent} in the run, {gen_errors} send errors, {} delivered in the run)",
        b.sent - a.sent,
        deliv_total
    );
    // Traffic to VIP:80 can only reach the endpoints' :8080 sockets through a DNAT: the
    // balancer routes the VIPs back to the client. Many flows must reach both destination namespaces.
    if !matches!(
        p,
        Pattern::UdpOne | Pattern::TcpOne | Pattern::TcpOneOffloads | Pattern::HostStream
    ) {
        ensure!(
            per_dest.iter().all(|d| *d > 0),
            "{what}: not every destination namespace received traffic: {per_dest:?}"
        );
    }
    let mut checked = vec![format!(
        "{} {} delivered to the endpoints' sockets on port {EPORT}{}",
        deliv_total.round(),
        p.unit(),
        if site.method == Method::Forward {
            String::new()
        } else {
            format!(" (sent to VIP port {VPORT}: only a DNAT delivers them)")
        }
    )];
    if p.proto() == UDP {
        ensure!(
            deliv_total_raw <= total_sent,
            "{what}: {deliv_total_raw} delivered but {total_sent} sent"
        );
    }
    if p == Pattern::HostConns {
        ensure!(
            gen_errors * 100 <= total_sent,
            "{what}: {gen_errors} connects failed, {total_sent} succeeded"
        );
        ensure!(
            deliv_total_raw as f64 >= total_sent as f64 * 0.99,
            "{what}: {total_sent} connections made, {deliv_total_raw} accepted by the endpoints"
        );
        checked.push(format!(
            "{total_sent} connections made ({gen_errors} connects failed), {deliv_total_raw} accepted"
        ));
    }
    match (&paths0, site.paths()?) {
        (Some(p0), Some(p1)) if p.host() => {
            let d = |i: u32| p1[i as usize] - p0[i as usize];
            ensure!(
                d(path::SOCK_TABLE_FULL) == 0 && d(path::SOCK_NO_DEST) == 0,
                "{what}: the socket hooks refused {} connections (table full) and found no destination for {}",
                d(path::SOCK_TABLE_FULL),
                d(path::SOCK_NO_DEST)
            );
            let want = if p == Pattern::HostConns {
                total_sent
            } else {
                1
            };
            ensure!(
                d(path::SOCK_NEW) >= want,
                "{what}: {} connections balanced at the socket, {want} made",
                d(path::SOCK_NEW)
            );
            checked.push(format!(
                "socket hooks: {} connections balanced (SOCK_NEW)",
                d(path::SOCK_NEW)
            ));
        }
        (Some(p0), Some(p1)) if p.offloads() => {
            // GSO super-packets: far fewer packets than segments cross the program.
            let d = |i: u32| p1[i as usize] - p0[i as usize];
            let balanced = d(path::FWD_NEW) + d(path::FWD_ESTABLISHED);
            let tx = d(path::TX_REDIRECT) + d(path::TX_REDIRECT_NEIGH);
            ensure!(
                balanced > 0 && d(path::REPLY) > 0,
                "{what}: the fast path balanced {balanced} packets and {} replies",
                d(path::REPLY)
            );
            ensure!(
                tx as f64 >= (balanced + d(path::REPLY)) as f64 * 0.99,
                "{what}: {tx} packets redirected, {balanced} balanced and {} replies",
                d(path::REPLY)
            );
            ensure!(
                (fwd as f64) < 0.01 * balanced as f64 + 100.0,
                "{what}: the kernel forwarded {fwd} packets: tc redirects should bypass it"
            );
            checked.push(format!(
                "fast-path counters: {balanced} packets balanced ({:.1} segments each), {} replies, {tx} redirected; kernel forwarded {fwd}",
                deliv_total / balanced.max(1) as f64,
                d(path::REPLY)
            ));
        }
        (Some(p0), Some(p1)) => {
            let d = |i: u32| p1[i as usize] - p0[i as usize];
            let balanced = d(path::FWD_NEW) + d(path::FWD_ESTABLISHED);
            ensure!(
                balanced as f64 >= deliv_total * 0.99,
                "{what}: the fast path balanced {balanced} packets but {deliv_total} were delivered"
            );
            if p == Pattern::UdpNew {
                ensure!(
                    d(path::FWD_NEW) as f64 >= deliv_total * 0.99,
                    "{what}: only {} new connections for {deliv_total} new flows delivered",
                    d(path::FWD_NEW)
                );
            }
            if p.proto() == TCP {
                ensure!(
                    d(path::REPLY) > 0,
                    "{what}: no reply went through the fast path"
                );
            }
            let redirects = matches!(site.method, Method::XdpNative | Method::Tc);
            let tx = if redirects {
                path::TX_REDIRECT
            } else {
                path::TX_PASS
            };
            let d_tx = if redirects {
                d(path::TX_REDIRECT) + d(path::TX_REDIRECT_NEIGH)
            } else {
                d(path::TX_PASS)
            };
            ensure!(
                d_tx as f64 >= deliv_total * 0.99,
                "{what}: {d_tx} packets left by the expected way ({tx}), {deliv_total} delivered"
            );
            if redirects {
                ensure!(
                    (fwd as f64) < 0.01 * deliv_total + 100.0,
                    "{what}: the kernel forwarded {fwd} packets: native mode and tc should bypass it"
                );
            } else {
                ensure!(
                    fwd as f64 >= deliv_total * 0.99,
                    "{what}: the kernel forwarded {fwd} packets, {deliv_total} delivered"
                );
            }
            checked.push(format!(
                "fast-path counters: {balanced} balanced ({} new), {} replies, {} via {}; kernel forwarded {fwd}",
                d(path::FWD_NEW),
                d(path::REPLY),
                d_tx,
                match site.method {
                    Method::Tc => "bpf_redirect",
                    Method::XdpNative => "XDP_REDIRECT",
                    _ => "XDP_PASS to the stack",
                }
            ));
        }
        _ if p.host() => {
            // Local traffic is not forwarded; only a DNAT (or the socket hooks) delivers VIP:80
            // to the endpoints' :8080.
        }
        _ if p.offloads() => {
            ensure!(
                fwd > 0,
                "{what}: the kernel forwarded no packets, {deliv_total} segments delivered"
            );
            checked.push(format!(
                "kernel forwarded {fwd} packets ({:.1} segments each)",
                deliv_total / fwd as f64
            ));
        }
        _ => {
            ensure!(
                fwd as f64 >= deliv_total * 0.99,
                "{what}: the kernel forwarded {fwd} packets, {deliv_total} delivered"
            );
            checked.push(format!("kernel forwarded {fwd} packets"));
        }
    }
    let rcvbuf = if p.proto() == UDP {
        site.dests
            .iter()
            .map(|d| snmp(d, "Udp", "RcvbufErrors"))
            .sum::<BenchResult<u64>>()?
            - rcvbuf0
    } else {
        0
    };
    let sent_w = (b.sent - a.sent) as f64;
    let pkts = delivered.max(1.0);
    Ok(E2eRound {
        pps: delivered / secs,
        sent_pps: if p.proto() == UDP { sent_w / secs } else { 0.0 },
        delivered: delivered.round() as u64,
        seconds: secs,
        cpu_ns_per_pkt: cpu.pipeline_ns / pkts,
        busy_ns_per_pkt: cpu.busy_ns / pkts,
        softirq_ns_per_pkt: cpu.softirq_ns / pkts,
        cpu_utilisation: cpu.pipeline_ns / (secs * 1e9),
        per_dest,
        receiver_drops: rcvbuf,
        generator_errors: gen_errors,
        mbit_s: if p.proto() == TCP && p != Pattern::HostConns {
            delivered * mss as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        },
        checked: checked.join("; "),
    })
}

/// Runs item 2; figures are appended to `out`.
pub fn run(o: &E2eOpts, out: &mut Vec<E2eFigure>) -> BenchResult<()> {
    let seq = Arc::new(AtomicU64::new(0));
    for &n in &o.services {
        for proto in [UDP, TCP] {
            let patterns: Vec<Pattern> = o
                .patterns
                .iter()
                .copied()
                .filter(|p| p.proto() == proto)
                .collect();
            if patterns.is_empty() {
                continue;
            }
            let methods: Vec<Method> = METHODS
                .iter()
                .copied()
                .filter(|m| *m == Method::Forward || o.methods.contains(m))
                .collect();
            let mut sites = methods
                .iter()
                .map(|m| Site::new(*m, proto, n))
                .collect::<BenchResult<Vec<Site>>>()?;
            let mut res: BTreeMap<(Pattern, Method), Vec<E2eRound>> = BTreeMap::new();
            for r in 0..o.rounds {
                for &p in &patterns {
                    for s in sites.iter_mut().filter(|s| p.runs(s.method)) {
                        if p == Pattern::UdpNew {
                            s.reclaim()?;
                        }
                        let x = measure(s, p, o, &seq)?;
                        eprintln!(
                            "  e2e round {}: {n} services {:<14} {:<12} {:>7.3} Mpps  {:>6.0} ns/pkt CPU ({:.2} CPUs){}",
                            r + 1,
                            p.id(),
                            s.method.id(),
                            x.pps / 1e6,
                            x.cpu_ns_per_pkt,
                            x.cpu_utilisation,
                            if x.sent_pps > 0.0 {
                                format!("  offered {:.3} Mpps", x.sent_pps / 1e6)
                            } else {
                                format!("  {:.0} Mbit/s", x.mbit_s)
                            }
                        );
                        res.entry((p, s.method)).or_default().push(x);
                    }
                }
            }
            for &p in &patterns {
                let base = &res[&(p, Method::Forward)];
                let base_pps: Vec<f64> = base.iter().map(|x| x.pps).collect();
                let base_cpu: Vec<f64> = base.iter().map(|x| x.cpu_ns_per_pkt).collect();
                for &m in methods.iter().filter(|m| p.runs(**m)) {
                    let rs = &res[&(p, m)];
                    let pps: Vec<f64> = rs.iter().map(|x| x.pps).collect();
                    let cpu: Vec<f64> = rs.iter().map(|x| x.cpu_ns_per_pkt).collect();
                    let busy: Vec<f64> = rs.iter().map(|x| x.busy_ns_per_pkt).collect();
                    let soft: Vec<f64> = rs.iter().map(|x| x.softirq_ns_per_pkt).collect();
                    let deliv_frac: Vec<f64> = rs
                        .iter()
                        .filter(|x| x.sent_pps > 0.0)
                        .map(|x| x.pps / x.sent_pps)
                        .collect();
                    out.push(E2eFigure {
                        method: m.id().into(),
                        method_what: m.what().into(),
                        pattern: p.id().into(),
                        pattern_what: p.what().into(),
                        unit: p.unit().into(),
                        services: n,
                        seconds_per_round: o.duration.as_secs_f64(),
                        pps: Summary::of(&pps),
                        baseline: "forward (plain forwarding, no NAT): same pattern, same round"
                            .into(),
                        baseline_pps: Summary::of(&base_pps),
                        pps_ratio: Summary::of(&ratios(&pps, &base_pps)),
                        cpu_ns_per_pkt: Summary::of(&cpu),
                        baseline_cpu_ns_per_pkt: Summary::of(&base_cpu),
                        cpu_ratio: Summary::of(&ratios(&cpu, &base_cpu)),
                        machine_busy_ns_per_pkt: Summary::of(&busy),
                        machine_softirq_ns_per_pkt: Summary::of(&soft),
                        delivered_of_offered: Summary::of(&deliv_frac),
                        rounds: rs.clone(),
                    });
                }
            }
            drop(sites);
        }
    }
    Ok(())
}
