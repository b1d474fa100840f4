// Case tables are tuples of (name, flow, path counter, expected counters): clearer inline
// than behind a type alias used once.
#![allow(clippy::type_complexity)]
//! Item 1: the per-packet cost of the compiled BPF programs through BPF_PROG_TEST_RUN.
//!
//! Every case runs through both balancer programs, `xvs_xdp` and `xvs_tc`, each against the
//! floor of its own hook (the trivial `xvs_pass` or `xvs_tc_pass`). Two methods, each with its
//! own floor measured the same way in the same round:
//! * `calls` (Katran's): many calls with repeat = 1, each on a fresh copy of the input, the
//!   kernel-reported durations averaged. Every case can be measured this way, new connections
//!   included (a different client per call). It carries the kernel's fixed per-call overhead.
//! * `repeat`: one call with a large repeat count. The kernel reruns the program on its own
//!   output, so only cases whose output is again a valid input of the same case are measured:
//!   the floor, the non-VIP packet, and established forward / reply through a "bounce"
//!   connection whose rewrite maps the packet onto itself (same lookups, same rewrite code, same
//!   checksum updates; only the values are unchanged). No per-call overhead.
//!
//! Every measurement checks its packets took the intended path: the PATH_STATS counters must
//! have moved by exactly one per packet on the intended entries and nowhere else, every verdict
//! must be the expected one, every output header the expected rewrite, and for new connections
//! every call must have created its CONNS and REPLIES entries (removed again afterwards, which
//! must find them all).
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use aya::maps::{Array, DevMapHash, HashMap, MapData};
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp};
use lb_common::{
    map_names, path, prog_names, tcp_state, Config, ConnValue, DestValue, FlowKey, ReplyValue,
    CFG_F_FIB_REDIRECT, PROTO_TCP,
};
use lb_user::fastpath::{conns::now_ns, FastPath, FastPathConfig};
use lb_user::model::{Change, Destination, ServiceConfig, ServiceKey};

use super::frame::{self, Flow, FrameOpts};
use super::report::MicroFigure;
use super::stats::{diffs, ratios, Summary};
use super::{BenchResult, Ctx};
use crate::ensure;
use crate::netns::Netns;
use crate::packet::{ACK, SYN, TCP};

pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

/// The hook whose program a case runs through: every case is measured through both, each
/// against the floor of its own hook (a pass-through program of the same type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Xdp,
    Tc,
}

pub const HOOKS: [Hook; 2] = [Hook::Xdp, Hook::Tc];

impl Hook {
    pub fn id(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }

    /// The balancer at this hook.
    pub fn prog(self) -> &'static str {
        match self {
            Hook::Xdp => prog_names::XDP,
            Hook::Tc => prog_names::TC,
        }
    }

    /// The floor: a pass-through program of the same type.
    pub fn pass_prog(self) -> &'static str {
        match self {
            Hook::Xdp => prog_names::XDP_PASS,
            Hook::Tc => prog_names::TC_PASS,
        }
    }
}

/// A loaded program of either hook, run through BPF_PROG_TEST_RUN.
#[derive(Clone, Copy)]
enum Prog<'a> {
    Xdp(&'a Xdp),
    Tc(&'a SchedClassifier),
}

impl Prog<'_> {
    fn test_run(&self, opts: TestRunOptions<'_>) -> Result<TestRunResult, ProgramError> {
        match self {
            Prog::Xdp(p) => p.test_run(opts),
            Prog::Tc(p) => p.test_run(opts),
        }
    }

    /// The verdict in XDP's numbers (tc's TC_ACT_OK is XDP_PASS, TC_ACT_REDIRECT
    /// XDP_REDIRECT), so one expectation serves both hooks; anything else is passed on with
    /// 1000 added, which no check accepts.
    fn verdict(&self, raw: u32) -> u32 {
        match (self, raw) {
            (Prog::Xdp(_), v) => v,
            (Prog::Tc(_), TC_ACT_OK) => XDP_PASS,
            (Prog::Tc(_), TC_ACT_REDIRECT) => XDP_REDIRECT,
            (Prog::Tc(_), v) => 1000 + v,
        }
    }
}

/// Destinations per service.
pub const DESTS: u32 = 10;
const VPORT: u16 = 80;
const RPORT: u16 = 8080;
/// 10.100.0.0 + i: the VIP of service i.
const VIP_BASE: u32 = 0x0a64_0000;
/// 10.64.0.1 + 16 i + j: destination j of service i.
const RIP_BASE: u32 = 0x0a40_0001;
/// Pre-filled connections' clients: 10.160.0.0/16.
const PREFILL_NET: u32 = 0x0aa0_0000;
/// New connections' clients: 10.200.0.0/16.
const NEW_NET: u32 = 0x0ac8_0000;
/// The non-VIP packet goes to 10.250.0.1:80 from 10.161.0.1.
const NOT_VIP: u32 = 0x0afa_0001;
const NOT_VIP_SRC: u32 = 0x0aa1_0001;
/// The bounce connections' client 10.250.1.1.
const BOUNCE_CLIENT: u32 = 0x0afa_0101;
const BOUNCE_FWD_PORT: u16 = 5555;
const BOUNCE_REPLY_PORT: u16 = 5556;
/// Next hop of the FIB case (inside its own namespace).
const FIB_GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];

pub fn vip(i: u32) -> u32 {
    VIP_BASE + i
}

pub fn rip(i: u32, j: u32) -> u32 {
    RIP_BASE + i * 16 + j
}

fn be(a: u32) -> u32 {
    a.to_be()
}

#[derive(Clone, Debug)]
pub struct MicroOpts {
    pub services: Vec<u32>,
    pub conns: Vec<u32>,
    pub rounds: usize,
    /// Calls per round for every case but new connections (method `calls`).
    pub calls: usize,
    /// Calls per round for new connections (each leaves two map entries until cleaned up).
    pub new_calls: usize,
    /// Repetitions of the one call per case and round (method `repeat`).
    pub repeat: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct DestRef {
    id: u32,
    gen: u32,
}

/// What a case is, for the report.
pub struct CaseInfo {
    pub id: &'static str,
    pub what: &'static str,
}

pub const CASES: &[CaseInfo] = &[
    CaseInfo {
        id: "floor",
        what: "trivial pass-through program of the same hook (`xvs_pass` for XDP, `xvs_tc_pass` for tc): the floor",
    },
    CaseInfo {
        id: "not_vip",
        what: "packet for no VIP (service lookup miss, backend lookup miss)",
    },
    CaseInfo {
        id: "est_fwd",
        what: "established connection, forward (client -> VIP): one flow",
    },
    CaseInfo {
        id: "est_reply",
        what: "established connection, reply (real server -> client): one flow",
    },
    CaseInfo {
        id: "est_fwd_spread",
        what: "established connection, forward: a different connection of the table every packet",
    },
    CaseInfo {
        id: "est_fwd_fib",
        what: "established connection, forward, with the FIB lookup and redirect (XDP_REDIRECT in native mode; bpf_redirect at tc)",
    },
    CaseInfo {
        id: "new_rr",
        what: "new connection (TCP SYN), rr",
    },
    CaseInfo {
        id: "new_wrr",
        what: "new connection (TCP SYN), wrr",
    },
    CaseInfo {
        id: "new_sh",
        what: "new connection (TCP SYN), sh",
    },
];

pub fn case_what(id: &str) -> &'static str {
    CASES
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.what)
        .unwrap_or("")
}

/// One service table loaded into a fast path, with its connection table filled so far.
struct Bench {
    fp: FastPath,
    services: u32,
    dests: Vec<[DestRef; DESTS as usize]>,
    filled: u32,
    /// Clients of new connections: a counter over the whole run, never reused.
    new_seq: u64,
    fib: FibNs,
}

fn svc_key(i: u32) -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::from(vip(i)), VPORT)
}

fn v4(a: &IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(_) => 0,
    }
}

/// Pre-filled connection k: its client, and the service and destination it belongs to.
fn prefill_flow(k: u32, services: u32) -> (u32, u16, u32, u32) {
    let saddr = PREFILL_NET + (k % 65_536);
    let sport = 10_000 + (k / 65_536) as u16;
    let s = k % services;
    let j = (k / services) % DESTS;
    (saddr, sport, s, j)
}

fn new_client(g: u64) -> (u32, u16) {
    (
        NEW_NET + (g % 65_536) as u32,
        10_000 + ((g / 65_536) % 50_000) as u16,
    )
}

fn flow_key(saddr: u32, daddr: u32, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        saddr: be(saddr),
        daddr: be(daddr),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

fn tcp(saddr: u32, sport: u16, daddr: u32, dport: u16) -> Flow {
    Flow {
        proto: TCP,
        saddr,
        sport,
        daddr,
        dport,
    }
}

fn opts(flags: u8) -> FrameOpts {
    FrameOpts {
        tcp_flags: flags,
        ..Default::default()
    }
}

/// A namespace where the FIB knows a route and a neighbour for destination 0 of service 0,
/// so the FIB case can be measured (BPF_PROG_TEST_RUN does the lookup in the caller's
/// namespace). Deleted on drop.
struct FibNs {
    ns: Netns,
    ifindex: u32,
}

impl FibNs {
    fn new() -> BenchResult<FibNs> {
        let ns = Netns::new("bfib");
        ns.ip(&["link", "add", "fa", "type", "veth", "peer", "name", "fb"]);
        ns.ip(&["link", "set", "fa", "up"]);
        ns.ip(&["link", "set", "fb", "up"]);
        ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "fa"]);
        ns.ip(&[
            "neigh",
            "replace",
            "192.168.77.2",
            "lladdr",
            "02:00:00:00:77:02",
            "dev",
            "fa",
            "nud",
            "permanent",
        ]);
        ns.ip(&[
            "route",
            "add",
            "10.64.0.0/10",
            "via",
            "192.168.77.2",
            "dev",
            "fa",
        ]);
        ns.sysctl("net.ipv4.ip_forward", "1");
        let ifindex = ns
            .enter(|| lb_user::fastpath::ifindex("fa"))
            .ctx("ifindex fa")?;
        Ok(FibNs { ns, ifindex })
    }
}

impl Bench {
    fn load(services: u32) -> BenchResult<Bench> {
        let t = Instant::now();
        let cfg = FastPathConfig {
            max_services: 65_536,
            max_dests: 1 << 19,
            sched_slots: 1 << 22,
            conn_table_size: 1 << 20,
            fib_redirect: false,
            ..Default::default()
        };
        let mut fp = FastPath::load(cfg).ctx("loading the fast path")?;
        let mut changes = Vec::with_capacity(services as usize * (DESTS as usize + 1));
        for i in 0..services {
            let key = svc_key(i);
            changes.push(Change::AddService(key, ServiceConfig::with_scheduler("rr")));
            for j in 0..DESTS {
                // Service 0 (the one measured) has weights 1..10 so wrr and sh differ from rr.
                let w = if i == 0 { j + 1 } else { 1 };
                changes.push(Change::AddDest(
                    key,
                    Destination::masq(Ipv4Addr::from(rip(i, j)), RPORT, w),
                ));
            }
        }
        fp.apply(&changes).ctx("applying the table")?;
        let mut dests = vec![
            [DestRef {
                id: u32::MAX,
                gen: 0
            }; DESTS as usize];
            services as usize
        ];
        {
            let by_id = fp.engine().dest_by_id();
            let m: Array<&MapData, DestValue> =
                Array::try_from(fp.ebpf().map(map_names::DESTS).ok_or("no DESTS map")?)
                    .ctx("DESTS")?;
            for (id, (key, (addr, port))) in by_id {
                let ServiceKey::Inet { addr: vaddr, .. } = key else {
                    continue;
                };
                let i = v4(&vaddr) - VIP_BASE;
                let j = v4(&addr) - rip(i, 0);
                ensure!(
                    port == RPORT && j < DESTS,
                    "unexpected destination {addr}:{port}"
                );
                let d = m.get(&id, 0).ctx("DESTS get")?;
                ensure!(
                    u32::from_be(d.addr) == rip(i, j),
                    "DESTS[{id}] holds {} instead of {}",
                    Ipv4Addr::from(u32::from_be(d.addr)),
                    Ipv4Addr::from(rip(i, j))
                );
                dests[i as usize][j as usize] = DestRef { id, gen: d.gen };
            }
        }
        ensure!(
            dests.iter().flatten().all(|d| d.id != u32::MAX),
            "some destinations are missing from the engine"
        );
        let fib = FibNs::new()?;
        let mut b = Bench {
            fp,
            services,
            dests,
            filled: 0,
            new_seq: 0,
            fib,
        };
        b.add_bounce()?;
        eprintln!(
            "  micro: {services} services x {DESTS} destinations loaded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(b)
    }

    fn conns_map(&mut self) -> BenchResult<HashMap<&mut MapData, FlowKey, ConnValue>> {
        HashMap::try_from(
            self.fp
                .ebpf_mut()
                .map_mut(map_names::CONNS)
                .ok_or("no CONNS map")?,
        )
        .ctx("CONNS")
    }

    fn replies_map(&mut self) -> BenchResult<HashMap<&mut MapData, FlowKey, ReplyValue>> {
        HashMap::try_from(
            self.fp
                .ebpf_mut()
                .map_mut(map_names::REPLIES)
                .ok_or("no REPLIES map")?,
        )
        .ctx("REPLIES")
    }

    fn conn_value(&self, s: u32, j: u32, rip_addr: u32, rport: u16, now: u64) -> ConnValue {
        let d = self.dests[s as usize][j as usize];
        ConnValue {
            dest_id: d.id,
            dest_gen: d.gen,
            rip: be(rip_addr),
            rport: rport.to_be(),
            state: tcp_state::ESTABLISHED,
            flags: 0,
            last_seen_ns: now,
        }
    }

    /// The two bounce connections of the `repeat` method (see the module doc).
    fn add_bounce(&mut self) -> BenchResult<()> {
        let now = now_ns();
        let r00 = rip(0, 0);
        let fwd = self.conn_value(0, 0, vip(0), VPORT, now);
        let rep = self.conn_value(0, 0, r00, RPORT, now);
        let mut c = self.conns_map()?;
        c.insert(
            flow_key(BOUNCE_CLIENT, vip(0), BOUNCE_FWD_PORT, VPORT),
            fwd,
            0,
        )
        .ctx("CONNS insert")?;
        c.insert(
            flow_key(BOUNCE_CLIENT, r00, BOUNCE_REPLY_PORT, RPORT),
            rep,
            0,
        )
        .ctx("CONNS insert")?;
        let mut r = self.replies_map()?;
        r.insert(
            flow_key(r00, BOUNCE_CLIENT, RPORT, BOUNCE_REPLY_PORT),
            ReplyValue {
                vip: be(r00),
                vport: RPORT.to_be(),
                _pad: 0,
            },
            0,
        )
        .ctx("REPLIES insert")?;
        Ok(())
    }

    /// Fills CONNS and REPLIES up to `upto` connections, spread over the services and their
    /// destinations, as if the fast path had created them.
    fn fill(&mut self, upto: u32) -> BenchResult<()> {
        let t = Instant::now();
        let now = now_ns();
        let (from, n) = (self.filled, self.services);
        let vals: Vec<(FlowKey, ConnValue, FlowKey, ReplyValue)> = (from..upto)
            .map(|k| {
                let (saddr, sport, s, j) = prefill_flow(k, n);
                let r = rip(s, j);
                (
                    flow_key(saddr, vip(s), sport, VPORT),
                    self.conn_value(s, j, r, RPORT, now),
                    flow_key(r, saddr, RPORT, sport),
                    ReplyValue {
                        vip: be(vip(s)),
                        vport: VPORT.to_be(),
                        _pad: 0,
                    },
                )
            })
            .collect();
        {
            let mut c = self.conns_map()?;
            for (k, v, _, _) in &vals {
                c.insert(k, v, 0).ctx("CONNS insert")?;
            }
        }
        {
            let mut r = self.replies_map()?;
            for (_, _, k, v) in &vals {
                r.insert(k, v, 0).ctx("REPLIES insert")?;
            }
        }
        self.filled = upto;
        self.check_fill()?;
        eprintln!(
            "  micro: connection table filled to {upto} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The connection table holds exactly the pre-filled connections (plus the two bounce
    /// ones): nothing was evicted or left behind.
    fn check_fill(&mut self) -> BenchResult<()> {
        let want = self.filled as usize;
        let n_conns = self.conns_map()?.keys().count();
        let n_replies = self.replies_map()?.keys().count();
        ensure!(
            n_conns == want + 2 && n_replies == want + 1,
            "connection table holds {n_conns} connections and {n_replies} replies, expected {} and {}",
            want + 2,
            want + 1
        );
        Ok(())
    }

    fn set_scheduler(&mut self, sched: &str) -> BenchResult<()> {
        self.fp
            .apply(&[Change::EditService(
                svc_key(0),
                ServiceConfig::with_scheduler(sched),
            )])
            .ctx("changing the scheduler")
    }

    fn set_fib_redirect(&mut self, on: bool) -> BenchResult<()> {
        let mut m: Array<&mut MapData, Config> = Array::try_from(
            self.fp
                .ebpf_mut()
                .map_mut(map_names::CONFIG)
                .ok_or("no CONFIG")?,
        )
        .ctx("CONFIG")?;
        let mut c = m.get(&0, 0).ctx("CONFIG get")?;
        if on {
            c.flags |= CFG_F_FIB_REDIRECT;
        } else {
            c.flags &= !CFG_F_FIB_REDIRECT;
        }
        m.set(0, c, 0).ctx("CONFIG set")
    }

    fn set_tx_port(&mut self, on: bool) -> BenchResult<()> {
        let ifindex = self.fib.ifindex;
        let mut m: DevMapHash<&mut MapData> = DevMapHash::try_from(
            self.fp
                .ebpf_mut()
                .map_mut(map_names::TX_PORTS)
                .ok_or("no TX_PORTS")?,
        )
        .ctx("TX_PORTS")?;
        if on {
            // The devmap resolves the ifindex in the caller's namespace.
            self.fib
                .ns
                .enter(|| m.insert(ifindex, ifindex, None, 0))
                .ctx("TX_PORTS insert")
        } else {
            m.remove(ifindex).ctx("TX_PORTS remove")
        }
    }

    fn prog(&self, name: &str) -> BenchResult<Prog<'_>> {
        let p = self
            .fp
            .ebpf()
            .program(name)
            .ok_or_else(|| format!("program {name} missing"))?;
        if name == prog_names::TC || name == prog_names::TC_PASS {
            Ok(Prog::Tc(p.try_into().ctx(name)?))
        } else {
            Ok(Prog::Xdp(p.try_into().ctx(name)?))
        }
    }

    fn path_stats(&self) -> BenchResult<Vec<u64>> {
        self.fp.path_stats().ctx("PATH_STATS")
    }
}

/// The name of a PATH_STATS entry (lb_common::path).
pub fn path_name(i: u32) -> &'static str {
    match i {
        path::PASS_NOT_IPV4 => "PASS_NOT_IPV4",
        path::PASS_NOT_VIP => "PASS_NOT_VIP",
        path::PASS_FRAGMENT => "PASS_FRAGMENT",
        path::PASS_IP_OPTIONS => "PASS_IP_OPTIONS",
        path::PASS_TRUNCATED => "PASS_TRUNCATED",
        path::PASS_OTHER_PROTO => "PASS_OTHER_PROTO",
        path::PASS_NO_DEST => "PASS_NO_DEST",
        path::PASS_TCP_NOT_SYN => "PASS_TCP_NOT_SYN",
        path::FWD_NEW => "FWD_NEW",
        path::FWD_ESTABLISHED => "FWD_ESTABLISHED",
        path::REPLY => "REPLY",
        path::TX_REDIRECT => "TX_REDIRECT",
        path::TX_PASS => "TX_PASS",
        path::CONN_EXPIRED => "CONN_EXPIRED",
        path::CONN_NODEST => "CONN_NODEST",
        path::CONN_REUSED => "CONN_REUSED",
        path::REPLY_NO_CONN => "REPLY_NO_CONN",
        path::INSERT_FAILED => "INSERT_FAILED",
        path::PASS_KERNEL_FLOW => "PASS_KERNEL_FLOW",
        path::PASS_MALFORMED => "PASS_MALFORMED",
        path::DROP_TABLE_FULL => "DROP_TABLE_FULL",
        path::TX_REDIRECT_NEIGH => "TX_REDIRECT_NEIGH",
        path::SOCK_NEW => "SOCK_NEW",
        path::SOCK_ESTABLISHED => "SOCK_ESTABLISHED",
        path::SOCK_NO_DEST => "SOCK_NO_DEST",
        path::SOCK_TABLE_FULL => "SOCK_TABLE_FULL",
        path::PASS_CSUM_PARTIAL => "PASS_CSUM_PARTIAL",
        path::FWD_FRAGMENT => "FWD_FRAGMENT",
        path::ICMP_TO_REAL => "ICMP_TO_REAL",
        path::ICMP_TO_CLIENT => "ICMP_TO_CLIENT",
        path::PASS_TTL_EXPIRED => "PASS_TTL_EXPIRED",
        path::FWD_TTL_KEPT => "FWD_TTL_KEPT",
        _ => "?",
    }
}

fn fmt_paths(p: &[(u32, u64)]) -> String {
    p.iter()
        .map(|(i, n)| format!("{} +{n}", path_name(*i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that exactly the expected PATH_STATS counters moved, by exactly the expected counts.
fn check_paths(
    before: &[u64],
    after: &[u64],
    expect: &[(u32, u64)],
    case: &str,
) -> BenchResult<()> {
    for (i, (a, b)) in after.iter().zip(before).enumerate() {
        let d = a - b;
        let want = expect
            .iter()
            .find(|(k, _)| *k as usize == i)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        ensure!(
            d == want,
            "{case}: path counter {} moved by {d}, expected {want} (expected: {})",
            path_name(i as u32),
            fmt_paths(expect)
        );
    }
    Ok(())
}

/// Method `calls`: n calls with repeat = 1; the mean kernel-reported duration in ns.
fn calls(
    prog: Prog<'_>,
    n: usize,
    mut frame: impl FnMut(usize, &mut Vec<u8>),
    mut check: impl FnMut(usize, u32, &[u8]) -> BenchResult<()>,
) -> BenchResult<f64> {
    let mut buf = Vec::with_capacity(128);
    let mut out = vec![0u8; 512];
    let mut total: u128 = 0;
    for i in 0..n {
        frame(i, &mut buf);
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&buf),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .ctx("BPF_PROG_TEST_RUN")?;
        total += r.duration.as_nanos();
        check(
            i,
            prog.verdict(r.return_value),
            &out[..r.data_size_out as usize],
        )?;
    }
    Ok(total as f64 / n as f64)
}

/// Method `repeat`: one call with `repeat` repetitions; (ns per repetition, verdict, output).
fn repeat(prog: Prog<'_>, frame: &[u8], repeat: u32) -> BenchResult<(f64, u32, Vec<u8>)> {
    let mut out = vec![0u8; 512];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .ctx("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    // The kernel reports the mean in whole ns (truncated). A wall-clock mean would have the
    // fraction, but counts the time the thread spends descheduled when the machine is busy.
    Ok((
        r.duration.as_nanos() as f64,
        prog.verdict(r.return_value),
        out,
    ))
}

fn expect_flow(out: &[u8], want: (u32, u16, u32, u16), case: &str) -> BenchResult<()> {
    let got = frame::read_flow(out).ok_or_else(|| format!("{case}: short output"))?;
    ensure!(
        got == want,
        "{case}: output flow {} instead of {}",
        fmt_flow(got),
        fmt_flow(want)
    );
    Ok(())
}

fn fmt_flow(f: (u32, u16, u32, u16)) -> String {
    format!(
        "{}:{} -> {}:{}",
        Ipv4Addr::from(f.0),
        f.1,
        Ipv4Addr::from(f.2),
        f.3
    )
}

/// Per-round results of one configuration.
#[derive(Default)]
struct Rounds {
    /// (hook, method, case) -> ns per round.
    ns: std::collections::BTreeMap<(Hook, &'static str, &'static str), Vec<f64>>,
    /// (hook, method) -> floor per round.
    floor: std::collections::BTreeMap<(Hook, &'static str), Vec<f64>>,
    /// (hook, method, case) -> packets per round and what was checked.
    info: std::collections::BTreeMap<(Hook, &'static str, &'static str), (u64, String)>,
    /// The hook `push` files figures under.
    hook: Option<Hook>,
}

impl Rounds {
    fn push(
        &mut self,
        method: &'static str,
        case: &'static str,
        ns: f64,
        packets: u64,
        checked: String,
    ) {
        let hook = self.hook.unwrap_or(Hook::Xdp);
        self.ns.entry((hook, method, case)).or_default().push(ns);
        self.info.insert((hook, method, case), (packets, checked));
    }

    fn push_floor(&mut self, method: &'static str, ns: f64) {
        let hook = self.hook.unwrap_or(Hook::Xdp);
        self.floor.entry((hook, method)).or_default().push(ns);
    }
}

/// Runs every case of one round on the configuration loaded in `b`, through the program of
/// `hook` against that hook's floor.
fn round(b: &mut Bench, o: &MicroOpts, conns: u32, hook: Hook, rs: &mut Rounds) -> BenchResult<()> {
    rs.hook = Some(hook);
    let (lb_prog, pass_prog) = (hook.prog(), hook.pass_prog());
    let n = o.calls;
    let r00 = rip(0, 0);
    let (c0, p0, _, _) = prefill_flow(0, b.services);
    let est_fwd = tcp(c0, p0, vip(0), VPORT);
    let est_reply = tcp(r00, RPORT, c0, p0);
    let not_vip = tcp(NOT_VIP_SRC, 9999, NOT_VIP, VPORT);
    let mut buf = Vec::new();

    // ---- method `calls` ----
    let floor_frame = {
        frame::write(&mut buf, &est_fwd, &opts(ACK));
        buf.clone()
    };
    let floor_calls = |b: &Bench| -> BenchResult<f64> {
        let before = b.path_stats()?;
        let ns = calls(
            b.prog(pass_prog)?,
            n,
            |_, f| f.clone_from(&floor_frame),
            |_, v, out| {
                ensure!(
                    v == XDP_PASS && out == floor_frame.as_slice(),
                    "floor: verdict {v}"
                );
                Ok(())
            },
        )?;
        check_paths(&before, &b.path_stats()?, &[], "floor")?;
        Ok(ns)
    };
    let floor_a = floor_calls(b)?;

    let simple: [(
        &'static str,
        Flow,
        u8,
        (u32, u16, u32, u16),
        Vec<(u32, u64)>,
    ); 3] = [
        (
            "not_vip",
            not_vip,
            SYN,
            (NOT_VIP_SRC, 9999, NOT_VIP, VPORT),
            vec![(path::PASS_NOT_VIP, n as u64)],
        ),
        (
            "est_fwd",
            est_fwd,
            ACK,
            (c0, p0, r00, RPORT),
            vec![(path::FWD_ESTABLISHED, n as u64), (path::TX_PASS, n as u64)],
        ),
        (
            "est_reply",
            est_reply,
            ACK,
            (vip(0), VPORT, c0, p0),
            vec![(path::REPLY, n as u64), (path::TX_PASS, n as u64)],
        ),
    ];
    for (case, flow, flags, want, paths) in simple {
        frame::write(&mut buf, &flow, &opts(flags));
        let input = buf.clone();
        let before = b.path_stats()?;
        let ns = calls(
            b.prog(lb_prog)?,
            n,
            |_, f| f.clone_from(&input),
            |_, v, out| {
                ensure!(v == XDP_PASS, "{case}: verdict {v}");
                expect_flow(out, want, case)
            },
        )?;
        check_paths(&before, &b.path_stats()?, &paths, case)?;
        rs.push(
            "calls",
            case,
            ns,
            n as u64,
            format!("path counters {} and no other; verdict pass (XDP_PASS, TC_ACT_OK at tc) and the rewritten flow checked on every packet", fmt_paths(&paths)),
        );
    }

    // A different pre-filled connection every packet, in a scattered order.
    {
        let services = b.services;
        let before = b.path_stats()?;
        let flow_of = |i: usize| -> u32 { ((i as u64 * 7919) % conns as u64) as u32 };
        let ns = calls(
            b.prog(lb_prog)?,
            n,
            |i, f| {
                let (saddr, sport, s, _) = prefill_flow(flow_of(i), services);
                frame::write(f, &tcp(saddr, sport, vip(s), VPORT), &opts(ACK));
            },
            |i, v, out| {
                let (saddr, sport, s, j) = prefill_flow(flow_of(i), services);
                ensure!(v == XDP_PASS, "est_fwd_spread: verdict {v}");
                expect_flow(out, (saddr, sport, rip(s, j), RPORT), "est_fwd_spread")
            },
        )?;
        let paths = [(path::FWD_ESTABLISHED, n as u64), (path::TX_PASS, n as u64)];
        check_paths(&before, &b.path_stats()?, &paths, "est_fwd_spread")?;
        rs.push(
            "calls",
            "est_fwd_spread",
            ns,
            n as u64,
            format!("path counters {} and no other; every packet rewritten to its own connection's destination", fmt_paths(&paths)),
        );
    }

    // The FIB lookup and redirect, in the namespace that has a route and a neighbour.
    {
        b.set_fib_redirect(true)?;
        b.set_tx_port(true)?;
        frame::write(&mut buf, &est_fwd, &opts(ACK));
        let input = buf.clone();
        let before = b.path_stats()?;
        let prog = b.prog(lb_prog)?;
        let res = b.fib.ns.enter(|| {
            calls(
                prog,
                n,
                |_, f| f.clone_from(&input),
                |_, v, out| {
                    ensure!(
                        v == XDP_REDIRECT,
                        "est_fwd_fib: verdict {v}, expected XDP_REDIRECT"
                    );
                    ensure!(out[0..6] == FIB_GW_MAC, "est_fwd_fib: next hop MAC not set");
                    ensure!(out[14 + 8] == 63, "est_fwd_fib: TTL not decremented");
                    expect_flow(out, (c0, p0, r00, RPORT), "est_fwd_fib")
                },
            )
        });
        let after = b.path_stats()?;
        b.set_tx_port(false)?;
        b.set_fib_redirect(false)?;
        let ns = res?;
        let paths = [
            (path::FWD_ESTABLISHED, n as u64),
            (path::TX_REDIRECT, n as u64),
        ];
        check_paths(&before, &after, &paths, "est_fwd_fib")?;
        rs.push(
            "calls",
            "est_fwd_fib",
            ns,
            n as u64,
            format!("path counters {} and no other; verdict redirect (XDP_REDIRECT, TC_ACT_REDIRECT at tc), next-hop MAC and TTL checked on every packet", fmt_paths(&paths)),
        );
    }

    // New connections: a client never seen before on every call.
    for (case, sched) in [("new_rr", "rr"), ("new_wrr", "wrr"), ("new_sh", "sh")] {
        b.set_scheduler(sched)?;
        let m = o.new_calls;
        let start = b.new_seq;
        b.new_seq += m as u64;
        let mut chosen: Vec<u32> = Vec::with_capacity(m);
        let before = b.path_stats()?;
        let ns = calls(
            b.prog(lb_prog)?,
            m,
            |i, f| {
                let (saddr, sport) = new_client(start + i as u64);
                frame::write(f, &tcp(saddr, sport, vip(0), VPORT), &opts(SYN));
            },
            |i, v, out| {
                let (saddr, sport) = new_client(start + i as u64);
                ensure!(v == XDP_PASS, "{case}: verdict {v}");
                let (s, sp, d, dp) = frame::read_flow(out).ok_or("short output")?;
                ensure!(
                    s == saddr
                        && sp == sport
                        && dp == RPORT
                        && (rip(0, 0)..rip(0, DESTS)).contains(&d),
                    "{case}: output {} is not a destination of service 0",
                    fmt_flow((s, sp, d, dp))
                );
                chosen.push(d);
                Ok(())
            },
        )?;
        let paths = [(path::FWD_NEW, m as u64), (path::TX_PASS, m as u64)];
        check_paths(&before, &b.path_stats()?, &paths, case)?;
        // Every call created its two entries: remove them (all must be found), which also
        // leaves the table as it was.
        let mut missing = 0usize;
        {
            let mut c = b.conns_map()?;
            for i in 0..m {
                let (saddr, sport) = new_client(start + i as u64);
                if c.remove(&flow_key(saddr, vip(0), sport, VPORT)).is_err() {
                    missing += 1;
                }
            }
        }
        {
            let mut r = b.replies_map()?;
            for (i, d) in chosen.iter().enumerate() {
                let (saddr, sport) = new_client(start + i as u64);
                if r.remove(&flow_key(*d, saddr, RPORT, sport)).is_err() {
                    missing += 1;
                }
            }
        }
        ensure!(
            missing == 0,
            "{case}: {missing} connection entries were not created"
        );
        let spread: std::collections::BTreeSet<u32> = chosen.iter().copied().collect();
        ensure!(
            m < 1000 || spread.len() == DESTS as usize,
            "{case}: only {} of {DESTS} destinations chosen over {m} connections",
            spread.len()
        );
        rs.push(
            "calls",
            case,
            ns,
            m as u64,
            format!("path counters {} and no other; every packet rewritten to a destination of the service, all {DESTS} chosen; the CONNS and REPLIES entries of every call found and removed", fmt_paths(&paths)),
        );
    }
    b.set_scheduler("rr")?;
    let floor_b = floor_calls(b)?;
    rs.push_floor("calls", (floor_a + floor_b) / 2.0);
    rs.push(
        "calls",
        "floor",
        (floor_a + floor_b) / 2.0,
        2 * n as u64,
        "verdict pass and output unchanged on every packet; no path counter moved".into(),
    );

    // ---- method `repeat` ----
    let r = o.repeat;
    let floor_rep = |b: &Bench| -> BenchResult<f64> {
        let (ns, v, out) = repeat(b.prog(pass_prog)?, &floor_frame, r)?;
        ensure!(
            v == XDP_PASS && out == floor_frame,
            "floor (repeat): verdict {v}"
        );
        Ok(ns)
    };
    let floor_a = floor_rep(b)?;
    let bounce_fwd = tcp(BOUNCE_CLIENT, BOUNCE_FWD_PORT, vip(0), VPORT);
    let bounce_reply = tcp(r00, RPORT, BOUNCE_CLIENT, BOUNCE_REPLY_PORT);
    let rep_cases: [(&'static str, Flow, u8, Vec<(u32, u64)>); 3] = [
        (
            "not_vip",
            not_vip,
            SYN,
            vec![(path::PASS_NOT_VIP, r as u64)],
        ),
        (
            "est_fwd",
            bounce_fwd,
            ACK,
            vec![(path::FWD_ESTABLISHED, r as u64), (path::TX_PASS, r as u64)],
        ),
        (
            "est_reply",
            bounce_reply,
            ACK,
            vec![(path::REPLY, r as u64), (path::TX_PASS, r as u64)],
        ),
    ];
    for (case, flow, flags, paths) in rep_cases {
        frame::write(&mut buf, &flow, &opts(flags));
        let before = b.path_stats()?;
        let (ns, v, out) = repeat(b.prog(lb_prog)?, &buf, r)?;
        ensure!(v == XDP_PASS, "{case} (repeat): verdict {v}");
        expect_flow(&out, (flow.saddr, flow.sport, flow.daddr, flow.dport), case)?;
        check_paths(&before, &b.path_stats()?, &paths, case)?;
        rs.push(
            "repeat",
            case,
            ns,
            r as u64,
            format!("path counters {} and no other: every repetition took the path; verdict pass, output the same flow (bounce)", fmt_paths(&paths)),
        );
    }
    let floor_b = floor_rep(b)?;
    rs.push_floor("repeat", (floor_a + floor_b) / 2.0);
    rs.push(
        "repeat",
        "floor",
        (floor_a + floor_b) / 2.0,
        2 * r as u64,
        "verdict pass, output unchanged".into(),
    );
    Ok(())
}

/// Runs item 1 over every configuration; figures are appended to `out`.
pub fn run(o: &MicroOpts, out: &mut Vec<MicroFigure>) -> BenchResult<()> {
    super::sys::pin_to_cpu(super::sys::nproc() - 1);
    let res = run_pinned(o, out);
    super::sys::unpin();
    res
}

fn run_pinned(o: &MicroOpts, out: &mut Vec<MicroFigure>) -> BenchResult<()> {
    let mut conns = o.conns.clone();
    conns.sort();
    for &services in &o.services {
        let mut b = Bench::load(services)?;
        for &c in &conns {
            b.fill(c)?;
            let t = Instant::now();
            let mut rs = Rounds::default();
            for _ in 0..o.rounds {
                for hook in HOOKS {
                    round(&mut b, o, c, hook, &mut rs)?;
                }
            }
            b.check_fill()?;
            eprintln!(
                "  micro: {services} services, {c} connections: {} rounds in {:.1} s",
                o.rounds,
                t.elapsed().as_secs_f64()
            );
            for ((hook, method, case), ns) in &rs.ns {
                let floor = &rs.floor[&(*hook, *method)];
                let (packets, checked) = rs.info[&(*hook, *method, *case)].clone();
                out.push(MicroFigure {
                    hook: hook.id().to_string(),
                    method: method.to_string(),
                    case: case.to_string(),
                    what: case_what(case).to_string(),
                    services,
                    conns: c,
                    packets_per_round: packets,
                    ns: Summary::of(ns),
                    baseline: format!(
                        "floor: {} by the same method ({method}) in the same round",
                        hook.pass_prog()
                    ),
                    baseline_ns: Summary::of(floor),
                    net_ns: Summary::of(&diffs(ns, floor)),
                    ratio: Summary::of(&ratios(ns, floor)),
                    rounds_ns: ns.clone(),
                    rounds_baseline_ns: floor.clone(),
                    checked,
                });
            }
            for hook in HOOKS {
                let med = |m: &str, c: &str| {
                    out.iter()
                        .rev()
                        .find(|f| f.hook == hook.id() && f.method == m && f.case == c)
                        .map(|f| f.ns.median)
                        .unwrap_or(0.0)
                };
                eprintln!(
                "    {:<3} calls: floor {:.1}  not_vip {:.1}  est_fwd {:.1}  est_reply {:.1}  spread {:.1}  fib {:.1}  new rr {:.1} wrr {:.1} sh {:.1} ns; repeat: floor {:.1} est_fwd {:.1}",
                hook.id(),
                med("calls", "floor"),
                med("calls", "not_vip"),
                med("calls", "est_fwd"),
                med("calls", "est_reply"),
                med("calls", "est_fwd_spread"),
                med("calls", "est_fwd_fib"),
                med("calls", "new_rr"),
                med("calls", "new_wrr"),
                med("calls", "new_sh"),
                med("repeat", "floor"),
                med("repeat", "est_fwd"),
            );
            }
        }
    }
    Ok(())
}
