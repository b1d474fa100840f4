//! xvsd's command line (the daemon's binary parses it; `cargo xtask dist` renders its man
//! page and completions from it).
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Clients served at once on the control socket by default (`--max-clients`).
pub const DEFAULT_MAX_CLIENTS: usize = 256;

#[derive(Parser)]
#[command(
    name = "xvsd",
    version,
    about = "xvs node daemon: IPVS-semantics load balancing in XDP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Interface to attach the fast path to (both directions); repeat for several.
    /// `NAME:HOOK` chooses the hook for this one (auto, native, generic or tc).
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// Also attach to every interface whose name matches this shell glob (e.g. 'veth*',
    /// 'cali*'), present at start or appearing later, and detach from those that go away;
    /// repeat for several. `PATTERN:HOOK` chooses the hook for those it matches.
    #[arg(long = "iface-match", value_name = "PATTERN")]
    pub iface_match: Vec<String>,
    /// Rules file in ipvsadm-save format (`ipvsadm -S -n` / `xvsadm -S -n`); reread on SIGHUP.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// The hook for interfaces that do not name one: auto is XDP native on NICs and tc on
    /// virtual devices (veth, ...); native falls back to generic (with a warning) where the
    /// driver refuses.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Allow XDP redirects out of virtual devices (veth) too: only when their peers run XDP.
    #[arg(long)]
    pub redirect_virtual: bool,
    /// Where maps and links are pinned (on a bpffs).
    #[arg(long, global = true, default_value = "/sys/fs/bpf/xvs")]
    pub pin_dir: PathBuf,
    /// Control socket, lock and saved state.
    #[arg(long, global = true, default_value = "/run/xvs")]
    pub state_dir: PathBuf,
    /// Connection table entries (CONNS and REPLIES each). Default: about 1 % of the node's
    /// memory at ~170 bytes a connection, a power of two between 65,536 and 4,194,304 (1,048,576
    /// on a 24 GiB node). A full table refuses new connections; it never evicts a live one.
    #[arg(long, global = true)]
    pub conn_table_size: Option<u32>,
    #[arg(long, global = true, default_value_t = 65_536)]
    pub max_services: u32,
    #[arg(long, global = true, default_value_t = 1 << 19)]
    pub max_dests: u32,
    /// Slots for all scheduler tables (sh takes 257 per service).
    #[arg(long, global = true, default_value_t = 1 << 22)]
    pub sched_slots: u32,
    /// Mirror kernel IPVS (as kube-proxy programs it) into the fast path instead of owning a
    /// table: never writes to kernel IPVS; xvsadm only lists.
    #[arg(long, conflicts_with = "rules")]
    pub mirror_ipvs: bool,
    /// How often mirror mode reads kernel IPVS (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_period)]
    pub sync_period: Duration,
    /// Log from the BPF programs too (new connections at debug, refusals at info) through
    /// aya-log; off by default: disabled, the statements cost nothing per packet.
    #[arg(long)]
    pub bpf_log: bool,
    /// Balance the node's own processes' connections to VIPs at the socket (cgroup v2 hooks on
    /// connect/sendmsg/recvmsg/getpeername, and sockops), for this network namespace.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub socket_lb: OnOff,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Members of GROUP (name or gid) may list the table through the control socket (xvsadm
    /// -L, -S), not change it; the socket becomes group GROUP, mode 0660. Without it the
    /// socket is root's only (0600); changes always need root or CAP_NET_ADMIN.
    #[arg(long, value_name = "GROUP")]
    pub list_group: Option<String>,
    /// Largest request accepted on the control socket (e.g. 256M, 1G; a 50,000-service
    /// restore with 10 destinations each is about 103M).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub max_request_size: usize,
    /// Clients served at once on the control socket; beyond it, the one that has waited
    /// longest on its peer is dropped.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// How long a client may stay silent while it sends its request, or take over each MiB of
    /// its answer, before it is dropped (e.g. 5s, 500ms); the whole request must come within
    /// 12 times this.
    #[arg(long, default_value = "5s", value_parser = parse_period)]
    pub client_timeout: Duration,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (node_exporter's node_ipvs_*
    /// series and xvs's own xvs_*); off unless given.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Remove every program, link, pinned map and saved state xvs made on this node.
    Teardown,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Native,
    Generic,
    Tc,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        <Mode as ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown hook {s:?} (auto, native, generic or tc)"))
    }
}

/// `NAME` or `NAME:HOOK` (an interface or an --iface-match pattern).
pub fn iface_and_mode(spec: &str, default: Mode) -> Result<(&str, Mode), String> {
    match spec.rsplit_once(':') {
        Some((name, hook)) => Ok((name, Mode::parse(hook)?)),
        None => Ok((spec, default)),
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

pub fn parse_period(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad period {s:?} (e.g. 1s, 500ms)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        _ => return Err(format!("bad period {s:?} (e.g. 1s, 500ms)")),
    };
    if d.is_zero() {
        return Err("the sync period must be above zero".into());
    }
    Ok(d)
}

/// A size in bytes, with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("bad size {s:?} (e.g. 65536, 64K, 256M, 1G)");
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = num.parse().map_err(|_| bad())?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).filter(|&n| n > 0).ok_or_else(bad)
}

/// What xvsd's man page says after the options (roff).
pub const MAN_EXTRA: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Reread \fB--rules\fR and apply only the difference (all or nothing).
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop, leaving the fast path running: programs stay attached through their pinned links, maps
stay pinned, and the state the next xvsd adopts is saved under \fB--state-dir\fR. \fBxvsd
teardown\fR removes everything.
.SH METRICS
With \fB--metrics-listen\fR \fIADDR:PORT\fR, \fBhttp://ADDR:PORT/metrics\fR serves the
Prometheus text format: node_exporter's IPVS series (\fBnode_ipvs_connections_total\fR,
\fBnode_ipvs_incoming_packets_total\fR, \fBnode_ipvs_outgoing_packets_total\fR,
\fBnode_ipvs_incoming_bytes_total\fR, \fBnode_ipvs_outgoing_bytes_total\fR,
\fBnode_ipvs_backend_connections_active\fR, \fBnode_ipvs_backend_connections_inactive\fR,
\fBnode_ipvs_backend_weight\fR, with its labels) and xvs's own (\fBxvs_*\fR: verdicts,
connection and scheduler tables, interfaces, engines, control plane, mirror sync lag).
.SH FILES
.TP
\fI/run/xvs/xvsd.sock\fR
The control socket \fBxvsadm\fR(8) talks to (under \fB--state-dir\fR).
.TP
\fI/sys/fs/bpf/xvs\fR
Pinned maps and links (\fB--pin-dir\fR; a bpffs is mounted at /sys/fs/bpf if none is).
.SH SEE ALSO
\fBxvsadm\fR(8), \fBipvsadm\fR(8)
"#;
