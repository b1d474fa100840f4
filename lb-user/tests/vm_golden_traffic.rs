//! Real traffic through a real kernel IPVS, in the test VM (`cargo xtask vm-test`): what the
//! real ipvsadm prints for connections (`-L -n -c`) and for non-zero counters, rates and
//! connection counts (`--stats`, `--rate`, `--exact`, ...), together with the kernel state it
//! printed them from. Outside the VM (no XVS_IN_VM) the test returns at once.
//!
//! Namespaces: `gt-cli` (10.10.0.2) -- `gt-lb` (10.10.0.1; the VIPs on a dummy device; IPVS,
//! masquerading) -- `gt-b1` (10.11.1.2), `gt-b2` (10.11.2.2). Each backend runs a small TCP
//! command server on 8080 (`up N`, `down N`, `ping`, `hold`, `bye`) and a UDP echo on 5353.
//! A bulk upload of [`BULK_UP`] bytes pushes byte counters past 10^8, where ipvsadm
//! abbreviates, a download of [`BULK_DOWN`] stays just below; some connections stay open, some
//! close (TIME_WAIT), one is half-closed by each side, one is refused, one never gets an
//! answer; a persistent service holds a template.
//!
//! The listings without `-n` need names: the VM has no /etc/services, so the test writes
//! [`SERVICES`] there, adds [`HOSTS`] to /etc/hosts and has NSS read files only, for the time
//! of the listings.
//!
//! With XVS_RECORD_GOLDEN (`cargo xtask vm-test --record-golden`) the listings and the files
//! of [`GOLDEN_FILES`] go to `$XVS_VM_OUT/kernel-ipvs/traffic/` and from there to
//! tests/data/kernel-ipvs/traffic/. Each `-c` listing comes with /proc/net/ip_vs_conn as read
//! just before and just after it (read again until both reads are equal: the expiry column
//! counts down, so the listing is made when no countdown ticks, see [`Ticks`]); the table
//! listings with `dump.json`, the netlink dump ([`Dump`]) read before and after them (see
//! [`record_table`]). Either way, the listings are then checked live against our formatter
//! (`lb_user::ipvsadm`), as lb-user/tests/ipvsadm_golden_traffic.rs checks the recorded ones
//! on the host; that test includes this file as a module for [`Dump`],
//! [`snapshot_from_dump`] and the checks.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use lb_user::daemon::kernel::parse_proc_conns;
use lb_user::ipvs_nl::{IpvsClient, KernelService};
use lb_user::ipvsadm::{
    format_list_with, ipvs_banner, parse_args_with, Command as Cmd, ListOptions, NumericResolver,
    Resolver, StaticResolver, SystemResolver,
};
use lb_user::model::{
    Destination, Family, Forward, Protocol, ServiceConfig, ServiceFlags, ServiceKey,
};
use lb_user::snapshot::{ConnView, DestView, EngineKind, ServiceView, Snapshot, Stats, TunnelView};

// ---------------------------------------------------------------------------------------
// What is recorded, and how it becomes a Snapshot (shared with the host test)

/// The table, as given to `ipvsadm -R` (`rules.txt`).
pub const RULES: &str = "\
-A -t 10.0.0.10:80 -s rr
-a -t 10.0.0.10:80 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.10:80 -r 10.11.2.2:8080 -m -w 1
-a -t 10.0.0.10:80 -r 10.11.2.2:8081 -m -w 0
-A -u 10.0.0.10:53 -s wrr
-a -u 10.0.0.10:53 -r 10.11.1.2:5353 -m -w 1
-a -u 10.0.0.10:53 -r 10.11.2.2:5353 -m -w 2
-A -t 10.0.0.11:443 -s wlc -p 600
-a -t 10.0.0.11:443 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.11:443 -r 10.11.2.2:8080 -m -w 1
-A -t 10.0.0.12:22 -s rr
-a -t 10.0.0.12:22 -r 10.11.1.2:22 -m -w 1
-a -t 10.0.0.12:22 -r 10.11.2.99:22 -m -w 1
";

/// Table listings recorded from the moment of `dump.json`: (file, ipvsadm arguments).
/// Those showing counters or rates ([`shows_estimates`]) first: they are recorded right after
/// an estimator run, before the next one.
pub const TABLE_LISTINGS: &[(&str, &[&str])] = &[
    ("list-stats.txt", &["-L", "-n", "--stats"]),
    ("list-stats-exact.txt", &["-L", "-n", "--stats", "--exact"]),
    ("list-rate.txt", &["-L", "-n", "--rate"]),
    ("list-rate-exact.txt", &["-L", "-n", "--rate", "--exact"]),
    (
        "list-service-stats.txt",
        &["-L", "-n", "--stats", "-t", "10.0.0.10:80"],
    ),
    ("list.txt", &["-L", "-n"]),
    (
        "list-persistent-conn.txt",
        &["-L", "-n", "--persistent-conn"],
    ),
    ("list-names.txt", &["-L"]),
];

/// Whether a listing shows what the kernel's estimator updates every 2 s (counters, rates).
pub fn shows_estimates(words: &[&str]) -> bool {
    words.iter().any(|w| *w == "--stats" || *w == "--rate")
}

/// Connection listings, each with the copy of /proc/net/ip_vs_conn it was printed from:
/// (listing file, proc file, ipvsadm arguments).
pub const CONN_LISTINGS: &[(&str, &str, &[&str])] = &[
    ("list-conn.txt", "ip_vs_conn.txt", &["-L", "-n", "-c"]),
    (
        "list-conn-persistent.txt",
        "ip_vs_conn-persistent.txt",
        &["-L", "-n", "-c", "--persistent-conn"],
    ),
    ("list-conn-names.txt", "ip_vs_conn-names.txt", &["-L", "-c"]),
];

/// Every file recorded beside the listings and their proc files: the rules, the netlink
/// dump, and the name files in place for the listings without `-n` ([`SERVICES`] as /etc/services, [`HOSTS`] added to
/// the VM's /etc/hosts).
pub const GOLDEN_FILES: &[&str] = &["rules.txt", "dump.json", "services.txt", "hosts.txt"];

/// /etc/services for the listings without `-n` (the VM's initramfs has none): lines of
/// Debian's file for some of the ports in [`RULES`]; 8081 and 9000 have no name.
pub const SERVICES: &str = "\
ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol
domain\t\t53/tcp\t\t\t\t# Domain Name Server
domain\t\t53/udp
http\t\t80/tcp\t\twww\t\t# WorldWideWeb HTTP
https\t\t443/tcp\t\t\t\t# http protocol over TLS/SSL
http-alt\t8080/tcp\twebcache\t# WWW caching service
mdns\t\t5353/udp\t\t\t# Multicast DNS
";

/// Added to /etc/hosts for the listings without `-n`: names for some addresses, two of
/// them longer than ipvsadm's columns (it cuts an IPv4 service at 33 characters and a
/// destination at 28, ports included). The others have no name (no DNS in the VM).
pub const HOSTS: &str = "\
10.0.0.10\tvip.example
10.0.0.11\ta-rather-long-virtual-service-name.example
10.11.1.2\tbackend-one.example.internal
10.10.0.2\tclient
";

/// Answers as the C library gives them from `hosts` (/etc/hosts syntax: the first name of
/// an address) and `services` (/etc/services syntax).
pub fn names_from(hosts: &str, services: &str) -> StaticResolver {
    let mut r = StaticResolver::new().with_services(services);
    for l in hosts.lines() {
        let mut w = l.split('#').next().unwrap_or_default().split_whitespace();
        if let (Some(a), Some(n)) = (w.next(), w.next()) {
            r = r.with_host(a.parse().expect("address"), n);
        }
    }
    r
}

/// Bytes one connection uploads: the service's and a destination's InBytes pass 10^8
/// (ipvsadm prints them abbreviated, `105...K`).
pub const BULK_UP: u64 = 105_000_000;

/// Bytes another connection downloads: OutBytes just below 10^8 even with the headers
/// (printed in full), which pins ipvsadm's threshold between the two.
pub const BULK_DOWN: u64 = 95_000_000;

/// The netlink dump (`lb_user::ipvs_nl::IpvsClient::services`, GET_INFO) in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// GET_INFO's connection table size (the banner's `size=`).
    pub conn_tab_size: u32,
    /// In the kernel's order.
    pub services: Vec<DumpService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpService {
    /// "TCP", "UDP", "SCTP"; None for a fwmark service.
    pub protocol: Option<String>,
    /// None for a fwmark service.
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// 0 unless a fwmark service.
    pub fwmark: u32,
    /// "inet" or "inet6".
    pub family: String,
    pub scheduler: String,
    /// IP_VS_SVC_F_* exactly as the kernel reports them (with HASHED, 0x2).
    pub flags: u32,
    pub timeout: u32,
    /// As the client reports it: an IPv4 mask (host order) or an IPv6 prefix length.
    pub netmask: u32,
    pub pe_name: Option<String>,
    pub stats: DumpStats,
    /// In the kernel's list order (newest first).
    pub dests: Vec<DumpDest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpDest {
    pub addr: IpAddr,
    pub port: u16,
    /// IP_VS_CONN_F_FWD_MASK value: 0 masq, 1 local, 2 tunnel, 3 route, 4 bypass.
    pub fwd: u32,
    pub weight: u32,
    pub u_thresh: u32,
    pub l_thresh: u32,
    pub tun_type: u8,
    pub tun_port: u16,
    pub tun_flags: u16,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: DumpStats,
}

/// IPVS_STATS_ATTR_* (64-bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpStats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

impl From<&lb_user::ipvs_nl::Stats> for DumpStats {
    fn from(s: &lb_user::ipvs_nl::Stats) -> Self {
        DumpStats {
            conns: s.conns,
            inpkts: s.inpkts,
            outpkts: s.outpkts,
            inbytes: s.inbytes,
            outbytes: s.outbytes,
            cps: s.cps,
            inpps: s.inpps,
            outpps: s.outpps,
            inbps: s.inbps,
            outbps: s.outbps,
        }
    }
}

impl From<DumpStats> for Stats {
    fn from(s: DumpStats) -> Self {
        Stats {
            conns: s.conns,
            inpkts: s.inpkts,
            outpkts: s.outpkts,
            inbytes: s.inbytes,
            outbytes: s.outbytes,
            cps: s.cps,
            inpps: s.inpps,
            outpps: s.outpps,
            inbps: s.inbps,
            outbps: s.outbps,
        }
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Inet => "inet",
        Family::Inet6 => "inet6",
    }
}

/// The client's dump as recorded.
pub fn dump_of(conn_tab_size: u32, services: &[KernelService]) -> Dump {
    let services = services
        .iter()
        .map(|ks| {
            let (protocol, addr, port, fwmark) = match ks.service.key {
                ServiceKey::Inet { proto, addr, port } => {
                    (Some(proto.name().to_string()), Some(addr), port, 0)
                }
                ServiceKey::Fwmark { mark, .. } => (None, None, 0, mark),
            };
            let c = &ks.service.config;
            DumpService {
                protocol,
                addr,
                port,
                fwmark,
                family: family_name(ks.service.key.family()).into(),
                scheduler: c.scheduler.clone(),
                flags: ks.raw_flags,
                timeout: c.timeout,
                netmask: c.netmask,
                pe_name: ks.options.pe_name.clone(),
                stats: (&ks.stats).into(),
                dests: ks
                    .dests()
                    .map(|(d, st)| DumpDest {
                        addr: d.addr,
                        port: d.port,
                        fwd: d.forward.code(),
                        weight: d.weight,
                        u_thresh: d.u_thresh,
                        l_thresh: d.l_thresh,
                        tun_type: st.options.tunnel.kind.code(),
                        tun_port: st.options.tunnel.port,
                        tun_flags: st.options.tunnel.flags,
                        active_conns: st.active_conns,
                        inactive_conns: st.inactive_conns,
                        persist_conns: st.persist_conns,
                        stats: (&st.stats).into(),
                    })
                    .collect(),
            }
        })
        .collect();
    Dump {
        conn_tab_size,
        services,
    }
}

/// The Snapshot of a kernel-served table as the dump shows it (what xvsd builds from the same
/// netlink answers): counters, rates and connection counts included, no connections.
pub fn snapshot_from_dump(d: &Dump) -> Snapshot {
    let services = d
        .services
        .iter()
        .map(|s| {
            let family = match s.family.as_str() {
                "inet" => Family::Inet,
                "inet6" => Family::Inet6,
                f => panic!("family {f}"),
            };
            let key = match (&s.protocol, s.addr) {
                (Some(p), Some(addr)) => ServiceKey::Inet {
                    proto: match p.as_str() {
                        "TCP" => Protocol::Tcp,
                        "UDP" => Protocol::Udp,
                        "SCTP" => Protocol::Sctp,
                        p => panic!("protocol {p}"),
                    },
                    addr,
                    port: s.port,
                },
                _ => ServiceKey::Fwmark {
                    family,
                    mark: s.fwmark,
                },
            };
            ServiceView {
                key,
                config: ServiceConfig {
                    scheduler: s.scheduler.clone(),
                    flags: ServiceFlags::from_bits(s.flags),
                    timeout: s.timeout,
                    netmask: s.netmask,
                },
                engine: EngineKind::Kernel,
                stats: s.stats.into(),
                dests: s
                    .dests
                    .iter()
                    .map(|d| {
                        let forward = Forward::from_code(d.fwd).expect("forwarding method");
                        DestView {
                            dest: Destination {
                                addr: d.addr,
                                port: d.port,
                                forward,
                                weight: d.weight,
                                u_thresh: d.u_thresh,
                                l_thresh: d.l_thresh,
                            },
                            active: d.active_conns,
                            inactive: d.inactive_conns,
                            persist: d.persist_conns,
                            stats: d.stats.into(),
                            tunnel: (forward == Forward::Tunnel).then_some(TunnelView {
                                kind: d.tun_type,
                                port: d.tun_port,
                                flags: d.tun_flags,
                            }),
                        }
                    })
                    .collect(),
                pe_name: s.pe_name.clone(),
            }
        })
        .collect();
    Snapshot {
        conn_tab_size: d.conn_tab_size,
        services,
        conns: Vec::new(),
        timeouts: (900, 120, 300),
    }
}

/// The connections of a /proc/net/ip_vs_conn text as xvsd reads them
/// (`lb_user::daemon::kernel::parse_proc_conns`), and the indices (0 = first line after the
/// header) of the lines it leaves out.
pub fn conns_from_proc(proc: &str) -> (Vec<ConnView>, Vec<usize>) {
    let mut lines = proc.lines();
    let header = lines.next().unwrap_or_default();
    let mut conns = Vec::new();
    let mut dropped = Vec::new();
    for (i, l) in lines.enumerate() {
        match parse_proc_conns(&format!("{header}\n{l}\n")).as_slice() {
            [c] => {
                let sa = |(a, p): (Ipv4Addr, u16)| SocketAddr::new(IpAddr::V4(a), p);
                conns.push(ConnView {
                    proto: c.proto,
                    client: sa(c.client),
                    vip: sa(c.vip),
                    dest: sa(c.dest),
                    state: c.state.clone(),
                    expires_in_s: c.expires_in.as_secs(),
                });
            }
            [] => dropped.push(i),
            more => panic!("one line gave {} connections", more.len()),
        }
    }
    (conns, dropped)
}

pub fn list_options(words: &[&str]) -> ListOptions {
    let args: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    match parse_args_with(&args, &NumericResolver).unwrap() {
        Cmd::List(o) => o,
        other => panic!("{words:?} is not a listing: {other:?}"),
    }
}

/// What our formatter prints for `ipvsadm words` of `snap`, with ipvsadm's banner and these
/// name lookups (for listings without `-n`).
pub fn ours(snap: &Snapshot, words: &[&str], names: &dyn Resolver) -> String {
    format_list_with(
        snap,
        &list_options(words),
        &ipvs_banner(snap.conn_tab_size),
        names,
    )
    .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// `Err` naming the first differing line, with both texts.
pub fn same_text(what: &str, ours: &str, theirs: &str) -> Result<(), String> {
    if ours == theirs {
        return Ok(());
    }
    let (o, t): (Vec<&str>, Vec<&str>) = (ours.split('\n').collect(), theirs.split('\n').collect());
    let i = (0..o.len().max(t.len()))
        .find(|&i| o.get(i) != t.get(i))
        .unwrap_or(0);
    Err(format!(
        "{what}: line {} differs\n  ours:    {:?}\n  ipvsadm: {:?}\n--- ours\n{ours}--- ipvsadm\n{theirs}",
        i + 1,
        o.get(i),
        t.get(i)
    ))
}

/// Our table listing of the dump against ipvsadm's.
pub fn check_table(
    dump: &Dump,
    words: &[&str],
    names: &dyn Resolver,
    theirs: &str,
) -> Result<(), String> {
    same_text(
        &format!("ipvsadm {}", words.join(" ")),
        &ours(&snapshot_from_dump(dump), words, names),
        theirs,
    )
}

/// Our connection listing of the proc text against ipvsadm's. ipvsadm prints a row for every
/// line of the file; ours has rows only for the connections xvsd's parser keeps: the rows of
/// the lines it leaves out are taken from ipvsadm's text before comparing, and returned.
pub fn check_conns(
    proc: &str,
    words: &[&str],
    names: &dyn Resolver,
    theirs: &str,
) -> Result<Vec<String>, String> {
    let (conns, dropped) = conns_from_proc(proc);
    let snap = Snapshot {
        conns,
        ..Snapshot::default()
    };
    let rows: Vec<&str> = theirs.lines().collect();
    let n = proc.lines().count().saturating_sub(1);
    if rows.len() != 2 + n {
        return Err(format!(
            "ipvsadm printed {} rows for {n} connections:\n{theirs}",
            rows.len().saturating_sub(2)
        ));
    }
    let skip: BTreeSet<usize> = dropped.iter().map(|i| i + 2).collect();
    let kept: String = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    same_text(
        &format!("ipvsadm {}", words.join(" ")),
        &ours(&snap, words, names),
        &kept,
    )?;
    Ok(skip.iter().map(|&i| rows[i].to_string()).collect())
}

/// What a recording must show to be worth comparing with: problems, none if fine.
pub fn coverage_problems(proc: &str, dump: &Dump, listings: &[(&str, String)]) -> Vec<String> {
    let mut p = Vec::new();
    let states: BTreeSet<&str> = proc
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .collect();
    for s in [
        "ESTABLISHED",
        "TIME_WAIT",
        "FIN_WAIT",
        "CLOSE_WAIT",
        "SYN_RECV",
        "UDP",
        "ASSURED",
    ] {
        if !states.contains(s) {
            p.push(format!("no connection in state {s} (have {states:?})"));
        }
    }
    let text = |name: &str| {
        listings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or_default()
    };
    let abbreviated = |t: &str| {
        t.lines()
            .flat_map(|l| l.split_whitespace())
            .any(|w| w.ends_with('K') && w[..w.len() - 1].parse::<u64>().is_ok())
    };
    if !abbreviated(text("list-stats.txt")) {
        p.push("no K-abbreviated counter in --stats".into());
    }
    let all = || dump.services.iter().flat_map(|s| s.dests.iter());
    if !dump
        .services
        .iter()
        .any(|s| s.stats.cps > 0 && s.stats.inpps > 0 && s.stats.inbps > 0)
    {
        p.push("no service with non-zero rates".into());
    }
    if !all().any(|d| d.active_conns > 0) || !all().any(|d| d.inactive_conns > 0) {
        p.push("no active or no inactive connections".into());
    }
    if !all().any(|d| d.persist_conns > 0) {
        p.push("no persistence template".into());
    }
    p
}

// ---------------------------------------------------------------------------------------
// The VM side

const CLI: &str = "gt-cli";
const LB: &str = "gt-lb";
const B1: &str = "gt-b1";
const B2: &str = "gt-b2";
const IO: Duration = Duration::from_secs(10);
/// Size of the bulk source file.
const CHUNK: usize = 1 << 20;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &str) {
    run("/sbin/ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// Runs `f` with this thread in namespace `ns` (children it starts are there too).
fn enter<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    let target = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on this thread with namespace file descriptors.
    assert_eq!(
        unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    let r = f();
    // SAFETY: as above, back home.
    assert_eq!(
        unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    r
}

/// ipvsadm in the balancer's namespace.
fn ipvsadm_in(args: &[&str], input: Option<&str>) -> String {
    let out = enter(LB, || {
        let mut child = Command::new("ipvsadm")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ipvsadm");
        if let Some(i) = input {
            child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    });
    assert!(
        out.status.success(),
        "ipvsadm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ipvsadm(args: &[&str]) -> String {
    ipvsadm_in(args, None)
}

fn proc_conns() -> String {
    enter(LB, || {
        std::fs::read_to_string("/proc/thread-self/net/ip_vs_conn").unwrap()
    })
}

struct Net;

/// `ip -batch -` (in namespace `ns`, if given): one process for many commands (each `ip`
/// takes a good part of a second under TCG).
fn ip_batch(ns: Option<&str>, cmds: &[String]) {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-batch", "-"]);
    let mut child = Command::new("/sbin/ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cmds.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ip {ns:?} -batch {cmds:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    fn new() -> Net {
        for n in [CLI, LB, B1, B2] {
            if std::path::Path::new(&format!("/run/netns/{n}")).exists() {
                ip(&format!("netns del {n}"));
            }
            ip(&format!("netns add {n}"));
        }
        let veth = |a: &str, an: &str, b: &str, bn: &str| {
            format!("link add {an} netns {a} type veth peer name {bn} netns {b}")
        };
        ip_batch(
            None,
            &[
                veth(CLI, "c0", LB, "l0"),
                veth(LB, "l1", B1, "b0"),
                veth(LB, "l2", B2, "b0"),
            ],
        );
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        ip_batch(
            Some(CLI),
            &s(&[
                "link set lo up",
                "link set c0 up",
                "addr add 10.10.0.2/24 dev c0",
                "route add default via 10.10.0.1",
            ]),
        );
        ip_batch(
            Some(LB),
            &s(&[
                "link set lo up",
                "link set l0 up",
                "link set l1 up",
                "link set l2 up",
                "addr add 10.10.0.1/24 dev l0",
                "addr add 10.11.1.1/24 dev l1",
                "addr add 10.11.2.1/24 dev l2",
                "link add vip0 type dummy",
                "link set vip0 up",
                "addr add 10.0.0.10/32 dev vip0",
                "addr add 10.0.0.11/32 dev vip0",
                "addr add 10.0.0.12/32 dev vip0",
            ]),
        );
        for (k, b) in [(1, B1), (2, B2)] {
            ip_batch(
                Some(b),
                &[
                    "link set lo up".into(),
                    "link set b0 up".into(),
                    format!("addr add 10.11.{k}.2/24 dev b0"),
                    format!("route add default via 10.11.{k}.1"),
                ],
            );
        }
        // /proc/sys/net is the namespace of the thread that opens it.
        enter(LB, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")).unwrap();
        Net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in [CLI, LB, B1, B2] {
            let _ = Command::new("/sbin/ip").args(["netns", "del", n]).status();
        }
    }
}

/// A file in memory to send bulk data from (sendfile: no copying from user space, which is
/// slow under TCG).
fn bulk_source() -> std::fs::File {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is ours.
    let fd = unsafe { libc::memfd_create(c"gt-bulk".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nobody else owns.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(&vec![0x55u8; CHUNK]).unwrap();
    f
}

/// Sends `n` bytes from [`bulk_source`].
fn send_bulk(sock: &TcpStream, n: u64) -> std::io::Result<()> {
    let src = bulk_source();
    let mut left = n;
    while left > 0 {
        let mut off: libc::off_t = 0;
        let k = left.min(CHUNK as u64) as usize;
        // SAFETY: valid descriptors and offset.
        let r = unsafe { libc::sendfile(sock.as_raw_fd(), src.as_raw_fd(), &mut off, k) };
        if r <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        left -= r as u64;
    }
    Ok(())
}

/// Receives `n` bytes, dropping them in the kernel (MSG_TRUNC on TCP: no copying).
fn discard(r: &mut BufReader<TcpStream>, n: u64) -> std::io::Result<()> {
    let buffered = r.buffer().len().min(n as usize);
    r.consume(buffered);
    let mut left = n - buffered as u64;
    while left > 0 {
        let k = left.min(1 << 30) as usize;
        // SAFETY: with MSG_TRUNC a TCP socket writes nothing to the (null) buffer.
        let got = unsafe {
            libc::recv(
                r.get_ref().as_raw_fd(),
                std::ptr::null_mut(),
                k,
                libc::MSG_TRUNC,
            )
        };
        match got {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            g if g < 0 => return Err(std::io::Error::last_os_error()),
            g => left -= g as u64,
        }
    }
    Ok(())
}

/// One connection of the TCP server: a command a line. `up N`: read N bytes, answer "ok";
/// `down N`: send N bytes; `ping`: "pong"; `bye`: close now (the client keeps its end open);
/// `hold`: answer "ok", and when the client closes its end, keep ours open. At the end of the
/// input: close.
fn session(s: TcpStream) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut hold = false;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let mut words = line.split_whitespace();
        let (cmd, n) = (
            words.next().unwrap_or_default(),
            words.next().and_then(|n| n.parse::<u64>().ok()),
        );
        let ok = match (cmd, n) {
            ("up", Some(n)) => discard(&mut r, n).and_then(|_| w.write_all(b"ok\n")),
            ("down", Some(n)) => send_bulk(&w, n),
            ("ping", _) => w.write_all(b"pong\n"),
            ("hold", _) => {
                hold = true;
                w.write_all(b"ok\n")
            }
            _ => return,
        };
        if ok.is_err() {
            return;
        }
    }
    if hold {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn serve(ns: &str) {
    let (t, u) = enter(ns, || {
        (
            TcpListener::bind(("0.0.0.0", 8080)).unwrap(),
            UdpSocket::bind(("0.0.0.0", 5353)).unwrap(),
        )
    });
    std::thread::spawn(move || {
        for s in t.incoming().flatten() {
            std::thread::spawn(move || session(s));
        }
    });
    std::thread::spawn(move || {
        let mut b = [0u8; 1500];
        while let Ok((n, from)) = u.recv_from(&mut b) {
            let _ = u.send_to(&b[..n], from);
        }
    });
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn try_open(vip: [u8; 4], port: u16, timeout: Duration) -> std::io::Result<Client> {
        let s = enter(CLI, || {
            TcpStream::connect_timeout(&SocketAddr::from((vip, port)), timeout)
        })?;
        s.set_read_timeout(Some(IO))?;
        s.set_write_timeout(Some(IO))?;
        Ok(Client {
            w: s.try_clone()?,
            r: BufReader::new(s),
        })
    }

    fn open(vip: [u8; 4], port: u16) -> Client {
        Client::try_open(vip, port, IO).unwrap_or_else(|e| panic!("connect {vip:?}:{port}: {e}"))
    }

    fn reply(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim().to_string()
    }

    fn ask(&mut self, cmd: &str) -> String {
        self.w.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        self.reply()
    }

    fn upload(&mut self, n: u64) {
        self.w.write_all(format!("up {n}\n").as_bytes()).unwrap();
        send_bulk(&self.w, n).unwrap();
        assert_eq!(self.reply(), "ok");
    }

    fn download(&mut self, n: u64) {
        self.w.write_all(format!("down {n}\n").as_bytes()).unwrap();
        discard(&mut self.r, n).unwrap();
    }
}

/// Connections kept open until the recording is done.
struct Held {
    _tcp: Vec<Client>,
    _udp: Vec<UdpSocket>,
}

/// The traffic: bulk both ways, then, in a quick burst, everything else: the bulk
/// connections closed (TIME_WAIT), connections left open, half-closed either way, refused,
/// unanswered; UDP from three sockets; two connections of a persistent service; a dozen
/// short connections. (In one burst, the expiry countdowns of all entries tick at nearly the
/// same moment of each second, leaving time between two ticks to read /proc/net/ip_vs_conn
/// twice around ipvsadm.)
fn traffic() -> Held {
    const VIP: [u8; 4] = [10, 0, 0, 10];
    let t0 = Instant::now();
    let mut up = Client::open(VIP, 80);
    up.upload(BULK_UP);
    let mut down = Client::open(VIP, 80);
    down.download(BULK_DOWN);
    eprintln!(
        "traffic: {} MB up, {} MB down in {:.1} s",
        BULK_UP / 1_000_000,
        BULK_DOWN / 1_000_000,
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    drop(up);
    drop(down);
    let mut tcp = Vec::new();
    for _ in 0..2 {
        let mut c = Client::open(VIP, 80);
        assert_eq!(c.ask("ping"), "pong");
        tcp.push(c);
    }
    // Half-closed by the client (the server holds its end), then by the server.
    let mut half = Client::open(VIP, 80);
    assert_eq!(half.ask("hold"), "ok");
    half.w.shutdown(std::net::Shutdown::Write).unwrap();
    tcp.push(half);
    let mut bye = Client::open(VIP, 80);
    bye.w.write_all(b"bye\n").unwrap();
    let mut rest = Vec::new();
    assert_eq!(bye.r.read_to_end(&mut rest).unwrap(), 0);
    tcp.push(bye);
    // Persistent: both to the destination of the template.
    for _ in 0..2 {
        let mut c = Client::open([10, 0, 0, 11], 443);
        assert_eq!(c.ask("ping"), "pong");
        tcp.push(c);
    }
    // Refused by 10.11.1.2:22, unanswered by 10.11.2.99 (no such host).
    for _ in 0..2 {
        let _ = Client::try_open([10, 0, 0, 12], 22, Duration::from_millis(50));
    }
    let mut udp = Vec::new();
    for i in 0..3u8 {
        let s = enter(CLI, || UdpSocket::bind(("0.0.0.0", 0))).unwrap();
        s.set_read_timeout(Some(IO)).unwrap();
        s.send_to(&[b'x', i], ("10.0.0.10", 53)).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(s.recv(&mut b).unwrap(), 2);
        udp.push(s);
    }
    // Short connections (closed: TIME_WAIT), enough for a non-zero CPS: the estimator shows
    // (cps + 511) >> 10, and each connection in a 2 s window adds 128 to cps.
    for _ in 0..12 {
        let mut c = Client::open(VIP, 80);
        assert_eq!(c.ask("ping"), "pong");
    }
    eprintln!("traffic: the rest in {:.2} s", t1.elapsed().as_secs_f64());
    Held {
        _tcp: tcp,
        _udp: udp,
    }
}

/// /etc/services ([`SERVICES`]) and the additions to /etc/hosts ([`HOSTS`]) for the listings
/// without `-n`; both files as they were again on drop.
struct NameFiles {
    hosts_before: String,
    services_before: Option<String>,
    nsswitch_before: Option<String>,
    /// /etc/hosts as the listings saw it.
    hosts: String,
}

impl NameFiles {
    fn install() -> NameFiles {
        let hosts_before = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let services_before = std::fs::read_to_string("/etc/services").ok();
        if services_before.is_some() {
            eprintln!("note: the VM has an /etc/services: replaced for these listings");
        }
        // Files only: no DNS (there is none to ask), so that a listing takes no longer than
        // a second.
        let nsswitch_before = std::fs::read_to_string("/etc/nsswitch.conf").ok();
        std::fs::write("/etc/nsswitch.conf", "hosts: files\nservices: files\n").unwrap();
        let hosts = format!("{hosts_before}{HOSTS}");
        std::fs::write("/etc/hosts", &hosts).unwrap();
        std::fs::write("/etc/services", SERVICES).unwrap();
        NameFiles {
            hosts_before,
            services_before,
            nsswitch_before,
            hosts,
        }
    }
}

impl Drop for NameFiles {
    fn drop(&mut self) {
        let _ = std::fs::write("/etc/hosts", &self.hosts_before);
        for (path, before) in [
            ("/etc/services", &self.services_before),
            ("/etc/nsswitch.conf", &self.nsswitch_before),
        ] {
            let _ = match before {
                Some(s) => std::fs::write(path, s),
                None => std::fs::remove_file(path),
            };
        }
    }
}

/// When /proc/net/ip_vs_conn changes: when the expiry countdown of an entry ticks, each
/// entry at its own moment of the second (with no traffic, the same moments every second).
struct Ticks {
    t0: Instant,
    /// Offset in the second (from `t0`) of the longest stretch without a tick.
    quiet_from: f64,
}

impl Ticks {
    fn measure() -> Ticks {
        let t0 = Instant::now();
        let mut last = proc_conns();
        let mut ticks = Vec::new();
        while t0.elapsed() < Duration::from_millis(1050) {
            std::thread::sleep(Duration::from_millis(3));
            let p = proc_conns();
            if p != last {
                ticks.push(t0.elapsed().as_secs_f64() % 1.0);
                last = p;
            }
        }
        ticks.sort_by(f64::total_cmp);
        let (mut quiet_from, mut quiet_for) = match (ticks.first(), ticks.last()) {
            (Some(first), Some(last)) => (*last, first + 1.0 - last),
            _ => (0.0, 1.0),
        };
        for w in ticks.windows(2) {
            if w[1] - w[0] > quiet_for {
                (quiet_from, quiet_for) = (w[0], w[1] - w[0]);
            }
        }
        eprintln!(
            "ip_vs_conn: {} ticks a second, {quiet_for:.2} s without",
            ticks.len()
        );
        Ticks { t0, quiet_from }
    }

    /// Waits for the next start of the longest stretch without a tick.
    fn wait_quiet(&self) {
        let now = self.t0.elapsed().as_secs_f64();
        let mut at = now.floor() + self.quiet_from + 0.01;
        while at < now {
            at += 1.0;
        }
        std::thread::sleep(Duration::from_secs_f64(at - now));
    }
}

fn recording() -> bool {
    std::env::var_os("XVS_RECORD_GOLDEN").is_some()
}

fn artifact(name: &str, content: &str) {
    if let Some(dir) = std::env::var_os("XVS_VM_OUT") {
        let p = std::path::Path::new(&dir)
            .join("kernel-ipvs/traffic")
            .join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// `(a, b)` with `a` read before and after `b`, the same both times: what ipvsadm printed
/// and what was recorded are of one moment. `before` runs ahead of each of at most `tries`.
fn consistent<A: PartialEq, B>(
    what: &str,
    tries: usize,
    mut before: impl FnMut(),
    mut a: impl FnMut() -> A,
    mut b: impl FnMut() -> B,
) -> Option<(A, B)> {
    for i in 0..tries {
        before();
        let a1 = a();
        let b1 = b();
        if a() == a1 {
            eprintln!("{what}: consistent on try {}", i + 1);
            return Some((a1, b1));
        }
    }
    eprintln!("{what}: no consistent reading in {tries} tries");
    None
}

/// The dump without what the estimator updates.
fn without_estimates(d: &Dump) -> Dump {
    let mut d = d.clone();
    for s in &mut d.services {
        s.stats = DumpStats::default();
        for x in &mut s.dests {
            x.stats = DumpStats::default();
        }
    }
    d
}

/// The table listings and the dump they were printed from: the dump read before the
/// listings, equal to one read after those showing counters and rates and, but for those,
/// to one read after all. The first try starts at once (right after an estimator run), the
/// others after the next run.
fn record_table(dump: impl Fn() -> Dump, tries: usize) -> Option<(Dump, Vec<String>)> {
    let estimated = TABLE_LISTINGS
        .iter()
        .take_while(|(_, w)| shows_estimates(w))
        .count();
    assert!(TABLE_LISTINGS[estimated..]
        .iter()
        .all(|(_, w)| !shows_estimates(w)));
    for i in 0..tries {
        if i > 0 {
            let d = dump();
            let t = Instant::now();
            while dump() == d && t.elapsed() < Duration::from_millis(2500) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let before = dump();
        let mut texts = Vec::new();
        let mut middle = None;
        for (k, (_, w)) in TABLE_LISTINGS.iter().enumerate() {
            if k == estimated {
                middle = Some(dump());
            }
            texts.push(ipvsadm(w));
        }
        let after = dump();
        if middle.as_ref().unwrap_or(&after) == &before
            && without_estimates(&after) == without_estimates(&before)
        {
            eprintln!("dump: consistent on try {}", i + 1);
            return Some((before, texts));
        }
    }
    eprintln!("dump: no consistent reading in {tries} tries");
    None
}

#[test]
fn traffic_through_kernel_ipvs_as_ipvsadm_lists_it() {
    if std::env::var_os("XVS_IN_VM").is_none() {
        eprintln!("note: skipped: needs a kernel with IPVS (run `cargo xtask vm-test`)");
        return;
    }
    let t0 = Instant::now();
    let _net = Net::new();
    let c = enter(LB, IpvsClient::new).expect("IPVS netlink family");
    ipvsadm_in(&["-R"], Some(RULES));
    serve(B1);
    serve(B2);
    let held = traffic();
    let t_traffic = t0.elapsed();

    let name_files = NameFiles::install();
    // Counters and rates reach the dump when the estimator runs (every 2 s; the rates
    // decay from then on).
    let t_wait = Instant::now();
    loop {
        let bulk = c
            .service(&ServiceKey::tcp([10, 0, 0, 10], 80))
            .unwrap()
            .stats;
        if bulk.inbytes >= BULK_UP && bulk.outbytes >= BULK_DOWN && bulk.cps > 0 {
            break;
        }
        assert!(t_wait.elapsed() < Duration::from_secs(10), "{bulk:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = record_table(
        || dump_of(c.info().unwrap().conn_tab_size, &c.services().unwrap()),
        10,
    );
    // Each connection listing and the file it was made from, in the longest stretch of a
    // second without a tick of the expiry countdowns (measured again after a failed try).
    let mut ticks: Option<Ticks> = None;
    let mut conns: Vec<Option<(String, String)>> = Vec::new();
    for (_, _, words) in CONN_LISTINGS {
        let mut tries = 0;
        conns.push(consistent(
            "ip_vs_conn",
            10,
            || {
                if tries > 0 {
                    ticks = None;
                }
                tries += 1;
                ticks.get_or_insert_with(Ticks::measure).wait_quiet();
            },
            proc_conns,
            || ipvsadm(words),
        ));
    }
    drop(held);
    eprintln!(
        "traffic {:.1} s, recorded after {:.1} s",
        t_traffic.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    // A recording must have everything; a test run compares what it could read
    // consistently (a slow VM may not manage to).
    let complete = table.is_some() && conns.iter().all(Option::is_some);
    if recording() {
        assert!(complete, "no consistent reading to record");
    }
    let mut failures = Vec::new();
    if let (Some((dump, table_texts)), Some((proc, _))) = (&table, &conns[0]) {
        let json = serde_json::to_string_pretty(dump).unwrap() + "\n";
        // The JSON reads back to the same dump.
        assert_eq!(&serde_json::from_str::<Dump>(&json).unwrap(), dump);
        let listings: Vec<(&str, String)> = CONN_LISTINGS
            .iter()
            .zip(&conns)
            .filter_map(|((n, _, _), r)| Some((*n, r.as_ref()?.1.clone())))
            .chain(
                TABLE_LISTINGS
                    .iter()
                    .map(|(n, _)| *n)
                    .zip(table_texts.iter().cloned()),
            )
            .collect();
        if recording() {
            artifact("rules.txt", RULES);
            artifact("dump.json", &json);
            artifact("services.txt", SERVICES);
            artifact("hosts.txt", &name_files.hosts);
            for ((_, proc_file, _), r) in CONN_LISTINGS.iter().zip(&conns) {
                artifact(proc_file, &r.as_ref().unwrap().0);
            }
            for (name, text) in &listings {
                artifact(name, text);
            }
        }
        let problems = coverage_problems(proc, dump, &listings);
        if recording() {
            failures.extend(problems);
        } else if !problems.is_empty() {
            eprintln!("note: this run would not do as a recording: {problems:?}");
        }
    }

    // Our formatter: with the C library's name lookups here (xvsadm's), and with the
    // name files as recorded (the host test's).
    let recorded_names = names_from(&name_files.hosts, SERVICES);
    for names in [&SystemResolver as &dyn Resolver, &recorded_names] {
        for ((_, _, words), r) in CONN_LISTINGS.iter().zip(&conns) {
            let Some((proc, text)) = r else { continue };
            match check_conns(proc, words, names, text) {
                Ok(left_out) if left_out.is_empty() => {}
                Ok(left_out) => failures.push(format!(
                    "ipvsadm {}: rows xvsd's parser cannot give: {left_out:?}",
                    words.join(" ")
                )),
                Err(e) => failures.push(e),
            }
        }
        if let Some((dump, table_texts)) = &table {
            for ((_, words), text) in TABLE_LISTINGS.iter().zip(table_texts) {
                if let Err(e) = check_table(dump, words, names, text) {
                    failures.push(e);
                }
            }
        }
    }
    drop(name_files);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
