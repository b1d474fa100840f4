//! ipvsadm's command line, parsed into the table model.
//!
//! The rules are ipvsadm 1.31's, checked against its source: the first option is the command
//! (`-A`, `-L`, ...; anything else first is a usage error), options are then processed left to
//! right (so `-6` must follow `-f`, and `-r host` without a port takes the service's port as it
//! is at that point), then the command/option compatibility table is checked, then the
//! command's own rules. Defaults are ipvsadm's: scheduler wlc, forwarding `-g` (direct
//! routing), weight 1, persistence timeout 360 s when `-p` has no value, netmask
//! 255.255.255.255 (/128 for IPv6). Error messages are ipvsadm's, word for word.
//!
//! [`parse_args_full`] accepts everything ipvsadm accepts; what the table model cannot hold
//! (a persistence engine, gue/gre tunnel settings) comes back in [`Extras`]. [`parse_args`]
//! and [`parse_restore`] refuse those with [`ParseError::Unsupported`] instead of dropping
//! them.
use std::net::{IpAddr, Ipv4Addr};

use crate::ctl::NumberedOp;
use crate::model::{
    Destination, Family, Forward, Op, Protocol, ServiceConfig, ServiceFlags, ServiceKey,
};
use crate::snapshot::TunnelView;

use super::cnum::{atoi, inet_aton, inet_pton4, inet_pton6, string_to_number, strtol};
use super::names::{Resolver, SystemResolver};
use super::popt::{Opt, Popt, Tag};

/// The name used in usage messages.
pub const PROGRAM: &str = "xvsadm";
/// ipvsadm's scheduler when `-s` is not given.
pub const DEFAULT_SCHEDULER: &str = "wlc";
/// ipvsadm's persistence timeout when `-p` has no value (IPVS_SVC_PERSISTENT_TIMEOUT).
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;
/// Longest timeout ipvsadm accepts (31 days).
const MAX_TIMEOUT: i64 = 86400 * 31;
/// IP_VS_SCHEDNAME_MAXLEN - 1: ipvsadm keeps this many bytes of a scheduler name.
const SCHED_NAME_MAX: usize = 15;
/// IP_VS_PENAME_MAXLEN.
const PE_NAME_MAX: usize = 32;

/// A parsed ipvsadm command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-A`, `-E`, `-D`, `-a`, `-e`, `-d` (one operation each) and `-C` (`Op::Clear`).
    Apply(Vec<Op>),
    /// `-Z [service]`: zero the counters of one service or of all.
    Zero(Option<ServiceKey>),
    /// `-L`/`-l` (also ipvsadm without arguments).
    List(ListOptions),
    /// `-S [-n]`: print the table as rules.
    Save { numeric: bool },
    /// `-R`: read rules from stdin (see [`parse_restore`]).
    Restore,
    /// `--set tcp tcpfin udp` (0 leaves a value as it is).
    SetTimeouts { tcp: u32, tcpfin: u32, udp: u32 },
    /// `-h`/`--help`.
    Help,
    /// `-v`/`--version`.
    Version,
}

/// What a `-L` shows. ipvsadm picks the view in this order: `connections`, one `service`,
/// `timeout`, else all services; the columns in this order: `stats`, `rate`, `thresholds`,
/// `persistent_conn`, `tun_info`, else the default columns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// `-n`: addresses and ports as numbers (else names, as ipvsadm resolves them).
    pub numeric: bool,
    /// `-c`: the connection table.
    pub connections: bool,
    /// `--timeout`: the tcp, tcpfin and udp timeouts.
    pub timeout: bool,
    /// `-t|-u|--sctp-service|-f`: this service only (printed without the banner line).
    pub service: Option<ServiceKey>,
    /// `--stats`: Conns InPkts OutPkts InBytes OutBytes.
    pub stats: bool,
    /// `--rate`: CPS InPPS OutPPS InBPS OutBPS.
    pub rate: bool,
    /// `--thresholds`: Uthreshold Lthreshold ActiveConn InActConn.
    pub thresholds: bool,
    /// `--persistent-conn`: Weight PersistConn ActiveConn InActConn (with `-c`: pe columns).
    pub persistent_conn: bool,
    /// `--tun-info`: a TunnelInfo column.
    pub tun_info: bool,
    /// `--exact`/`-X`: counters without K/M/G/T abbreviation.
    pub exact: bool,
    /// `--nosort`: services in table order, destinations in list order.
    pub nosort: bool,
    /// xvs's `--engine` (not in ipvsadm): each service line ends with ` [fastpath]` or
    /// ` [kernel]`, the engine that serves it. Without it the output is ipvsadm's.
    pub engine: bool,
}

/// What an ipvsadm command says that the table model cannot hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// `--pe name` on `-A`/`-E`.
    pub pe_name: Option<String>,
    /// Tunnel settings of a `-i` destination on `-a`/`-e` (ipip unless `--tun-type`).
    pub tunnel: Option<TunnelView>,
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        self.pe_name.is_none() && self.tunnel.is_none_or(|t| t == TunnelView::default())
    }
}

/// A command with everything it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub command: Command,
    pub extras: Extras,
}

/// Why a command line (or a restore file) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No command, or not a command first: ipvsadm prints only this hint (exit status 255).
    #[error("Try `{PROGRAM} -h' or '{PROGRAM} --help' for more information.")]
    TryHelp,
    /// The option splitter's complaint, e.g. `-t: missing argument` (exit status 255).
    #[error("{option}: {reason}")]
    Option { option: String, reason: String },
    /// ipvsadm's own message for bad input, word for word (exit status 2).
    #[error("{0}")]
    Invalid(String),
    /// Valid for ipvsadm, not supported by xvs; names the option (exit status 2).
    #[error("{0}")]
    Unsupported(String),
    /// A line of a restore file.
    #[error("line {line}: {error}")]
    Line { line: usize, error: Box<ParseError> },
}

impl ParseError {
    /// The exit status ipvsadm uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ParseError::TryHelp | ParseError::Option { .. } => 255,
            ParseError::Invalid(_) | ParseError::Unsupported(_) => 2,
            ParseError::Line { error, .. } => error.exit_code(),
        }
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError::Invalid(msg.into()))
}

// The option columns of ipvsadm's command/option table, in its order (the order matters: the
// first offending option is the one reported).
const OPTNAMES: [&str; 34] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

mod optc {
    pub const NUMERIC: usize = 0;
    pub const CONNECTION: usize = 1;
    pub const SERVICE: usize = 2;
    pub const SCHEDULER: usize = 3;
    pub const PERSISTENT: usize = 4;
    pub const NETMASK: usize = 5;
    pub const SERVER: usize = 6;
    pub const FORWARD: usize = 7;
    pub const WEIGHT: usize = 8;
    pub const UTHRESHOLD: usize = 9;
    pub const LTHRESHOLD: usize = 10;
    pub const MCAST: usize = 11;
    pub const TIMEOUT: usize = 12;
    pub const DAEMON: usize = 13;
    pub const STATS: usize = 14;
    pub const RATE: usize = 15;
    pub const THRESHOLDS: usize = 16;
    pub const PERSISTENTCONN: usize = 17;
    pub const NOSORT: usize = 18;
    pub const SYNCID: usize = 19;
    pub const EXACT: usize = 20;
    pub const ONEPACKET: usize = 21;
    pub const PE: usize = 22;
    pub const SCHED_FLAGS: usize = 23;
    pub const MCAST_GROUP: usize = 24;
    pub const MCAST_PORT: usize = 25;
    pub const MCAST_TTL: usize = 26;
    pub const SYNC_MAXLEN: usize = 27;
    pub const TUN_INFO: usize = 28;
    pub const TUN_TYPE: usize = 29;
    pub const TUN_PORT: usize = 30;
    pub const TUN_NOCSUM: usize = 31;
    pub const TUN_CSUM: usize = 32;
    pub const TUN_REMCSUM: usize = 33;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// The command's row of the table, one character per option column:
    /// `+` compulsory, `x` illegal, `1` at most one of the `1`s, `.` optional.
    fn row(self) -> &'static [u8; 34] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+...xxxxxxxxxxxxxxx...xxxxxxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b".11xxxxxxxxx11.......xxxxxxx.xxxxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+....xxxxxxxxxxxxxxxxxx.....",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::StartDaemon => b"xxxxxxxxxxx.xxxxxxx.xxxx....xxxxxx",
            Cmd::StopDaemon => b"xxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxx",
            Cmd::Save => b".xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const F_PERSISTENT: u32 = ServiceFlags::PERSISTENT;
const F_ONEPACKET: u32 = ServiceFlags::ONEPACKET;
const F_SCHED1: u32 = ServiceFlags::SCHED1;
const F_SCHED2: u32 = ServiceFlags::SCHED2;
const F_SCHED3: u32 = ServiceFlags::SCHED3;

const TUN_IPIP: u8 = 0;
const TUN_GUE: u8 = 1;
const TUN_GRE: u8 = 2;
const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
const TUN_FLAG_CSUM: u16 = 1;
const TUN_FLAG_REMCSUM: u16 = 2;

/// The virtual service as ipvsadm builds it (`ipvs_service_t`).
#[derive(Clone, Debug)]
struct Svc {
    fwmark: u32,
    /// 0 until an address or `-f` sets it.
    af: u16,
    /// IP protocol number, 0 until `-t|-u|--sctp-service|-f`.
    protocol: u16,
    addr: Option<IpAddr>,
    port: u16,
    sched: String,
    flags: u32,
    timeout: u32,
    /// IPv4: the mask as a host-order u32; IPv6: the prefix length.
    netmask: u32,
    pe_name: String,
}

/// The destination as ipvsadm builds it (`ipvs_dest_t`).
#[derive(Clone, Debug)]
struct Dest {
    af: u16,
    addr: Option<IpAddr>,
    port: u16,
    forward: Forward,
    weight: u32,
    u_thresh: u32,
    l_thresh: u32,
    tun_type: u8,
    tun_port: u16,
    tun_flags: u16,
}

fn af_of(a: &IpAddr) -> u16 {
    match a {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// `parse_service`: "addr", "addr:port", "[v6addr]:port", "v6addr", with host and service
/// names. `None` is ipvsadm's SERVICE_NONE.
enum SvcParse {
    None,
    Addr(IpAddr),
    AddrPort(IpAddr, u16),
}

fn parse_service(buf: &str, protocol: u16, names: &dyn Resolver) -> SvcParse {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return SvcParse::None;
    }
    let mut buf = buf;
    let mut port_str: Option<&str> = None;
    if let Some(inner) = buf.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return SvcParse::None;
        };
        let after = &inner[close + 1..];
        let Some(p) = after.strip_prefix(':') else {
            return SvcParse::None;
        };
        port_str = Some(p);
        buf = &inner[..close];
    }
    let addr = if let Some(a6) = inet_pton6(buf) {
        IpAddr::V6(a6)
    } else {
        // Looked up again in what is left: "[1.2.3.4]:80" loses its port, as in ipvsadm.
        port_str = None;
        if let Some(i) = buf.rfind(':') {
            port_str = Some(&buf[i + 1..]);
            buf = &buf[..i];
        }
        if let Some(a4) = inet_aton(buf) {
            IpAddr::V4(a4)
        } else if let Some(a4) = names.host_to_ipv4(buf) {
            IpAddr::V4(a4)
        } else {
            return SvcParse::None;
        }
    };
    let Some(p) = port_str else {
        return SvcParse::Addr(addr);
    };
    if let Some(n) = string_to_number(p, 0, 65535) {
        return SvcParse::AddrPort(addr, n as u16);
    }
    match Protocol::from_number(protocol).and_then(|pr| names.service_to_port(p, pr)) {
        Some(n) => SvcParse::AddrPort(addr, n),
        None => SvcParse::None,
    }
}

fn parse_timeout(buf: Option<&str>, min: i64, max: i64) -> Result<u32, ParseError> {
    let Some(buf) = buf else {
        return Ok(DEFAULT_PERSISTENT_TIMEOUT);
    };
    match string_to_number(buf, min, max) {
        Some(v) => Ok(v as u32),
        None => fail(format!("invalid timeout value `{buf}' specified")),
    }
}

fn parse_fwmark(buf: &str) -> Result<u32, ParseError> {
    let r = strtol(buf, 10);
    // ipvsadm stores strtol's long in an unsigned long: negatives become huge.
    let l = r.value as i64 as u64;
    if r.consumed != buf.len() || r.consumed == 0 || r.overflow || l == 0 || l > u32::MAX as u64 {
        return fail(format!("invalid fwmark value `{buf}' specified"));
    }
    Ok(l as u32)
}

fn parse_sched_flags(sched: &str, arg: &str) -> Result<u32, ParseError> {
    let sched = if sched.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        sched
    };
    let mut flags = 0;
    let mut any = false;
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        any = true;
        let (bit, only) = match flag {
            "flag-1" => (F_SCHED1, None),
            "flag-2" => (F_SCHED2, None),
            "flag-3" => (F_SCHED3, None),
            "sh-fallback" => (F_SCHED1, Some("sh")),
            "sh-port" => (F_SCHED2, Some("sh")),
            "mh-fallback" => (F_SCHED1, Some("mh")),
            "mh-port" => (F_SCHED2, Some("mh")),
            _ => return fail(format!("invalid scheduler flag `{flag}'")),
        };
        flags |= bit;
        if only.is_some_and(|s| s != sched) {
            return fail(format!("incompatible scheduler flag `{flag}'"));
        }
    }
    if !any {
        return fail(format!("invalid scheduler flag `{arg}'"));
    }
    Ok(flags)
}

fn set_option(options: &mut u64, optc: usize) -> Result<(), ParseError> {
    let bit = 1u64 << optc;
    if *options & bit != 0 {
        return fail(format!("multiple '{}' options specified", OPTNAMES[optc]));
    }
    *options |= bit;
    Ok(())
}

fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), ParseError> {
    let row = cmd.row();
    let mut last = 0;
    let mut count = 0;
    for (j, rule) in row.iter().enumerate() {
        if options & (1u64 << j) == 0 {
            if *rule == b'+' {
                return fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPTNAMES[j],
                    cmd.name()
                ));
            }
        } else {
            if *rule == b'x' {
                return fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPTNAMES[j],
                    cmd.name()
                ));
            }
            if *rule == b'1' {
                count += 1;
                if count == 1 {
                    last = j;
                    continue;
                }
                return fail(format!(
                    "The option '{}' conflicts with the '{}' option in the '{}' command",
                    OPTNAMES[j],
                    OPTNAMES[last],
                    cmd.name()
                ));
            }
        }
    }
    Ok(())
}

fn tunnel_opt_check(tun_type: u8, options: u64) -> Result<(), ParseError> {
    // Columns tun-port, tun-nocsum, tun-csum, tun-remcsum per tunnel type.
    let cols = [
        optc::TUN_PORT,
        optc::TUN_NOCSUM,
        optc::TUN_CSUM,
        optc::TUN_REMCSUM,
    ];
    let row: &[u8; 4] = match tun_type {
        TUN_IPIP => b"xxxx",
        TUN_GUE => b"+111",
        _ => b"x11x",
    };
    let tname = TUN_NAMES[tun_type as usize];
    let mut last = 0;
    let mut count = 0;
    for (j, rule) in row.iter().enumerate() {
        let k = cols[j];
        if options & (1u64 << k) == 0 {
            if *rule == b'+' {
                return fail(format!(
                    "You need to supply the '{}' option for the '{tname}' tunnel type",
                    OPTNAMES[k]
                ));
            }
        } else {
            if *rule == b'x' {
                return fail(format!(
                    "Illegal '{}' option with the '{tname}' tunnel type",
                    OPTNAMES[k]
                ));
            }
            if *rule == b'1' {
                count += 1;
                if count == 1 {
                    last = k;
                    continue;
                }
                return fail(format!(
                    "The option '{}' conflicts with the '{}' option in the '{tname}' tunnel type",
                    OPTNAMES[k], OPTNAMES[last]
                ));
            }
        }
    }
    Ok(())
}

fn service_key(svc: &Svc) -> Option<ServiceKey> {
    if svc.fwmark != 0 {
        let family = if svc.af == AF_INET6 {
            Family::Inet6
        } else {
            Family::Inet
        };
        return Some(ServiceKey::Fwmark {
            family,
            mark: svc.fwmark,
        });
    }
    Some(ServiceKey::Inet {
        proto: Protocol::from_number(svc.protocol)?,
        addr: svc.addr?,
        port: svc.port,
    })
}

fn unsupported_daemon(what: &str) -> ParseError {
    ParseError::Unsupported(format!(
        "{what}: the connection synchronisation daemon is not supported by xvs"
    ))
}

/// Parses an ipvsadm command line (without the program name), accepting everything ipvsadm
/// accepts; what the model cannot hold is returned in [`Parsed::extras`]. Names are resolved
/// with `names`.
pub fn parse_args_full(args: &[String], names: &dyn Resolver) -> Result<Parsed, ParseError> {
    if args.is_empty() {
        // ipvsadm without arguments lists the table (with names).
        return Ok(Parsed {
            command: Command::List(ListOptions::default()),
            extras: Extras::default(),
        });
    }
    let mut popt = Popt::new(args);
    let first = match popt.next_opt() {
        Ok(Some(o)) => o,
        _ => return Err(ParseError::TryHelp),
    };
    let mut daemon_cmd: Option<&str> = None;
    let cmd = match first.tag {
        Tag::AddService => Cmd::Add,
        Tag::EditService => Cmd::Edit,
        Tag::DelService => Cmd::Del,
        Tag::AddServer => Cmd::AddDest,
        Tag::EditServer => Cmd::EditDest,
        Tag::DelServer => Cmd::DelDest,
        Tag::Clear => Cmd::Flush,
        Tag::List => Cmd::List,
        Tag::Zero => Cmd::Zero,
        Tag::Set => Cmd::Timeout,
        Tag::Restore => Cmd::Restore,
        Tag::Save => Cmd::Save,
        Tag::StartDaemon | Tag::StopDaemon => {
            let start = first.tag == Tag::StartDaemon;
            let state = first.arg.as_deref().unwrap_or("");
            if state != "master" && state != "backup" {
                return fail(if start {
                    "illegal start-daemon parameter specified"
                } else {
                    "illegal start_daemon specified"
                });
            }
            daemon_cmd = Some(if start {
                "--start-daemon"
            } else {
                "--stop-daemon"
            });
            if start {
                Cmd::StartDaemon
            } else {
                Cmd::StopDaemon
            }
        }
        Tag::Help => {
            return Ok(Parsed {
                command: Command::Help,
                extras: Extras::default(),
            })
        }
        Tag::Version => {
            return Ok(Parsed {
                command: Command::Version,
                extras: Extras::default(),
            })
        }
        _ => return Err(ParseError::TryHelp),
    };

    let mut options: u64 = 0;
    let mut numeric = false;
    let mut list = ListOptions::default();
    let mut engine = false;
    let mut sched_flags_arg = String::new();
    let mut svc = Svc {
        fwmark: 0,
        af: 0,
        protocol: 0,
        addr: None,
        port: 0,
        sched: String::new(),
        flags: 0,
        timeout: 0,
        netmask: 0xffff_ffff,
        pe_name: String::new(),
    };
    let mut dest = Dest {
        af: 0,
        addr: None,
        port: 0,
        forward: Forward::Route,
        weight: 1,
        u_thresh: 0,
        l_thresh: 0,
        tun_type: TUN_IPIP,
        tun_port: 0,
        tun_flags: 0,
    };

    loop {
        let Opt { tag, arg } = match popt.next_opt() {
            Ok(Some(o)) => o,
            Ok(None) => break,
            Err(e) => {
                return Err(ParseError::Option {
                    option: popt.bad_option(),
                    reason: e.reason().to_string(),
                })
            }
        };
        let a = arg.as_deref().unwrap_or("");
        match tag {
            Tag::Tcp | Tag::Udp | Tag::Sctp => {
                set_option(&mut options, optc::SERVICE)?;
                svc.protocol = match tag {
                    Tag::Tcp => 6,
                    Tag::Udp => 17,
                    _ => 132,
                };
                let (ad, port) = match parse_service(a, svc.protocol, names) {
                    SvcParse::None => {
                        return fail("illegal virtual server address[:port] specified")
                    }
                    SvcParse::Addr(ad) => (ad, None),
                    SvcParse::AddrPort(ad, p) => (ad, Some(p)),
                };
                svc.addr = Some(ad);
                svc.af = af_of(&ad);
                if ad.is_ipv6() {
                    svc.netmask = 128;
                }
                if let Some(p) = port {
                    svc.port = p;
                }
            }
            Tag::Fwmark => {
                set_option(&mut options, optc::SERVICE)?;
                svc.af = AF_INET;
                svc.protocol = 6;
                svc.fwmark = parse_fwmark(a)?;
            }
            Tag::Scheduler => {
                set_option(&mut options, optc::SCHEDULER)?;
                svc.sched = truncate(a, SCHED_NAME_MAX);
            }
            Tag::Persistent => {
                set_option(&mut options, optc::PERSISTENT)?;
                svc.flags |= F_PERSISTENT;
                svc.timeout = parse_timeout(arg.as_deref(), 1, MAX_TIMEOUT)?;
            }
            Tag::Netmask => {
                set_option(&mut options, optc::NETMASK)?;
                if svc.af != AF_INET6 {
                    let m = inet_aton(a).or_else(|| names.host_to_ipv4(a));
                    match m {
                        Some(m) => svc.netmask = u32::from(m),
                        None => return fail("illegal virtual server persistent mask specified"),
                    }
                } else {
                    svc.netmask = atoi(a) as i32 as u32;
                    if svc.netmask < 1 || svc.netmask > 128 {
                        return fail("illegal ipv6 netmask specified");
                    }
                }
            }
            Tag::RealServer => {
                set_option(&mut options, optc::SERVER)?;
                match parse_service(a, svc.protocol, names) {
                    SvcParse::None => return fail("illegal real server address[:port] specified"),
                    SvcParse::Addr(ad) => {
                        dest.addr = Some(ad);
                        dest.af = af_of(&ad);
                        // No port: the service's port, as it is at this point.
                        dest.port = svc.port;
                    }
                    SvcParse::AddrPort(ad, p) => {
                        dest.addr = Some(ad);
                        dest.af = af_of(&ad);
                        dest.port = p;
                    }
                }
            }
            Tag::Ipip | Tag::Gatewaying | Tag::Masquerading => {
                set_option(&mut options, optc::FORWARD)?;
                dest.forward = match tag {
                    Tag::Ipip => Forward::Tunnel,
                    Tag::Gatewaying => Forward::Route,
                    _ => Forward::Masq,
                };
            }
            Tag::Weight => {
                set_option(&mut options, optc::WEIGHT)?;
                match string_to_number(a, 0, 65535) {
                    Some(w) => dest.weight = w as u32,
                    None => return fail("illegal weight specified"),
                }
            }
            Tag::UThreshold => {
                set_option(&mut options, optc::UTHRESHOLD)?;
                match string_to_number(a, 0, i32::MAX as i64) {
                    Some(v) => dest.u_thresh = v as u32,
                    None => return fail("illegal u_threshold specified"),
                }
            }
            Tag::LThreshold => {
                set_option(&mut options, optc::LTHRESHOLD)?;
                match string_to_number(a, 0, i32::MAX as i64) {
                    Some(v) => dest.l_thresh = v as u32,
                    None => return fail("illegal l_threshold specified"),
                }
            }
            Tag::Connection => {
                set_option(&mut options, optc::CONNECTION)?;
                list.connections = true;
            }
            Tag::Numeric => {
                set_option(&mut options, optc::NUMERIC)?;
                numeric = true;
            }
            Tag::McastInterface => set_option(&mut options, optc::MCAST)?,
            Tag::SyncId => {
                set_option(&mut options, optc::SYNCID)?;
                if string_to_number(a, 0, 255).is_none() {
                    return fail("illegal syncid specified");
                }
            }
            Tag::Timeout => {
                set_option(&mut options, optc::TIMEOUT)?;
                list.timeout = true;
            }
            Tag::Daemon => set_option(&mut options, optc::DAEMON)?,
            Tag::Stats => {
                set_option(&mut options, optc::STATS)?;
                list.stats = true;
            }
            Tag::Rate => {
                set_option(&mut options, optc::RATE)?;
                list.rate = true;
            }
            Tag::Thresholds => {
                set_option(&mut options, optc::THRESHOLDS)?;
                list.thresholds = true;
            }
            Tag::PersistentConn => {
                set_option(&mut options, optc::PERSISTENTCONN)?;
                list.persistent_conn = true;
            }
            Tag::NoSort => {
                set_option(&mut options, optc::NOSORT)?;
                list.nosort = true;
            }
            // "does nothing, for backwards compatibility".
            Tag::Sort => {}
            Tag::Exact => {
                set_option(&mut options, optc::EXACT)?;
                list.exact = true;
            }
            Tag::Ipv6 => {
                if svc.fwmark != 0 {
                    svc.af = AF_INET6;
                    svc.netmask = 128;
                } else {
                    return fail("-6 used before -f");
                }
            }
            Tag::Ops => {
                set_option(&mut options, optc::ONEPACKET)?;
                svc.flags |= F_ONEPACKET;
            }
            Tag::Pe => {
                set_option(&mut options, optc::PE)?;
                svc.pe_name = truncate(a, PE_NAME_MAX);
            }
            Tag::SchedFlags => {
                set_option(&mut options, optc::SCHED_FLAGS)?;
                sched_flags_arg = truncate(a, 127);
            }
            Tag::McastGroup => {
                set_option(&mut options, optc::MCAST_GROUP)?;
                if a.contains(':') {
                    if !inet_pton6(a).is_some_and(|g| g.is_multicast()) {
                        return fail(format!("invalid IPv6 mcast-group `{a}'"));
                    }
                } else if !inet_pton4(a).is_some_and(|g| g.is_multicast()) {
                    return fail(format!("invalid IPv4 mcast-group `{a}'"));
                }
            }
            Tag::McastPort => {
                set_option(&mut options, optc::MCAST_PORT)?;
                if string_to_number(a, 1, 65535).is_none() {
                    return fail("illegal mcast-port specified");
                }
            }
            Tag::McastTtl => {
                set_option(&mut options, optc::MCAST_TTL)?;
                if string_to_number(a, 1, 255).is_none() {
                    return fail("illegal mcast-ttl specified");
                }
            }
            Tag::SyncMaxlen => {
                set_option(&mut options, optc::SYNC_MAXLEN)?;
                if string_to_number(a, 1, 65535 - 20 - 8).is_none() {
                    return fail("illegal sync-maxlen specified");
                }
            }
            Tag::TunInfo => {
                set_option(&mut options, optc::TUN_INFO)?;
                list.tun_info = true;
            }
            Tag::TunType => {
                set_option(&mut options, optc::TUN_TYPE)?;
                dest.tun_type = match a {
                    "ipip" => TUN_IPIP,
                    "gue" => TUN_GUE,
                    "gre" => TUN_GRE,
                    _ => return fail("illegal tunnel type specified"),
                };
            }
            Tag::TunPort => {
                set_option(&mut options, optc::TUN_PORT)?;
                match string_to_number(a, 1, 65535) {
                    Some(p) => dest.tun_port = p as u16,
                    None => return fail("illegal tunnel port specified"),
                }
            }
            Tag::TunNoCsum => set_option(&mut options, optc::TUN_NOCSUM)?,
            Tag::TunCsum => {
                set_option(&mut options, optc::TUN_CSUM)?;
                dest.tun_flags |= TUN_FLAG_CSUM;
            }
            Tag::TunRemCsum => {
                set_option(&mut options, optc::TUN_REMCSUM)?;
                dest.tun_flags |= TUN_FLAG_REMCSUM;
            }
            Tag::Engine => {
                if engine {
                    return fail("multiple 'engine' options specified");
                }
                engine = true;
            }
            // A second command, -h or -v after the command.
            _ => return fail(format!("invalid option `{}'", popt.bad_option())),
        }
    }

    let mut leftovers = popt.take_leftovers().into_iter();
    let mut timeouts = (0, 0, 0);
    if cmd == Cmd::Timeout {
        let (Some(t), Some(f), Some(u)) = (leftovers.next(), leftovers.next(), leftovers.next())
        else {
            return fail("--set option requires 3 timeout values");
        };
        timeouts = (
            parse_timeout(Some(&t), 0, MAX_TIMEOUT)?,
            parse_timeout(Some(&f), 0, MAX_TIMEOUT)?,
            parse_timeout(Some(&u), 0, MAX_TIMEOUT)?,
        );
    }
    if let Some(extra) = leftovers.next() {
        return fail(format!("unexpected argument {extra}"));
    }
    if !sched_flags_arg.is_empty() {
        svc.flags &= !(F_SCHED1 | F_SCHED2 | F_SCHED3);
        svc.flags |= parse_sched_flags(&svc.sched, &sched_flags_arg)?;
    }

    generic_opt_check(cmd, options)?;

    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if svc.fwmark == 0 && svc.port == 0 && svc.flags & F_PERSISTENT == 0 {
            return fail("Zero port specified for non-persistent service");
        }
        if svc.flags & F_ONEPACKET != 0 && svc.fwmark == 0 && svc.protocol != 17 {
            return fail("One-Packet Scheduling is only for UDP virtual services");
        }
        if svc.sched.is_empty() {
            svc.sched = DEFAULT_SCHEDULER.to_string();
        }
    }

    if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
        // Direct routing and tunnelling cannot change the port.
        if svc.fwmark == 0 && matches!(dest.forward, Forward::Tunnel | Forward::Route) {
            dest.port = svc.port;
        }
        if dest.af != svc.af && dest.forward != Forward::Tunnel {
            return fail("Different address family is allowed only for tunneling servers");
        }
        let tun_opts = (1u64 << optc::TUN_TYPE)
            | (1u64 << optc::TUN_PORT)
            | (1u64 << optc::TUN_NOCSUM)
            | (1u64 << optc::TUN_CSUM)
            | (1u64 << optc::TUN_REMCSUM);
        if options & tun_opts != 0 && dest.forward != Forward::Tunnel {
            return fail("Tunnel options conflict with forward method");
        }
        tunnel_opt_check(dest.tun_type, options)?;
    }

    if cmd == Cmd::List {
        let has = |c: usize| options & (1u64 << c) != 0;
        if ((has(optc::CONNECTION) || has(optc::TIMEOUT) || has(optc::DAEMON))
            && (has(optc::STATS) || has(optc::RATE) || has(optc::THRESHOLDS)))
            || ((has(optc::TIMEOUT) || has(optc::DAEMON)) && has(optc::PERSISTENTCONN))
        {
            return fail("options conflicts in the list command");
        }
        if engine && (has(optc::CONNECTION) || has(optc::TIMEOUT) || has(optc::DAEMON)) {
            return fail("options conflicts in the list command");
        }
    } else if engine {
        return fail(format!(
            "Illegal 'engine' option with the '{}' command",
            cmd.name()
        ));
    }

    // Valid for ipvsadm; now what xvs cannot do.
    if let Some(what) = daemon_cmd {
        return Err(unsupported_daemon(what));
    }
    if cmd == Cmd::List && options & (1u64 << optc::DAEMON) != 0 {
        return Err(unsupported_daemon("--daemon"));
    }
    if options & (1u64 << optc::SYNCID) != 0 {
        return Err(unsupported_daemon("--syncid"));
    }

    let mut extras = Extras::default();
    let key = service_key(&svc);
    let need_key = || key.ok_or_else(|| ParseError::Invalid("no virtual service".into()));
    let command = match cmd {
        Cmd::Add | Cmd::Edit => {
            let config = ServiceConfig {
                scheduler: svc.sched.clone(),
                flags: ServiceFlags::from_bits(svc.flags),
                timeout: svc.timeout,
                netmask: svc.netmask,
            };
            if !svc.pe_name.is_empty() {
                extras.pe_name = Some(svc.pe_name.clone());
            }
            let k = need_key()?;
            Command::Apply(vec![if cmd == Cmd::Add {
                Op::AddService(k, config)
            } else {
                Op::EditService(k, config)
            }])
        }
        Cmd::Del => Command::Apply(vec![Op::DelService(need_key()?)]),
        Cmd::AddDest | Cmd::EditDest => {
            let d = Destination {
                addr: dest.addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: dest.port,
                forward: dest.forward,
                weight: dest.weight,
                u_thresh: dest.u_thresh,
                l_thresh: dest.l_thresh,
            };
            if dest.forward == Forward::Tunnel {
                extras.tunnel = Some(TunnelView {
                    kind: dest.tun_type,
                    port: dest.tun_port,
                    flags: dest.tun_flags,
                });
            }
            let k = need_key()?;
            Command::Apply(vec![if cmd == Cmd::AddDest {
                Op::AddDest(k, d)
            } else {
                Op::EditDest(k, d)
            }])
        }
        Cmd::DelDest => Command::Apply(vec![Op::DelDest(
            need_key()?,
            dest.addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            dest.port,
        )]),
        Cmd::Flush => Command::Apply(vec![Op::Clear]),
        Cmd::Zero => {
            // libipvs zeroes everything when the service is all zeros.
            let all =
                svc.fwmark == 0 && svc.addr.is_none_or(|a| a.is_unspecified()) && svc.port == 0;
            Command::Zero(if all { None } else { key })
        }
        Cmd::List => {
            list.numeric = numeric;
            list.engine = engine;
            if options & (1u64 << optc::SERVICE) != 0 {
                list.service = key;
            }
            Command::List(list)
        }
        Cmd::Save => Command::Save { numeric },
        Cmd::Restore => Command::Restore,
        Cmd::Timeout => Command::SetTimeouts {
            tcp: timeouts.0,
            tcpfin: timeouts.1,
            udp: timeouts.2,
        },
        Cmd::StartDaemon | Cmd::StopDaemon => unreachable!("refused above"),
    };
    Ok(Parsed { command, extras })
}

/// Refuses what the model cannot hold, naming the option.
fn check_supported(extras: &Extras) -> Result<(), ParseError> {
    if let Some(pe) = &extras.pe_name {
        return Err(ParseError::Unsupported(format!(
            "--pe {pe}: persistence engines are not supported by xvs"
        )));
    }
    if let Some(t) = extras.tunnel {
        if t.kind != TUN_IPIP {
            let name = TUN_NAMES.get(t.kind as usize).copied().unwrap_or("?");
            return Err(ParseError::Unsupported(format!(
                "--tun-type {name}: only ipip tunnels are supported by xvs"
            )));
        }
        if t.port != 0 || t.flags != 0 {
            return Err(ParseError::Unsupported(
                "--tun-port/--tun-csum/--tun-remcsum: tunnel options are not supported by xvs"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Parses an ipvsadm command line (without the program name) with the system's name
/// lookups; options the product does not support are refused with
/// [`ParseError::Unsupported`].
pub fn parse_args(args: &[String]) -> Result<Command, ParseError> {
    parse_args_with(args, &SystemResolver)
}

/// [`parse_args`] with the given name lookups.
pub fn parse_args_with(args: &[String], names: &dyn Resolver) -> Result<Command, ParseError> {
    let parsed = parse_args_full(args, names)?;
    check_supported(&parsed.extras)?;
    Ok(parsed.command)
}

/// Splits one line of a restore file as ipvsadm-restore does: words separated by blanks, the
/// word `ipvsadm` skipped; xvs also skips `#` comments.
fn restore_words(line: &str) -> Vec<String> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    line.split([' ', '\t', '\r'])
        .filter(|w| !w.is_empty() && *w != "ipvsadm")
        .map(str::to_string)
        .collect()
}

/// Parses a restore file (ipvsadm `-S` format, one command per line), keeping what the model
/// cannot hold beside each operation. One bad line rejects the whole file.
pub fn parse_restore_full(
    text: &str,
    names: &dyn Resolver,
) -> Result<Vec<(NumberedOp, Extras)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words = restore_words(line);
        if words.is_empty() {
            continue;
        }
        let at = |error: ParseError| ParseError::Line {
            line: n,
            error: Box::new(error),
        };
        let parsed = parse_args_full(&words, names).map_err(at)?;
        match parsed.command {
            Command::Apply(ops) => {
                for op in ops {
                    out.push((NumberedOp { line: Some(n), op }, parsed.extras.clone()));
                }
            }
            Command::Zero(_) => {
                return Err(at(ParseError::Unsupported(
                    "-Z in a restore file is not supported by xvs (zero counters with xvsadm -Z)"
                        .into(),
                )))
            }
            Command::SetTimeouts { .. } => {
                return Err(at(ParseError::Unsupported(
                    "--set in a restore file is not supported by xvs (use xvsadm --set)".into(),
                )))
            }
            Command::Restore => return Err(at(ParseError::TryHelp)),
            Command::List(_) | Command::Save { .. } | Command::Help | Command::Version => {
                return Err(at(ParseError::Invalid(
                    "only -A, -E, -D, -a, -e, -d and -C belong in a restore file".into(),
                )))
            }
        }
    }
    Ok(out)
}

/// A restore file's bytes as text: invalid UTF-8 is refused naming the line and the byte in
/// it (both from 1), e.g. `line 3: invalid UTF-8 at byte 17`.
pub fn restore_text(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let before = &bytes[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        ParseError::Line {
            line,
            error: Box::new(ParseError::Invalid(format!(
                "invalid UTF-8 at byte {}",
                at - start + 1
            ))),
        }
    })
}

/// Parses a restore file (`ipvsadm -R`'s input, the `-S` format): one command per line
/// without the program name, blank lines and `#` comments ignored. One bad line rejects the
/// whole file, with an error naming the line; options the model cannot hold are refused.
pub fn parse_restore(text: &str) -> Result<Vec<NumberedOp>, ParseError> {
    parse_restore_with(text, &SystemResolver)
}

/// [`parse_restore`] with the given name lookups.
pub fn parse_restore_with(text: &str, names: &dyn Resolver) -> Result<Vec<NumberedOp>, ParseError> {
    let full = parse_restore_full(text, names)?;
    let mut out = Vec::with_capacity(full.len());
    for (nop, extras) in full {
        check_supported(&extras).map_err(|e| ParseError::Line {
            line: nop.line.unwrap_or(0),
            error: Box::new(e),
        })?;
        out.push(nop);
    }
    Ok(out)
}
