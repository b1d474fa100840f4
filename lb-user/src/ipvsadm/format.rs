//! ipvsadm's output, byte for byte, from a [`Snapshot`]: `-L` in all its variants (`-n`,
//! `--stats`, `--rate`, `--exact`, `--thresholds`, `--persistent-conn`, `--tun-info`,
//! `--nosort`, one service, `-c`, `--timeout`) and `-S` (with and without `-n`).
//!
//! What ipvsadm does and this reproduces: services sorted by (fwmark, family, protocol,
//! address, port) and destinations by (address, port), with libipvs's comparisons (32-bit
//! differences, so addresses more than 2^31 apart compare "wrapped") and glibc's merge sort;
//! IPv4 service names cut at 33 characters and destination names at 28 in listings;
//! counters from 10^8 on abbreviated to K/M/G/T (thousands, millions, ...) unless
//! `--exact`, except the CPS/InPPS/OutPPS columns of destinations in `--rate`, which ipvsadm
//! always prints in full; `-S` keeps no thresholds.
//!
//! The only intended difference is the banner line of a full listing, a parameter here:
//! [`xvs_banner`] for xvsadm, [`ipvs_banner`] for ipvsadm's own. With
//! [`ListOptions::engine`] (xvsadm's `--engine`) each service line also ends with the engine
//! serving it (` [fastpath]` or ` [kernel]`); without it nothing else changes.
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::model::{Family, Forward, Protocol, ServiceFlags, ServiceKey};
use crate::snapshot::{ConnView, DestView, EngineKind, ServiceView, Snapshot, Stats};

use super::cnum::ntop6;
use super::names::{Resolver, SystemResolver};
use super::parse::ListOptions;

/// The IPVS version every current kernel reports (0x010201).
pub const IPVS_VERSION: &str = "1.2.1";

/// xvsadm's banner line: `xvs (XDP Virtual Server) version 1.2.1 (size=N)`.
pub fn xvs_banner(conn_tab_size: u32) -> String {
    format!("xvs (XDP Virtual Server) version {IPVS_VERSION} (size={conn_tab_size})")
}

/// ipvsadm's banner line: `IP Virtual Server version 1.2.1 (size=N)`.
pub fn ipvs_banner(conn_tab_size: u32) -> String {
    format!("IP Virtual Server version {IPVS_VERSION} (size={conn_tab_size})")
}

/// Why a listing could not be printed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// `-L -t|-u|-f service` for a service that does not exist (ipvsadm exits 1).
    #[error("No such service")]
    NoSuchService,
}

impl FormatError {
    pub fn exit_code(&self) -> i32 {
        1
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Fmt {
    numeric: bool,
    rule: bool,
    stats: bool,
    rate: bool,
    thresholds: bool,
    persistent_conn: bool,
    tun_info: bool,
    exact: bool,
    nosort: bool,
    engine: bool,
}

impl Fmt {
    fn of(o: &ListOptions) -> Self {
        Fmt {
            numeric: o.numeric,
            rule: false,
            stats: o.stats,
            rate: o.rate,
            thresholds: o.thresholds,
            persistent_conn: o.persistent_conn,
            tun_info: o.tun_info,
            exact: o.exact,
            nosort: o.nosort,
            engine: o.engine,
        }
    }
}

/// Prints what ipvsadm prints for `-L`/`-l` with these options, with `banner` as the first
/// line of a full listing. Names (without `-n`) come from the system, as ipvsadm's do.
pub fn format_list(
    snap: &Snapshot,
    opts: &ListOptions,
    banner: &str,
) -> Result<String, FormatError> {
    format_list_with(snap, opts, banner, &SystemResolver)
}

/// [`format_list`] with the given name lookups.
pub fn format_list_with(
    snap: &Snapshot,
    opts: &ListOptions,
    banner: &str,
    names: &dyn Resolver,
) -> Result<String, FormatError> {
    let f = Fmt::of(opts);
    let mut out = String::new();
    if opts.connections {
        list_conns(&mut out, &snap.conns, &f, names);
    } else if let Some(key) = &opts.service {
        let svc = snap
            .services
            .iter()
            .find(|s| &s.key == key)
            .ok_or(FormatError::NoSuchService)?;
        out.push_str(&title(&f));
        service_entry(&mut out, svc, &f, names);
    } else if opts.timeout {
        let (tcp, fin, udp) = snap.timeouts;
        let _ = writeln!(out, "Timeout (tcp tcpfin udp): {tcp} {fin} {udp}");
    } else {
        out.push_str(banner);
        out.push('\n');
        out.push_str(&title(&f));
        for svc in sorted_services(&snap.services, f.nosort) {
            service_entry(&mut out, svc, &f, names);
        }
    }
    Ok(out)
}

/// Prints what `ipvsadm -S` (`numeric`: `-S -n`) prints: the table as restorable rules.
/// Names (without `-n`) come from the system, as ipvsadm's do.
pub fn format_save(snap: &Snapshot, numeric: bool) -> String {
    format_save_with(snap, numeric, &SystemResolver)
}

/// [`format_save`] with the given name lookups.
pub fn format_save_with(snap: &Snapshot, numeric: bool, names: &dyn Resolver) -> String {
    let f = Fmt {
        numeric,
        rule: true,
        ..Fmt::default()
    };
    let mut out = String::new();
    for svc in sorted_services(&snap.services, false) {
        service_entry(&mut out, svc, &f, names);
    }
    out
}

const TITLE_DEFAULT: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";
const TITLE_TUN_INFO: &str = "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n";

fn title(f: &Fmt) -> String {
    let head = "Prot LocalAddress:Port";
    let remote = "  -> RemoteAddress:Port";
    if f.stats {
        format!(
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{remote}\n",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if f.rate {
        format!(
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{remote}\n",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if f.thresholds {
        format!(
            "{head:<33} {:<10} {:<10} {:<10} {:<10}\n{remote}\n",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if f.persistent_conn {
        format!(
            "{head:<33} {:<9} {:<11} {:<10} {:<10}\n{remote}\n",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if f.tun_info {
        TITLE_TUN_INFO.to_string()
    } else if !f.rule {
        TITLE_DEFAULT.to_string()
    } else {
        String::new()
    }
}

/// ipvsadm's `print_largenum`: 9 columns, abbreviated from 10^8 on unless exact.
pub(crate) fn largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{i:>width$}");
    } else if i < 100_000_000 {
        let _ = write!(out, "{i:>9}");
    } else if i < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", i / 1000);
    } else if i < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", i / 1_000_000);
    } else if i < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", i / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", i / 1_000_000_000_000);
    }
}

fn ntop(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => ntop6(a),
    }
}

/// Cuts like a C string buffer: at most `max` bytes.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// ipvsadm's `addrport_to_anyname`: `addr:port`, IPv6 in brackets; without `-n` the host
/// name (or the address when the lookup fails) and the service name (or the number; always
/// the number when there is no protocol, as for fwmark services).
fn addrport(
    addr: &IpAddr,
    port: u16,
    proto: Option<Protocol>,
    numeric: bool,
    names: &dyn Resolver,
) -> String {
    let (open, close) = if addr.is_ipv4() { ("", "") } else { ("[", "]") };
    let mut s = if numeric {
        format!("{open}{}{close}:{port}", ntop(addr))
    } else {
        let host = names.addr_to_host(addr).unwrap_or_else(|| ntop(addr));
        let svc = proto
            .and_then(|p| names.port_to_service(port, p))
            .unwrap_or_else(|| port.to_string());
        format!("{open}{host}{close}:{svc}")
    };
    // ipvsadm formats into a 60-byte buffer.
    cut(&mut s, 59);
    s
}

fn service_proto(key: &ServiceKey) -> Option<Protocol> {
    match key {
        ServiceKey::Inet { proto, .. } => Some(*proto),
        // libipvs leaves the protocol of a fwmark service 0: ports print as numbers.
        ServiceKey::Fwmark { .. } => None,
    }
}

/// IP_VS_SVC_F_SCHED* as ipvsadm names them for this scheduler.
fn sched_flags_str(sched: &str, flags: u32) -> String {
    let named: &[(u32, &str)] = match sched {
        "sh" => &[
            (ServiceFlags::SCHED1, "sh-fallback"),
            (ServiceFlags::SCHED2, "sh-port"),
        ],
        "mh" => &[
            (ServiceFlags::SCHED1, "mh-fallback"),
            (ServiceFlags::SCHED2, "mh-port"),
        ],
        _ => &[
            (ServiceFlags::SCHED1, "flag-1"),
            (ServiceFlags::SCHED2, "flag-2"),
            (ServiceFlags::SCHED3, "flag-3"),
        ],
    };
    named
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn fwd_name(f: Forward) -> &'static str {
    match f {
        Forward::Masq => "Masq",
        Forward::Local => "Local",
        Forward::Tunnel => "Tunnel",
        Forward::Route => "Route",
        // ipvsadm has no name for it; glibc's printf shows the null pointer so.
        Forward::Bypass => "(null)",
    }
}

fn fwd_switch(f: Forward) -> &'static str {
    match f {
        Forward::Masq => "-m",
        Forward::Tunnel => "-i",
        Forward::Local | Forward::Route => "-g",
        Forward::Bypass => "(null)",
    }
}

const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
const TUN_FLAGS: [&str; 3] = ["-c", "+c", "r+c"];
const TUN_FLAG_OPTS: [&str; 3] = ["--tun-nocsum", "--tun-csum", "--tun-remcsum"];

/// ipvsadm's TunnelInfo column; `None` prints "n/a".
fn tun_info(d: &DestView) -> Option<String> {
    if d.dest.forward != Forward::Tunnel {
        return None;
    }
    let t = d.tunnel.unwrap_or_default();
    let flag = TUN_FLAGS.get(t.flags as usize).copied().unwrap_or("?");
    let mut s = match t.kind {
        0 => TUN_NAMES[0].to_string(),
        1 => format!("{}:{}:{flag}", TUN_NAMES[1], t.port),
        2 => format!("{}:{flag}", TUN_NAMES[2]),
        _ => return None,
    };
    // A 16-byte buffer in ipvsadm.
    cut(&mut s, 15);
    Some(s)
}

fn tunnel_rule(out: &mut String, svc_name: &str, dname: &str, d: &DestView) {
    let t = d.tunnel.unwrap_or_default();
    let sw = fwd_switch(d.dest.forward);
    let w = d.dest.weight as i32;
    let flag = TUN_FLAG_OPTS.get(t.flags as usize).copied().unwrap_or("");
    let head = format!("-a {svc_name} -r {dname} {sw} -w {w}");
    let _ = match t.kind {
        0 => writeln!(out, "{head} --tun-type {}", TUN_NAMES[0]),
        1 => writeln!(
            out,
            "{head} --tun-type {} --tun-port {} {flag}",
            TUN_NAMES[1], t.port
        ),
        2 => writeln!(out, "{head} --tun-type {} {flag}", TUN_NAMES[2]),
        _ => writeln!(out, "{head}"),
    };
}

fn engine_marker(e: EngineKind) -> &'static str {
    match e {
        EngineKind::FastPath => " [fastpath]",
        EngineKind::Kernel => " [kernel]",
    }
}

fn stats5(out: &mut String, s: &Stats, exact: bool, rate: bool) {
    let v = if rate {
        [s.cps, s.inpps, s.outpps, s.inbps, s.outbps]
    } else {
        [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
    };
    for x in v {
        largenum(out, x, exact);
    }
}

/// ipvsadm's `print_service_entry`.
fn service_entry(out: &mut String, s: &ServiceView, f: &Fmt, names: &dyn Resolver) {
    let v6 = s.key.family() == Family::Inet6;
    let proto = service_proto(&s.key);
    let svc_name = match &s.key {
        ServiceKey::Fwmark { mark, .. } => match (f.rule, v6) {
            (true, true) => format!("-f {mark} -6"),
            (true, false) => format!("-f {mark}"),
            (false, true) => format!("FWM  {mark} IPv6"),
            (false, false) => format!("FWM  {mark}"),
        },
        ServiceKey::Inet { proto, addr, port } => {
            let vname = addrport(addr, *port, Some(*proto), f.numeric, names);
            if f.rule {
                let opt = match proto {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                };
                format!("{opt} {vname}")
            } else {
                let mut n = format!("{:<4} {vname}", proto.name());
                if !v6 {
                    cut(&mut n, 33);
                }
                n
            }
        }
    };
    let c = &s.config;
    let flags = c.flags.bits();
    let sched_bits = flags & (ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3);
    // The model's "no mask" for IPv6 is 0xffff_ffff; the kernel reports /128.
    let netmask = if v6 && c.netmask == u32::MAX {
        128
    } else {
        c.netmask
    };
    let mask = if !v6 && netmask != u32::MAX {
        Some(std::net::Ipv4Addr::from(netmask).to_string())
    } else if v6 && netmask != 128 {
        Some((netmask as i32).to_string())
    } else {
        None
    };
    let pe = s.pe_name.as_deref().filter(|p| !p.is_empty());

    if f.rule {
        let _ = write!(out, "-A {svc_name} -s {}", c.scheduler);
        if c.flags.persistent {
            let _ = write!(out, " -p {}", c.timeout);
            if let Some(m) = &mask {
                let _ = write!(out, " -M {m}");
            }
        }
        if let Some(pe) = pe {
            let _ = write!(out, " --pe {pe}");
        }
        if c.flags.onepacket {
            out.push_str(" -o");
        }
        if sched_bits != 0 {
            let _ = write!(out, " -b {}", sched_flags_str(&c.scheduler, flags));
        }
    } else if f.stats || f.rate {
        let _ = write!(out, "{svc_name:<33}");
        stats5(out, &s.stats, f.exact, f.rate);
    } else {
        let _ = write!(out, "{svc_name} {}", c.scheduler);
        if sched_bits != 0 {
            let _ = write!(out, " ({})", sched_flags_str(&c.scheduler, flags));
        }
        if c.flags.persistent {
            let _ = write!(out, " persistent {}", c.timeout);
            if let Some(m) = &mask {
                let _ = write!(out, " mask {m}");
            }
            if let Some(pe) = pe {
                let _ = write!(out, " pe {pe}");
            }
        }
        if c.flags.onepacket {
            out.push_str(" ops");
        }
    }
    if f.engine && !f.rule {
        out.push_str(engine_marker(s.engine));
    }
    out.push('\n');

    for d in sorted_dests(&s.dests, f.nosort) {
        let mut dname = addrport(&d.dest.addr, d.dest.port, proto, f.numeric, names);
        if !f.rule && d.dest.addr.is_ipv4() {
            cut(&mut dname, 28);
        }
        let w = d.dest.weight;
        let fwd = fwd_name(d.dest.forward);
        if f.rule {
            if d.dest.forward == Forward::Tunnel {
                tunnel_rule(out, &svc_name, &dname, d);
            } else {
                let sw = fwd_switch(d.dest.forward);
                let _ = writeln!(out, "-a {svc_name} -r {dname} {sw} -w {}", w as i32);
            }
        } else if f.stats {
            let _ = write!(out, "  -> {dname:<28}");
            stats5(out, &d.stats, f.exact, false);
            out.push('\n');
        } else if f.rate {
            let st = &d.stats;
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                st.cps, st.inpps, st.outpps
            );
            largenum(out, st.inbps, f.exact);
            largenum(out, st.outbps, f.exact);
            out.push('\n');
        } else if f.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                d.dest.u_thresh, d.dest.l_thresh, d.active, d.inactive
            );
        } else if f.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                w, d.persist, d.active, d.inactive
            );
        } else if f.tun_info {
            let ti = tun_info(d).unwrap_or_else(|| "n/a".to_string());
            let _ = writeln!(
                out,
                "  -> {dname:<28} {fwd:<7} {ti:<13} {:<6} {:<10} {:<10}",
                w as i32, d.active, d.inactive
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {fwd:<7} {:<6} {:<10} {:<10}",
                w as i32, d.active, d.inactive
            );
        }
    }
}

/// ipvsadm's connection listing (`-c`; ipvsadm reads it from /proc/net/ip_vs_conn).
fn list_conns(out: &mut String, conns: &[ConnView], f: &Fmt, names: &dyn Resolver) {
    out.push_str("IPVS connection entries\n");
    if f.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    let name =
        |sa: &SocketAddr, p: Protocol| addrport(&sa.ip(), sa.port(), Some(p), f.numeric, names);
    for c in conns {
        let expire = format!("{:02}:{:02}", c.expires_in_s / 60, c.expires_in_s % 60);
        // No persistence-engine data on these entries: the short row even with
        // --persistent-conn, as ipvsadm prints such entries.
        let _ = writeln!(
            out,
            "{:<3} {expire:<6} {:<11} {:<18} {:<18} {}",
            c.proto.name(),
            c.state,
            name(&c.client, c.proto),
            name(&c.vip, c.proto),
            name(&c.dest, c.proto)
        );
    }
}

/// glibc's qsort (a stable top-down merge sort) with a C comparator, on indices.
fn merge_sort(idx: &mut [usize], cmp: &dyn Fn(usize, usize) -> i32) {
    let n = idx.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    {
        let (a, b) = idx.split_at_mut(n1);
        merge_sort(a, cmp);
        merge_sort(b, cmp);
    }
    let mut tmp = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(idx[i], idx[j]) <= 0 {
            tmp.push(idx[i]);
            i += 1;
        } else {
            tmp.push(idx[j]);
            j += 1;
        }
    }
    tmp.extend_from_slice(&idx[i..n1]);
    idx[..tmp.len()].copy_from_slice(&tmp);
}

/// An address as libipvs compares it: four host-order words (IPv4 in the first).
fn words(a: &IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(v4) => [u32::from(*v4), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// libipvs's address comparison: the first operand's family decides how many words count;
/// each difference is a 32-bit subtraction read as a signed int.
fn cmp_addr(a: &IpAddr, b: &IpAddr) -> i32 {
    let (wa, wb) = (words(a), words(b));
    let n = if a.is_ipv6() { 4 } else { 1 };
    let mut r = 0;
    for i in 0..n {
        r = wa[i].wrapping_sub(wb[i]) as i32;
        if r != 0 {
            break;
        }
    }
    r
}

/// libipvs's `ipvs_cmp_services`.
fn cmp_services(a: &ServiceView, b: &ServiceView) -> i32 {
    fn parts(s: &ServiceView) -> (u32, i32, i32, IpAddr, u16) {
        let af = match s.key.family() {
            Family::Inet => 2,
            Family::Inet6 => 10,
        };
        match s.key {
            ServiceKey::Inet { proto, addr, port } => (0, af, proto.number() as i32, addr, port),
            // No protocol, address or port: zeros.
            ServiceKey::Fwmark { mark, family } => {
                let zero = match family {
                    Family::Inet => IpAddr::from([0u8; 4]),
                    Family::Inet6 => IpAddr::from([0u8; 16]),
                };
                (mark, af, 0, zero, 0)
            }
        }
    }
    let (fa, afa, pa, aa, porta) = parts(a);
    let (fb, afb, pb, ab, portb) = parts(b);
    let r = fa.wrapping_sub(fb) as i32;
    if r != 0 {
        return r;
    }
    let r = afa - afb;
    if r != 0 {
        return r;
    }
    let r = pa - pb;
    if r != 0 {
        return r;
    }
    let r = cmp_addr(&aa, &ab);
    if r != 0 {
        return r;
    }
    porta as i32 - portb as i32
}

/// libipvs's `ipvs_cmp_dests`.
fn cmp_dests(a: &DestView, b: &DestView) -> i32 {
    let r = cmp_addr(&a.dest.addr, &b.dest.addr);
    if r != 0 {
        return r;
    }
    a.dest.port as i32 - b.dest.port as i32
}

fn sorted_services(services: &[ServiceView], nosort: bool) -> Vec<&ServiceView> {
    let mut idx: Vec<usize> = (0..services.len()).collect();
    if !nosort {
        merge_sort(&mut idx, &|i, j| cmp_services(&services[i], &services[j]));
    }
    idx.into_iter().map(|i| &services[i]).collect()
}

fn sorted_dests(dests: &[DestView], nosort: bool) -> Vec<&DestView> {
    let mut idx: Vec<usize> = (0..dests.len()).collect();
    if !nosort {
        merge_sort(&mut idx, &|i, j| cmp_dests(&dests[i], &dests[j]));
    }
    idx.into_iter().map(|i| &dests[i]).collect()
}
