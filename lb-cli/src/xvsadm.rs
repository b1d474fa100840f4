//! xvsadm's command line for its man page and shell completions. xvsadm itself parses its
//! arguments exactly as ipvsadm does (`lb_user::ipvsadm`, popt's rules, ipvsadm's messages and
//! exit codes); this definition lists the same options (a test in lb-user checks it against
//! the `-h` text) so the generated documentation and completions match what it accepts.
use clap::{Arg, ArgAction, ArgGroup, Command};

/// What the man page says after the options: where xvsadm differs from ipvsadm (roff).
pub const DIFFERENCES: &str = r#".SH DIFFERENCES FROM IPVSADM
xvsadm accepts ipvsadm's command line and prints ipvsadm's output, byte for byte, with these
differences:
.IP \(bu 2
It talks to \fBxvsd\fR over its control socket (\fI/run/xvs/xvsd.sock\fR, or
\fBXVSADM_SOCKET\fR), not to the kernel over netlink. Without a running xvsd it fails and says
how to start one.
.IP \(bu 2
The listing banner reads \fBxvs (XDP Virtual Server) version 1.2.1 (size=N)\fR, N being xvsd's
connection table size (\fB--conn-table-size\fR).
.IP \(bu 2
\fB--engine\fR (not in ipvsadm) ends each service line of \fB-L\fR with \fB[fastpath]\fR or
\fB[kernel]\fR: the engine that serves it. Services the fast path cannot serve (schedulers
other than rr, wrr and sh, persistence, IPv6, thresholds, ...) are programmed into kernel IPVS
when the kernel has it, and refused with the reason when it does not.
.IP \(bu 2
A batch (one command, or a whole \fB-R\fR restore) is validated completely before anything is
written: a restore with one bad line is refused naming the line, and the table is unchanged
(ipvsadm applies the lines before the bad one).
.IP \(bu 2
Refused as unsupported (exit status 2, naming the option): the connection synchronisation
daemon (\fB--start-daemon\fR, \fB--stop-daemon\fR, \fB--daemon\fR and its options),
persistence engines (\fB--pe\fR), tunnel types other than ipip and the tunnel options
(\fB--tun-port\fR, \fB--tun-nocsum\fR, \fB--tun-csum\fR, \fB--tun-remcsum\fR), and \fB-Z\fR
or \fB--set\fR inside a restore file.
.IP \(bu 2
When xvsd mirrors kernel IPVS (\fBxvsd --mirror-ipvs\fR, beside kube-proxy), xvsadm only
lists and saves: changes are made with ipvsadm or kube-proxy.
.IP \(bu 2
\fB-Z\fR and \fB--set\fR apply to both engines (the fast path, and kernel IPVS for the
services xvsd put there).
.SH ENVIRONMENT
.TP
\fBXVSADM_SOCKET\fR
xvsd's control socket (default \fI/run/xvs/xvsd.sock\fR).
.SH SEE ALSO
\fBxvsd\fR(8), \fBipvsadm\fR(8)
"#;

fn flag(name: &'static str, short: Option<char>, help: &'static str) -> Arg {
    let a = Arg::new(name)
        .long(name)
        .action(ArgAction::SetTrue)
        .help(help);
    match short {
        Some(c) => a.short(c),
        None => a,
    }
}

fn value(name: &'static str, short: Option<char>, v: &'static str, help: &'static str) -> Arg {
    let a = Arg::new(name).long(name).value_name(v).help(help);
    match short {
        Some(c) => a.short(c),
        None => a,
    }
}

/// xvsadm's options, as ipvsadm's `-h` lists them (commands first).
pub fn command() -> Command {
    let commands = [
        flag("add-service", Some('A'), "Add a virtual service"),
        flag("edit-service", Some('E'), "Edit a virtual service"),
        flag("delete-service", Some('D'), "Delete a virtual service"),
        flag("clear", Some('C'), "Clear the whole table"),
        flag(
            "restore",
            Some('R'),
            "Restore rules (ipvsadm-save format) from stdin, all or none",
        ),
        flag(
            "save",
            Some('S'),
            "Save rules to stdout (ipvsadm-save format)",
        ),
        flag(
            "add-server",
            Some('a'),
            "Add a real server to a virtual service",
        ),
        flag("edit-server", Some('e'), "Edit a real server"),
        flag("delete-server", Some('d'), "Delete a real server"),
        flag("list", Some('L'), "List the table (also -l)").short_alias('l'),
        flag(
            "zero",
            Some('Z'),
            "Zero the counters of a service or of all services",
        ),
        Arg::new("set")
            .long("set")
            .num_args(3)
            .value_names(["TCP", "TCPFIN", "UDP"])
            .help("Set the connection timeouts in seconds (0 leaves one unchanged)"),
        value(
            "start-daemon",
            None,
            "STATE",
            "Connection sync daemon (not supported by xvs)",
        ),
        value(
            "stop-daemon",
            None,
            "STATE",
            "Connection sync daemon (not supported by xvs)",
        ),
        flag(
            "help",
            Some('h'),
            "Print ipvsadm's help, with what xvs refuses marked",
        )
        .action(ArgAction::Help),
        flag("version", Some('v'), "Print the version").action(ArgAction::Version),
    ];
    let service = [
        value(
            "tcp-service",
            Some('t'),
            "HOST[:PORT]",
            "A TCP virtual service",
        ),
        value(
            "udp-service",
            Some('u'),
            "HOST[:PORT]",
            "A UDP virtual service",
        ),
        value(
            "sctp-service",
            None,
            "HOST[:PORT]",
            "An SCTP virtual service",
        ),
        value(
            "fwmark-service",
            Some('f'),
            "FWMARK",
            "A firewall-mark virtual service",
        ),
    ];
    let options = [
        flag("ipv6", Some('6'), "The fwmark service is IPv6"),
        value(
            "scheduler",
            Some('s'),
            "SCHEDULER",
            "rr, wrr, sh (fast path) or another kernel scheduler (kernel IPVS); default wlc",
        ),
        value(
            "pe",
            None,
            "ENGINE",
            "Persistence engine (not supported by xvs)",
        ),
        Arg::new("persistent")
            .long("persistent")
            .short('p')
            .value_name("TIMEOUT")
            .num_args(0..=1)
            .help("Persistent service (kernel IPVS)"),
        value(
            "netmask",
            Some('M'),
            "NETMASK",
            "Persistence granularity mask",
        ),
        value("real-server", Some('r'), "HOST[:PORT]", "The real server"),
        flag("gatewaying", Some('g'), "Direct routing (kernel IPVS)"),
        flag("ipip", Some('i'), "IPIP tunnelling (kernel IPVS)"),
        flag(
            "masquerading",
            Some('m'),
            "NAT (the fast path's forwarding method)",
        ),
        value(
            "tun-type",
            None,
            "TYPE",
            "Tunnel type: ipip (gue and gre are not supported by xvs)",
        ),
        value(
            "tun-port",
            None,
            "PORT",
            "Tunnel port (not supported by xvs)",
        ),
        flag(
            "tun-nocsum",
            None,
            "Tunnel without checksum (not supported by xvs)",
        ),
        flag(
            "tun-csum",
            None,
            "Tunnel with checksum (not supported by xvs)",
        ),
        flag(
            "tun-remcsum",
            None,
            "Tunnel with remote checksum (not supported by xvs)",
        ),
        value(
            "weight",
            Some('w'),
            "WEIGHT",
            "Capacity of the real server; 0 quiesces it",
        ),
        value(
            "u-threshold",
            Some('x'),
            "UTHRESHOLD",
            "Upper connection threshold (kernel IPVS)",
        ),
        value(
            "l-threshold",
            Some('y'),
            "LTHRESHOLD",
            "Lower connection threshold (kernel IPVS)",
        ),
        flag("connection", Some('c'), "List the connections"),
        flag("timeout", None, "List the timeouts (tcp tcpfin udp)"),
        flag(
            "daemon",
            None,
            "List the sync daemon (not supported by xvs)",
        ),
        flag("stats", None, "List the counters"),
        flag("rate", None, "List the rates"),
        flag("exact", None, "Exact numbers, without K/M/G"),
        flag("thresholds", None, "List the thresholds"),
        flag("persistent-conn", None, "List persistent connections"),
        flag("tun-info", None, "List tunnel settings"),
        flag("nosort", None, "Do not sort services and servers"),
        flag(
            "sort",
            None,
            "Does nothing (ipvsadm's backwards compatibility)",
        ),
        flag("ops", Some('o'), "One-packet scheduling (kernel IPVS)"),
        flag("numeric", Some('n'), "Numeric addresses and ports"),
        value(
            "sched-flags",
            Some('b'),
            "FLAGS",
            "Scheduler flags, comma-separated (e.g. sh-fallback,sh-port)",
        ),
        flag(
            "engine",
            None,
            "(xvs) Show the engine serving each service: [fastpath] or [kernel]",
        ),
        value(
            "syncid",
            None,
            "SID",
            "Sync daemon option (not supported by xvs)",
        ),
        value(
            "sync-maxlen",
            None,
            "LENGTH",
            "Sync daemon option (not supported by xvs)",
        ),
        value(
            "mcast-interface",
            None,
            "INTERFACE",
            "Sync daemon option (not supported by xvs)",
        ),
        value(
            "mcast-group",
            None,
            "ADDRESS",
            "Sync daemon option (not supported by xvs)",
        ),
        value(
            "mcast-port",
            None,
            "PORT",
            "Sync daemon option (not supported by xvs)",
        ),
        value(
            "mcast-ttl",
            None,
            "TTL",
            "Sync daemon option (not supported by xvs)",
        ),
    ];
    Command::new("xvsadm")
        .version(env!("CARGO_PKG_VERSION"))
        .about("ipvsadm's command line and output for the xvs fast path")
        .long_about(
            "xvsadm administers the virtual server table of xvsd, the xvs node daemon, with \
             ipvsadm's syntax and output: the same commands, options, listings, save format and \
             exit codes. Services are served by the XDP/tc fast path where it supports them and \
             by kernel IPVS otherwise.",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args(commands.into_iter().map(|a| a.help_heading("Commands")))
        .args(service.into_iter().map(|a| a.help_heading("Virtual service")))
        .args(options.into_iter().map(|a| a.help_heading("Options")))
        .group(ArgGroup::new("command").args([
            "add-service",
            "edit-service",
            "delete-service",
            "clear",
            "restore",
            "save",
            "add-server",
            "edit-server",
            "delete-server",
            "list",
            "zero",
            "set",
            "start-daemon",
            "stop-daemon",
        ]))
        .after_help(
            "Examples:\n  xvsadm -A -t 10.96.0.10:80 -s rr\n  xvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m\n  xvsadm -L -n --stats\n  xvsadm -S -n > rules; xvsadm -R < rules",
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_definition_is_consistent() {
        super::command().debug_assert();
    }
}
