//! Parsing and formatting, one behaviour of ipvsadm at a time.
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::model::{
    Destination, Family, Forward, Op, Protocol, ServiceConfig, ServiceFlags, ServiceKey, Table,
    TableError,
};
use crate::snapshot::{ConnView, DestView, EngineKind, ServiceView, Snapshot, Stats, TunnelView};

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn parse(s: &str) -> Result<Command, ParseError> {
    parse_args_with(&words(s), &NumericResolver)
}

fn full(s: &str) -> Result<Parsed, ParseError> {
    parse_args_full(&words(s), &NumericResolver)
}

fn op(s: &str) -> Op {
    match parse(s) {
        Ok(Command::Apply(mut ops)) if ops.len() == 1 => ops.remove(0),
        other => panic!("{s}: {other:?}"),
    }
}

fn err(s: &str) -> String {
    match parse(s) {
        Err(e) => e.to_string(),
        Ok(c) => panic!("{s}: accepted as {c:?}"),
    }
}

fn invalid(s: &str) -> String {
    match parse(s) {
        Err(ParseError::Invalid(m)) => m,
        other => panic!("{s}: {other:?}"),
    }
}

fn list(s: &str) -> ListOptions {
    match parse(s) {
        Ok(Command::List(o)) => o,
        other => panic!("{s}: {other:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(a: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        proto: Protocol::Tcp,
        addr: ip(a),
        port,
    }
}

fn udp(a: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        proto: Protocol::Udp,
        addr: ip(a),
        port,
    }
}

fn config(sched: &str) -> ServiceConfig {
    ServiceConfig::with_scheduler(sched)
}

fn dest(a: &str, port: u16, forward: Forward, weight: u32) -> Destination {
    Destination {
        addr: ip(a),
        port,
        forward,
        weight,
        u_thresh: 0,
        l_thresh: 0,
    }
}

// ---------------------------------------------------------------- services

#[test]
fn add_service_defaults_are_ipvsadms() {
    assert_eq!(
        op("-A -t 10.0.0.1:80"),
        Op::AddService(tcp("10.0.0.1", 80), config("wlc"))
    );
    // IPv6 services get a /128 persistence mask, as ipvsadm sets it.
    let mut v6 = config("rr");
    v6.netmask = 128;
    assert_eq!(
        op("-A -u [fd00::2]:53 -s rr"),
        Op::AddService(udp("fd00::2", 53), v6)
    );
}

#[test]
fn persistence_timeout_and_netmask() {
    let persistent = |timeout, netmask| ServiceConfig {
        scheduler: "wlc".into(),
        flags: ServiceFlags {
            persistent: true,
            ..Default::default()
        },
        timeout,
        netmask,
    };
    // -p without a value is 360 s (IPVS_SVC_PERSISTENT_TIMEOUT; the man page says 300).
    assert_eq!(
        op("-A -t 10.0.0.1:80 -p"),
        Op::AddService(tcp("10.0.0.1", 80), persistent(360, u32::MAX))
    );
    // The optional value is not taken from a following option.
    assert_eq!(
        op("-A -t 10.0.0.1:80 -p -s wlc"),
        Op::AddService(tcp("10.0.0.1", 80), persistent(360, u32::MAX))
    );
    assert_eq!(
        op("-A -t 10.0.0.1:80 -p 600 -M 255.255.255.0"),
        Op::AddService(tcp("10.0.0.1", 80), persistent(600, 0xffff_ff00))
    );
    assert_eq!(
        op("-A -t 10.0.0.1:80 -p600"),
        Op::AddService(tcp("10.0.0.1", 80), persistent(600, u32::MAX))
    );
    assert_eq!(
        op("-A -t 10.0.0.1:0 --persistent=3600"),
        Op::AddService(tcp("10.0.0.1", 0), persistent(3600, u32::MAX))
    );
    assert_eq!(
        op("-A -t [fd00::1]:80 -p 10 -M 64"),
        Op::AddService(tcp("fd00::1", 80), persistent(10, 64))
    );
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 -p 0"),
        "invalid timeout value `0' specified"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 -p 2678401"),
        "invalid timeout value `2678401' specified"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 -p 1h"),
        "invalid timeout value `1h' specified"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 -p -M 255.255.256.0"),
        "illegal virtual server persistent mask specified"
    );
    assert_eq!(
        invalid("-A -t [fd00::1]:80 -p -M 129"),
        "illegal ipv6 netmask specified"
    );
    assert_eq!(
        invalid("-A -t [fd00::1]:80 -p -M 0"),
        "illegal ipv6 netmask specified"
    );
    // -M before an IPv6 address is read as an IPv4 mask, then the address resets it to /128.
    let Op::AddService(_, c) = op("-A -M 64 -t [fd00::1]:80 -p") else {
        unreachable!()
    };
    assert_eq!(c.netmask, 128);
}

#[test]
fn scheduler_names_pass_through_to_the_model() {
    let o = op("-A -t 10.0.0.1:80 -s nosuch");
    assert_eq!(o, Op::AddService(tcp("10.0.0.1", 80), config("nosuch")));
    assert_eq!(
        Table::new().apply_op(&o),
        Err(TableError::UnknownScheduler("nosuch".into()))
    );
    // ipvsadm keeps 15 bytes of a scheduler name.
    assert_eq!(
        op("-A -t 10.0.0.1:80 -s abcdefghijklmnopq"),
        Op::AddService(tcp("10.0.0.1", 80), config("abcdefghijklmno"))
    );
    // An empty name is the default.
    let args = vec![
        "-A".into(),
        "-t".into(),
        "10.0.0.1:80".into(),
        "-s".into(),
        String::new(),
    ];
    assert_eq!(
        parse_args_with(&args, &NumericResolver).unwrap(),
        Command::Apply(vec![Op::AddService(tcp("10.0.0.1", 80), config("wlc"))])
    );
}

#[test]
fn scheduler_flags_and_one_packet() {
    let flags = |s: &str| match op(s) {
        Op::AddService(_, c) | Op::EditService(_, c) => c.flags,
        o => panic!("{o:?}"),
    };
    let f = flags("-A -u 10.0.0.3:53 -s sh -b sh-fallback,sh-port -o");
    assert!(f.sched1 && f.sched2 && !f.sched3 && f.onepacket && !f.persistent);
    let f = flags("-E -t 10.0.0.3:80 -s mh -b mh-port");
    assert!(!f.sched1 && f.sched2);
    let f = flags("-A -t 10.0.0.3:80 -s rr --sched-flags flag-1,flag-3");
    assert!(f.sched1 && !f.sched2 && f.sched3);
    let f = flags("-A -f 7 -o");
    assert!(f.onepacket);
    assert_eq!(
        invalid("-A -t 10.0.0.3:80 -s rr -b sh-port"),
        "incompatible scheduler flag `sh-port'"
    );
    // Without -s the scheduler is wlc, so sh flags are refused.
    assert_eq!(
        invalid("-A -t 10.0.0.3:80 -b sh-fallback"),
        "incompatible scheduler flag `sh-fallback'"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.3:80 -s sh -b bogus"),
        "invalid scheduler flag `bogus'"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.3:80 -o"),
        "One-Packet Scheduling is only for UDP virtual services"
    );
}

#[test]
fn service_addresses() {
    assert_eq!(op("-D -t 10.0.0.1:80"), Op::DelService(tcp("10.0.0.1", 80)));
    assert_eq!(
        op("-D --sctp-service 10.0.0.3:9000"),
        Op::DelService(ServiceKey::Inet {
            proto: Protocol::Sctp,
            addr: ip("10.0.0.3"),
            port: 9000
        })
    );
    assert_eq!(
        op("-D --udp-service=[fd00::2]:53"),
        Op::DelService(udp("fd00::2", 53))
    );
    // inet_aton's forms.
    assert_eq!(op("-D -t 10.1:80"), Op::DelService(tcp("10.0.0.1", 80)));
    // An IPv6 address without brackets has no port: all of it is the address.
    assert_eq!(op("-D -t fd00::1:80"), Op::DelService(tcp("fd00::1:80", 0)));
    // ipvsadm reads "[1.2.3.4]:80" as 1.2.3.4 without a port.
    assert_eq!(op("-D -t [1.2.3.4]:80"), Op::DelService(tcp("1.2.3.4", 0)));
    for bad in [
        "-D -t 10.0.0.300:80",
        "-D -t 80",
        "-D -t [fd00::1]",
        "-D -t [fd00::1]80",
        "-D -t 10.0.0.1:65536",
        "-D -t 10.0.0.1:",
        "-D -t 10.0.0.1:-1",
        "-D -t 10.0.0.1:http",
        "-D -t www.example.com:80",
    ] {
        assert_eq!(
            invalid(bad),
            "illegal virtual server address[:port] specified",
            "{bad}"
        );
    }
    // A missing port is port 0, which only a persistent service may have.
    assert_eq!(
        invalid("-A -t 10.0.0.1"),
        "Zero port specified for non-persistent service"
    );
    assert!(parse("-A -t 10.0.0.1 -p").is_ok());
    assert_eq!(
        invalid("-A -s rr"),
        "You need to supply the 'service-address' option for the 'add-service' command"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 -f 3"),
        "multiple 'service-address' options specified"
    );
}

#[test]
fn names_resolve_with_a_resolver() {
    let names = StaticResolver::new()
        .with_services("http 80/tcp www\nhttp 80/udp\ndomain 53/udp\n")
        .with_host(ip("10.0.0.9"), "www.example.com");
    let cmd = |s: &str| parse_args_with(&words(s), &names).unwrap();
    assert_eq!(
        cmd("-D -t www.example.com:http"),
        Command::Apply(vec![Op::DelService(tcp("10.0.0.9", 80))])
    );
    assert_eq!(
        cmd("-D -t 10.0.0.1:www"),
        Command::Apply(vec![Op::DelService(tcp("10.0.0.1", 80))])
    );
    assert_eq!(
        cmd("-d -u 10.0.0.1:domain -r 10.0.0.2"),
        Command::Apply(vec![Op::DelDest(udp("10.0.0.1", 53), ip("10.0.0.2"), 53)])
    );
    // Service names are per protocol.
    assert!(parse_args_with(&words("-D -u 10.0.0.1:www"), &names).is_err());
}

#[test]
fn fwmark_services() {
    assert_eq!(
        op("-A -f 42 -s rr"),
        Op::AddService(
            ServiceKey::Fwmark {
                family: Family::Inet,
                mark: 42
            },
            config("rr")
        )
    );
    let mut v6 = config("rr");
    v6.netmask = 128;
    assert_eq!(
        op("-A --fwmark-service 43 --ipv6 -s rr"),
        Op::AddService(
            ServiceKey::Fwmark {
                family: Family::Inet6,
                mark: 43
            },
            v6
        )
    );
    assert_eq!(
        op("-D -f 4294967295"),
        Op::DelService(ServiceKey::Fwmark {
            family: Family::Inet,
            mark: u32::MAX
        })
    );
    assert_eq!(invalid("-A -6 -f 43"), "-6 used before -f");
    for bad in ["0", "-1", "4294967296", "x", "42x"] {
        assert_eq!(
            invalid(&format!("-D -f {bad}")),
            format!("invalid fwmark value `{bad}' specified")
        );
    }
}

#[test]
fn long_options() {
    assert_eq!(
        op("--add-service --tcp-service 10.0.0.1:80 --scheduler rr --persistent 60 --netmask 255.255.0.0"),
        Op::AddService(
            tcp("10.0.0.1", 80),
            ServiceConfig {
                scheduler: "rr".into(),
                flags: ServiceFlags {
                    persistent: true,
                    ..Default::default()
                },
                timeout: 60,
                netmask: 0xffff_0000
            }
        )
    );
    assert_eq!(
        op("--add-server --tcp-service=10.0.0.1:80 --real-server=10.1.0.1:8080 --masquerading --weight=3 --u-threshold 10 --l-threshold 5"),
        Op::AddDest(
            tcp("10.0.0.1", 80),
            Destination {
                u_thresh: 10,
                l_thresh: 5,
                ..dest("10.1.0.1", 8080, Forward::Masq, 3)
            }
        )
    );
    assert_eq!(
        op("--delete-service -t 10.0.0.1:80"),
        Op::DelService(tcp("10.0.0.1", 80))
    );
    assert_eq!(op("--clear"), Op::Clear);
    // Bundled short options, values attached.
    assert_eq!(
        op("-at 10.0.0.1:80 -r10.1.0.1 -mw2"),
        Op::AddDest(tcp("10.0.0.1", 80), dest("10.1.0.1", 80, Forward::Masq, 2))
    );
}

// ---------------------------------------------------------------- destinations

#[test]
fn add_dest_defaults_are_ipvsadms() {
    // Default forwarding is -g (direct routing), weight 1, port the service's.
    assert_eq!(
        op("-a -t 10.0.0.1:80 -r 10.1.0.1"),
        Op::AddDest(tcp("10.0.0.1", 80), dest("10.1.0.1", 80, Forward::Route, 1))
    );
    // Direct routing and tunnelling force the service's port.
    assert_eq!(
        op("-a -t 10.0.0.1:80 -r 10.1.0.1:8080"),
        Op::AddDest(tcp("10.0.0.1", 80), dest("10.1.0.1", 80, Forward::Route, 1))
    );
    assert_eq!(
        op("-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -i"),
        Op::AddDest(
            tcp("10.0.0.1", 80),
            dest("10.1.0.1", 80, Forward::Tunnel, 1)
        )
    );
    assert_eq!(
        op("-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 0"),
        Op::AddDest(
            tcp("10.0.0.1", 80),
            dest("10.1.0.1", 8080, Forward::Masq, 0)
        )
    );
    // Not for fwmark services.
    assert_eq!(
        op("-a -f 42 -r 10.1.0.1:8080 -g"),
        Op::AddDest(
            ServiceKey::Fwmark {
                family: Family::Inet,
                mark: 42
            },
            dest("10.1.0.1", 8080, Forward::Route, 1)
        )
    );
    // -r before -t: the service has no port yet, so neither has the destination.
    assert_eq!(
        op("-a -r 10.1.0.1 -t 10.0.0.1:80 -m"),
        Op::AddDest(tcp("10.0.0.1", 80), dest("10.1.0.1", 0, Forward::Masq, 1))
    );
    // -e sets everything, like -a: an omitted -w is weight 1 again.
    assert_eq!(
        op("-e -t 10.0.0.1:80 -r 10.1.0.1 -m"),
        Op::EditDest(tcp("10.0.0.1", 80), dest("10.1.0.1", 80, Forward::Masq, 1))
    );
    assert_eq!(
        op("-d -t 10.0.0.1:80 -r 10.1.0.1"),
        Op::DelDest(tcp("10.0.0.1", 80), ip("10.1.0.1"), 80)
    );
    assert_eq!(
        op("-d -t [fd00::1]:80 -r [fd00::5]:8080"),
        Op::DelDest(tcp("fd00::1", 80), ip("fd00::5"), 8080)
    );
}

#[test]
fn weights_and_thresholds() {
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -w -1"),
        "illegal weight specified"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -w 65536"),
        "illegal weight specified"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -w x"),
        "illegal weight specified"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -w 1.5"),
        "illegal weight specified"
    );
    assert_eq!(
        op("-a -t 10.0.0.1:80 -r 10.1.0.1 -w 65535 -x 2147483647 -y 0"),
        Op::AddDest(
            tcp("10.0.0.1", 80),
            Destination {
                u_thresh: i32::MAX as u32,
                ..dest("10.1.0.1", 80, Forward::Route, 65535)
            }
        )
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -x -1"),
        "illegal u_threshold specified"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -y 2147483648"),
        "illegal l_threshold specified"
    );
}

#[test]
fn destination_errors() {
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.300"),
        "illegal real server address[:port] specified"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80"),
        "You need to supply the 'real-server' option for the 'add-server' command"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r [fd00::1]:80 -m"),
        "Different address family is allowed only for tunneling servers"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -m -g"),
        "multiple 'forwarding-method' options specified"
    );
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r 10.1.0.1 -s rr"),
        "Illegal 'scheduler' option with the 'add-server' command"
    );
    assert_eq!(
        invalid("-d -t 10.0.0.1:80 -r 10.1.0.1 -w 1"),
        "Illegal 'weight' option with the 'delete-server' command"
    );
}

#[test]
fn tunnel_options() {
    // Plain ipip is what the model means by a tunnel destination: accepted.
    assert_eq!(
        op("-a -u 10.0.0.2:53 -r 10.244.2.2:53 -i -w 2 --tun-type ipip"),
        Op::AddDest(
            udp("10.0.0.2", 53),
            dest("10.244.2.2", 53, Forward::Tunnel, 2)
        )
    );
    // gue and gre parse, with their settings beside the operation ...
    let p = full("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type gue --tun-port 6080 --tun-csum")
        .unwrap();
    assert_eq!(
        p.extras.tunnel,
        Some(TunnelView {
            kind: 1,
            port: 6080,
            flags: 1
        })
    );
    let p = full("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type gre --tun-remcsum");
    assert_eq!(
        p.unwrap_err().to_string(),
        "Illegal 'tun-remcsum' option with the 'gre' tunnel type"
    );
    // ... and the model cannot hold them: refused, naming the option.
    let e = parse("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type gre --tun-csum").unwrap_err();
    assert!(matches!(e, ParseError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("--tun-type gre"), "{e}");
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        invalid("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type gue"),
        "You need to supply the 'tun-port' option for the 'gue' tunnel type"
    );
    assert_eq!(
        invalid("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-port 6080"),
        "Illegal 'tun-port' option with the 'ipip' tunnel type"
    );
    assert_eq!(
        invalid("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type gre --tun-nocsum --tun-csum"),
        "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gre' tunnel type"
    );
    assert_eq!(
        invalid("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -m --tun-type gre"),
        "Tunnel options conflict with forward method"
    );
    assert_eq!(
        invalid("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type vxlan"),
        "illegal tunnel type specified"
    );
    assert_eq!(
        invalid("-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i --tun-type gue --tun-port 0"),
        "illegal tunnel port specified"
    );
    // A tunnel may cross address families (the model refuses it later).
    assert!(full("-a -t 10.0.0.1:80 -r fd00::1 -i").is_ok());
    // A bracketed address needs a port.
    assert_eq!(
        invalid("-a -t 10.0.0.1:80 -r [fd00::1] -i"),
        "illegal real server address[:port] specified"
    );
}

#[test]
fn persistence_engine_is_refused_naming_the_option() {
    let p = full("-A -u 10.0.0.7:5060 -s rr -p 60 --pe sip").unwrap();
    assert_eq!(p.extras.pe_name.as_deref(), Some("sip"));
    let e = parse("-A -u 10.0.0.7:5060 -s rr -p 60 --pe sip").unwrap_err();
    assert!(matches!(e, ParseError::Unsupported(_)));
    assert!(e.to_string().starts_with("--pe sip"), "{e}");
    assert_eq!(
        invalid("-a -u 10.0.0.7:5060 -r 10.0.0.8 --pe sip"),
        "Illegal 'pe' option with the 'add-server' command"
    );
}

// ---------------------------------------------------------------- other commands

#[test]
fn clear_zero_save_restore_set() {
    assert_eq!(parse("-C").unwrap(), Command::Apply(vec![Op::Clear]));
    assert_eq!(
        invalid("-C -t 10.0.0.1:80"),
        "Illegal 'service-address' option with the 'flush' command"
    );
    assert_eq!(parse("-Z").unwrap(), Command::Zero(None));
    assert_eq!(
        parse("--zero -t 10.0.0.1:80").unwrap(),
        Command::Zero(Some(tcp("10.0.0.1", 80)))
    );
    assert_eq!(
        parse("-Z -f 5 -6").unwrap(),
        Command::Zero(Some(ServiceKey::Fwmark {
            family: Family::Inet6,
            mark: 5
        }))
    );
    assert_eq!(parse("-S").unwrap(), Command::Save { numeric: false });
    assert_eq!(parse("--save -n").unwrap(), Command::Save { numeric: true });
    assert_eq!(
        invalid("-S --stats"),
        "Illegal 'stats' option with the 'save' command"
    );
    assert_eq!(parse("-R").unwrap(), Command::Restore);
    assert_eq!(
        invalid("-R -n"),
        "Illegal 'numeric' option with the 'restore' command"
    );
    assert_eq!(
        parse("--set 900 120 300").unwrap(),
        Command::SetTimeouts {
            tcp: 900,
            tcpfin: 120,
            udp: 300
        }
    );
    assert_eq!(
        parse("--set 0 0 5").unwrap(),
        Command::SetTimeouts {
            tcp: 0,
            tcpfin: 0,
            udp: 5
        }
    );
    assert_eq!(
        invalid("--set 1 2"),
        "--set option requires 3 timeout values"
    );
    assert_eq!(
        invalid("--set 1 2 x"),
        "invalid timeout value `x' specified"
    );
    // A negative value looks like an option to the option splitter.
    assert_eq!(err("--set 1 2 -3"), "-3: unknown option");
    assert_eq!(
        invalid("--set 1 2 -- -3"),
        "invalid timeout value `-3' specified"
    );
    assert_eq!(invalid("--set 1 2 3 4"), "unexpected argument 4");
    assert_eq!(invalid("-L junk"), "unexpected argument junk");
}

#[test]
fn help_version_and_usage_errors() {
    assert_eq!(parse("-h").unwrap(), Command::Help);
    assert_eq!(parse("--help --bogus").unwrap(), Command::Help);
    assert_eq!(parse("-v").unwrap(), Command::Version);
    assert_eq!(parse("--version").unwrap(), Command::Version);
    // No arguments: list the table, with names.
    assert_eq!(
        parse_args_with(&[], &NumericResolver).unwrap(),
        Command::List(ListOptions::default())
    );
    // The command must come first.
    for s in ["-n -L", "foo", "--bogus", "-t 10.0.0.1:80 -A", "--"] {
        assert_eq!(parse(s), Err(ParseError::TryHelp), "{s}");
    }
    assert_eq!(
        err("-n"),
        "Try `xvsadm -h' or 'xvsadm --help' for more information."
    );
    assert_eq!(ParseError::TryHelp.exit_code(), 255);
    // Option errors after the command, worded as popt words them.
    assert_eq!(err("-L --bogus"), "--bogus: unknown option");
    assert_eq!(err("-Lq"), "-Lq: unknown option");
    assert_eq!(err("-A -t"), "-t: missing argument");
    assert_eq!(
        err("-L --stats=1"),
        "--stats=1: option does not take an argument"
    );
    assert_eq!(parse("-L --bogus").unwrap_err().exit_code(), 255);
    // A second command is an invalid option.
    assert_eq!(invalid("-L -A"), "invalid option `-A'");
    assert_eq!(invalid("-L -h"), "invalid option `-h'");
    assert!(usage_text().contains("--add-service     -A"));
    assert!(version_text().starts_with("xvsadm v"));
}

#[test]
fn sync_daemon_is_refused() {
    for s in [
        "--start-daemon master",
        "--start-daemon backup --mcast-interface eth1 --syncid 3",
        "--stop-daemon master",
        "-L --daemon",
        "-L --syncid 5",
    ] {
        let e = parse(s).unwrap_err();
        assert!(matches!(e, ParseError::Unsupported(_)), "{s}: {e:?}");
        assert!(e.to_string().contains("daemon"), "{s}: {e}");
    }
    assert_eq!(
        invalid("--start-daemon primary"),
        "illegal start-daemon parameter specified"
    );
    assert_eq!(
        invalid("--start-daemon master --mcast-port 0"),
        "illegal mcast-port specified"
    );
    assert_eq!(
        invalid("--start-daemon master --mcast-group 10.0.0.1"),
        "invalid IPv4 mcast-group `10.0.0.1'"
    );
    assert_eq!(
        invalid("--start-daemon master --syncid 256"),
        "illegal syncid specified"
    );
    assert_eq!(
        invalid("--stop-daemon master --mcast-ttl 2"),
        "Illegal 'mcast-ttl' option with the 'stop-daemon' command"
    );
}

#[test]
fn list_options() {
    assert_eq!(list("-L"), ListOptions::default());
    assert_eq!(
        list("-Ln"),
        ListOptions {
            numeric: true,
            ..Default::default()
        }
    );
    assert_eq!(list("-l -n"), list("--list --numeric"));
    let o = list("-L -n --stats --exact --nosort --sort");
    assert!(o.numeric && o.stats && o.exact && o.nosort && !o.rate);
    let o = list("-L -X --rate");
    assert!(o.exact && o.rate);
    let o = list("-L --thresholds --persistent-conn --tun-info");
    assert!(o.thresholds && o.persistent_conn && o.tun_info);
    let o = list("-L -n -c");
    assert!(o.connections);
    let o = list("-L --timeout");
    assert!(o.timeout);
    let o = list("-L -n -t 10.0.0.1:80");
    assert_eq!(o.service, Some(tcp("10.0.0.1", 80)));
    let o = list("-L -n --engine");
    assert!(o.engine);
    assert_eq!(
        invalid("-L -c -t 10.0.0.1:80"),
        "The option 'service-address' conflicts with the 'connection' option in the 'list' command"
    );
    assert_eq!(
        invalid("-L -c --timeout"),
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
    );
    assert_eq!(
        invalid("-L -c --stats"),
        "options conflicts in the list command"
    );
    assert_eq!(
        invalid("-L --timeout --persistent-conn"),
        "options conflicts in the list command"
    );
    assert_eq!(
        invalid("-L -c --engine"),
        "options conflicts in the list command"
    );
    assert_eq!(
        invalid("-L -o"),
        "Illegal 'ops' option with the 'list' command"
    );
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 --engine"),
        "Illegal 'engine' option with the 'add-service' command"
    );
    assert_eq!(invalid("-L -n -n"), "multiple 'numeric' options specified");
}

// ---------------------------------------------------------------- restore

#[test]
fn restore_files() {
    let text = "\
# written by hand
-A -t 10.0.0.1:80 -s rr

ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 2   # a comment
\t-C\r
";
    let ops = parse_restore_with(text, &NumericResolver).unwrap();
    assert_eq!(
        ops.iter().map(|n| n.line).collect::<Vec<_>>(),
        [Some(2), Some(4), Some(5)]
    );
    assert_eq!(ops[0].op, Op::AddService(tcp("10.0.0.1", 80), config("rr")));
    assert_eq!(
        ops[1].op,
        Op::AddDest(
            tcp("10.0.0.1", 80),
            dest("10.1.0.1", 8080, Forward::Masq, 2)
        )
    );
    assert_eq!(ops[2].op, Op::Clear);
    assert!(parse_restore_with("", &NumericResolver).unwrap().is_empty());
}

#[test]
fn invalid_utf8_in_a_restore_file_names_the_line_and_byte() {
    let mut bytes = b"-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r ".to_vec();
    bytes.extend([0xff, 0xfe]);
    bytes.extend(b" -m\n-C\n");
    let e = restore_text(&bytes).unwrap_err();
    assert_eq!(e.to_string(), "line 3: invalid UTF-8 at byte 22");
    assert_eq!(e.exit_code(), 2);
    // A truncated sequence at the very start of the file.
    assert_eq!(
        restore_text(&[0xc3]).unwrap_err().to_string(),
        "line 1: invalid UTF-8 at byte 1"
    );
    assert_eq!(
        restore_text("-C\n\u{e9}\n".as_bytes()).unwrap(),
        "-C\n\u{e9}\n"
    );
}

#[test]
fn one_bad_line_rejects_the_file_naming_the_line() {
    let text = "-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r 10.1.0.1 -w -5\n-C\n";
    let e = parse_restore_with(text, &NumericResolver).unwrap_err();
    assert_eq!(
        e,
        ParseError::Line {
            line: 3,
            error: Box::new(ParseError::Invalid("illegal weight specified".into()))
        }
    );
    assert_eq!(e.to_string(), "line 3: illegal weight specified");
    assert_eq!(e.exit_code(), 2);
    let e =
        parse_restore_with("-A -u 10.0.0.7:5060 -p 60 --pe sip\n", &NumericResolver).unwrap_err();
    assert!(e.to_string().starts_with("line 1: --pe sip"), "{e}");
    for (text, kind) in [
        ("-Z\n", "Unsupported"),
        ("--set 1 2 3\n", "Unsupported"),
        ("-L -n\n", "Invalid"),
        ("-S\n", "Invalid"),
        ("-R\n", "TryHelp"),
        ("-x\n", "TryHelp"),
    ] {
        let e = parse_restore_with(text, &NumericResolver).unwrap_err();
        let ParseError::Line { line: 1, error } = &e else {
            panic!("{text}: {e:?}")
        };
        assert!(format!("{error:?}").starts_with(kind), "{text}: {e:?}");
    }
}

// ---------------------------------------------------------------- formatting

fn service(key: ServiceKey, config: ServiceConfig, dests: Vec<DestView>) -> ServiceView {
    ServiceView {
        key,
        config,
        engine: EngineKind::FastPath,
        stats: Stats::default(),
        dests,
        pe_name: None,
    }
}

fn dview(d: Destination) -> DestView {
    DestView {
        dest: d,
        active: 0,
        inactive: 0,
        persist: 0,
        stats: Stats::default(),
        tunnel: None,
    }
}

fn snapshot(services: Vec<ServiceView>) -> Snapshot {
    Snapshot {
        conn_tab_size: 4096,
        services,
        conns: Vec::new(),
        timeouts: (900, 120, 300),
    }
}

fn listing(snap: &Snapshot, args: &str) -> String {
    let Command::List(o) = parse(args).unwrap() else {
        panic!("{args}")
    };
    format_list_with(snap, &o, &xvs_banner(snap.conn_tab_size), &NumericResolver).unwrap()
}

fn largenum_str(i: u64, exact: bool) -> String {
    let mut s = String::new();
    format::largenum(&mut s, i, exact);
    s
}

#[test]
fn large_numbers_abbreviate_from_a_hundred_million() {
    let exact: &[(u64, &str)] = &[
        (0, "        0"),
        (99_999_999, " 99999999"),
        (100_000_000, " 100000000"),
        (123_456_789_012, " 123456789012"),
        (u64::MAX, " 18446744073709551615"),
    ];
    for (i, text) in exact {
        assert_eq!(largenum_str(*i, true), *text, "{i}");
    }
    assert_eq!(largenum_str(0, false), "        0");
    assert_eq!(largenum_str(99_999_999, false), " 99999999");
    assert_eq!(largenum_str(100_000_000, false), "  100000K");
    assert_eq!(largenum_str(999_999_999, false), "  999999K");
    assert_eq!(largenum_str(1_000_000_000, false), "    1000M");
    assert_eq!(largenum_str(99_999_999_999, false), "   99999M");
    assert_eq!(largenum_str(100_000_000_000, false), "     100G");
    assert_eq!(largenum_str(99_999_999_999_999, false), "   99999G");
    assert_eq!(largenum_str(100_000_000_000_000, false), "     100T");
    assert_eq!(largenum_str(u64::MAX, false), "18446744T");
}

fn counters_snapshot() -> Snapshot {
    let big = Stats {
        conns: 123_456_789,
        inpkts: 99_999_999,
        outpkts: 1_000_000_000,
        inbytes: 123_456_789_012_345,
        outbytes: 99_999_999_999_999,
        cps: 123_456_789,
        inpps: 7,
        outpps: 100_000_000,
        inbps: 2_500_000_000,
        outbps: 0,
    };
    let mut d = dview(dest("10.244.1.5", 8080, Forward::Masq, 1));
    d.stats = big;
    let mut s = service(tcp("10.0.0.1", 80), config("rr"), vec![d]);
    s.stats = big;
    snapshot(vec![s])
}

#[test]
fn stats_with_counters() {
    let snap = counters_snapshot();
    assert_eq!(
        listing(&snap, "-L -n --stats"),
        "\
xvs (XDP Virtual Server) version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                   123456K 99999999    1000M     123T   99999G
  -> 10.244.1.5:8080               123456K 99999999    1000M     123T   99999G
"
    );
    assert_eq!(
        listing(&snap, "-L -n --stats --exact"),
        "\
xvs (XDP Virtual Server) version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                  123456789 99999999 1000000000 123456789012345 99999999999999
  -> 10.244.1.5:8080              123456789 99999999 1000000000 123456789012345 99999999999999
"
    );
}

#[test]
fn rates_with_counters() {
    // Destinations' CPS, InPPS and OutPPS are printed in full, even without --exact.
    let snap = counters_snapshot();
    assert_eq!(
        listing(&snap, "-L -n --rate"),
        "\
xvs (XDP Virtual Server) version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.1:80                   123456K        7  100000K    2500M        0
  -> 10.244.1.5:8080              123456789        7 100000000    2500M        0
"
    );
}

#[test]
fn ipv6_fwmark_port_zero_and_flags() {
    let mut persistent = config("wlc");
    persistent.flags.persistent = true;
    persistent.timeout = 360;
    let mut sh3 = config("sh");
    sh3.flags.sched3 = true;
    let mut v6mask = config("rr");
    v6mask.flags.persistent = true;
    v6mask.timeout = 10;
    v6mask.netmask = u32::MAX; // the model's "no mask": /128
    let snap = snapshot(vec![
        service(
            ServiceKey::Fwmark {
                family: Family::Inet6,
                mark: 7,
            },
            config("rr"),
            vec![dview(dest("fd00::9", 0, Forward::Route, 1))],
        ),
        service(
            tcp("10.0.0.9", 0),
            persistent.clone(),
            vec![dview(dest("10.1.0.1", 0, Forward::Local, 1))],
        ),
        service(tcp("10.0.0.8", 80), sh3, vec![]),
        service(
            tcp("fd00::1:0:0:0", 80),
            v6mask,
            vec![dview(dest("::ffff:10.1.1.1", 80, Forward::Bypass, 1))],
        ),
        service(
            ServiceKey::Fwmark {
                family: Family::Inet,
                mark: 7,
            },
            persistent,
            vec![],
        ),
    ]);
    assert_eq!(
        listing(&snap, "-L -n"),
        "\
xvs (XDP Virtual Server) version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.8:80 sh ()
TCP  10.0.0.9:0 wlc persistent 360
  -> 10.1.0.1:0                   Local   1      0          0         
TCP  [fd00::1:0:0:0]:80 rr persistent 10
  -> [::ffff:10.1.1.1]:80         (null)  1      0          0         
FWM  7 wlc persistent 360
FWM  7 IPv6 rr
  -> [fd00::9]:0                  Route   1      0          0         
"
    );
    assert_eq!(
        format_save_with(&snap, true, &NumericResolver),
        "\
-A -t 10.0.0.8:80 -s sh -b 
-A -t 10.0.0.9:0 -s wlc -p 360
-a -t 10.0.0.9:0 -r 10.1.0.1:0 -g -w 1
-A -t [fd00::1:0:0:0]:80 -s rr -p 10
-a -t [fd00::1:0:0:0]:80 -r [::ffff:10.1.1.1]:80 (null) -w 1
-A -f 7 -s wlc -p 360
-A -f 7 -6 -s rr
-a -f 7 -6 -r [fd00::9]:0 -g -w 1
"
    );
}

#[test]
fn sorting_is_libipvss() {
    // Services: fwmark 0 first, IPv4 before IPv6, TCP UDP SCTP, address, port. Destinations:
    // address, port. Addresses compare by 32-bit differences read as signed: 1.0.0.1 comes
    // after 200.0.0.1 (0x01000001 - 0xc8000001 wraps to a positive int), as in ipvsadm.
    let snap = snapshot(vec![
        service(
            ServiceKey::Inet {
                proto: Protocol::Sctp,
                addr: ip("10.0.0.1"),
                port: 1,
            },
            config("rr"),
            vec![],
        ),
        service(udp("10.0.0.1", 1), config("rr"), vec![]),
        service(tcp("fd00::1", 1), config("rr"), vec![]),
        service(tcp("10.0.0.2", 1), config("rr"), vec![]),
        service(
            tcp("10.0.0.1", 2),
            config("rr"),
            vec![
                dview(dest("10.0.0.5", 9, Forward::Masq, 1)),
                dview(dest("1.0.0.1", 9, Forward::Masq, 1)),
                dview(dest("200.0.0.1", 9, Forward::Masq, 1)),
                dview(dest("10.0.0.5", 8, Forward::Masq, 1)),
            ],
        ),
        service(tcp("10.0.0.1", 1), config("rr"), vec![]),
    ]);
    let order = |args: &str| -> Vec<String> {
        listing(&snap, args)
            .lines()
            .skip(3)
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        order("-L -n"),
        [
            "TCP 10.0.0.1:1",
            "TCP 10.0.0.1:2",
            "-> 200.0.0.1:9",
            "-> 1.0.0.1:9",
            "-> 10.0.0.5:8",
            "-> 10.0.0.5:9",
            "TCP 10.0.0.2:1",
            "UDP 10.0.0.1:1",
            "SCTP 10.0.0.1:1",
            "TCP [fd00::1]:1",
        ]
    );
    assert_eq!(
        order("-L -n --nosort"),
        [
            "SCTP 10.0.0.1:1",
            "UDP 10.0.0.1:1",
            "TCP [fd00::1]:1",
            "TCP 10.0.0.2:1",
            "TCP 10.0.0.1:2",
            "-> 10.0.0.5:9",
            "-> 1.0.0.1:9",
            "-> 200.0.0.1:9",
            "-> 10.0.0.5:8",
            "TCP 10.0.0.1:1",
        ]
    );
}

#[test]
fn names_without_n_and_cut_columns() {
    let names = StaticResolver::new()
        .with_services("http 80/tcp www\nhttp-alt 8080/tcp webcache\n")
        .with_host(ip("10.0.0.1"), "a-very-long-host-name.example.com")
        .with_host(ip("10.1.0.1"), "backend-number-one.example.com")
        .with_host(ip("fd00::1"), "a-very-long-ipv6-host-name.example.com");
    let snap = snapshot(vec![
        service(
            tcp("10.0.0.1", 80),
            config("rr"),
            vec![
                dview(dest("10.1.0.1", 8080, Forward::Masq, 1)),
                dview(dest("10.1.0.2", 8081, Forward::Masq, 1)),
            ],
        ),
        service(
            tcp("fd00::1", 80),
            config("rr"),
            vec![dview(dest("fd00::1", 80, Forward::Route, 1))],
        ),
    ]);
    let o = ListOptions::default();
    assert_eq!(
        format_list_with(&snap, &o, "B", &names).unwrap(),
        "\
B
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  a-very-long-host-name.exampl rr
  -> backend-number-one.example.c Masq    1      0          0         
  -> 10.1.0.2:8081                Masq    1      0          0         
TCP  [a-very-long-ipv6-host-name.example.com]:http rr
  -> [a-very-long-ipv6-host-name.example.com]:http Route   1      0          0         
"
    );
    assert_eq!(
        format_save_with(&snap, false, &names),
        "\
-A -t a-very-long-host-name.example.com:http -s rr
-a -t a-very-long-host-name.example.com:http -r backend-number-one.example.com:http-alt -m -w 1
-a -t a-very-long-host-name.example.com:http -r 10.1.0.2:8081 -m -w 1
-A -t [a-very-long-ipv6-host-name.example.com]:http -s rr
-a -t [a-very-long-ipv6-host-name.example.com]:http -r [a-very-long-ipv6-host-name.example.com]:http -g -w 1
"
    );
}

#[test]
fn one_service_timeouts_and_engine() {
    let mut k = service(
        udp("10.0.0.2", 53),
        config("wrr"),
        vec![dview(dest("10.244.2.1", 53, Forward::Route, 3))],
    );
    k.engine = EngineKind::Kernel;
    let snap = snapshot(vec![service(tcp("10.0.0.1", 80), config("rr"), vec![]), k]);
    // One service: no banner.
    assert_eq!(
        listing(&snap, "-L -n -u 10.0.0.2:53"),
        "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
UDP  10.0.0.2:53 wrr
  -> 10.244.2.1:53                Route   3      0          0         
"
    );
    let Command::List(o) = parse("-L -n -t 10.0.0.9:80").unwrap() else {
        unreachable!()
    };
    assert_eq!(
        format_list_with(&snap, &o, "", &NumericResolver),
        Err(FormatError::NoSuchService)
    );
    assert_eq!(
        listing(&snap, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    assert_eq!(
        listing(&snap, "-L -n --engine"),
        "\
xvs (XDP Virtual Server) version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 rr [fastpath]
UDP  10.0.0.2:53 wrr [kernel]
  -> 10.244.2.1:53                Route   3      0          0         
"
    );
    assert_eq!(
        listing(&snap, "-L -n --stats --engine").lines().nth(3),
        Some("TCP  10.0.0.1:80                         0        0        0        0        0 [fastpath]")
    );
    assert!(!listing(&snap, "-L -n").contains('['));
}

#[test]
fn connections() {
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    let mut snap = snapshot(vec![]);
    snap.conns = vec![
        ConnView {
            proto: Protocol::Tcp,
            client: sa("192.168.1.10:54321"),
            vip: sa("10.0.0.1:80"),
            dest: sa("10.244.1.5:8080"),
            state: "ESTABLISHED".into(),
            expires_in_s: 899,
        },
        ConnView {
            proto: Protocol::Udp,
            client: sa("[fd00::9]:5353"),
            vip: sa("[fd00::2]:53"),
            dest: sa("[fd00:2::1]:53"),
            state: "UDP".into(),
            expires_in_s: 6001,
        },
        ConnView {
            proto: Protocol::Sctp,
            client: sa("192.168.1.10:0"),
            vip: sa("10.0.0.3:9000"),
            dest: sa("10.244.3.1:9000"),
            state: "NONE".into(),
            expires_in_s: 5,
        },
    ];
    assert_eq!(
        listing(&snap, "-L -n -c"),
        "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 192.168.1.10:54321 10.0.0.1:80        10.244.1.5:8080
UDP 100:01 UDP         [fd00::9]:5353     [fd00::2]:53       [fd00:2::1]:53
SCTP 00:05  NONE        192.168.1.10:0     10.0.0.3:9000      10.244.3.1:9000
"
    );
    assert_eq!(
        listing(&snap, "-L -n -c --persistent-conn").lines().nth(1),
        Some("pro expire state       source             virtual            destination        pe name          pe_data")
    );
    let names = StaticResolver::new().with_services("http 80/tcp\ndomain 53/udp\n");
    let o = ListOptions {
        connections: true,
        ..Default::default()
    };
    let text = format_list_with(&snap, &o, "", &names).unwrap();
    assert_eq!(
        text.lines().nth(2),
        Some("TCP 14:59  ESTABLISHED 192.168.1.10:54321 10.0.0.1:http      10.244.1.5:8080")
    );
}

#[test]
fn tunnel_info_and_save_of_tunnels() {
    let mut gre = dview(dest("10.244.2.3", 53, Forward::Tunnel, 1));
    gre.tunnel = Some(TunnelView {
        kind: 2,
        port: 0,
        flags: 0,
    });
    let mut gue = dview(dest("10.244.2.4", 53, Forward::Tunnel, 1));
    gue.tunnel = Some(TunnelView {
        kind: 1,
        port: 6080,
        flags: 2,
    });
    let ipip = dview(dest("10.244.2.2", 53, Forward::Tunnel, 2));
    let snap = snapshot(vec![service(
        udp("10.0.0.2", 53),
        config("wrr"),
        vec![gre, gue, ipip],
    )]);
    assert_eq!(
        listing(&snap, "-L -n --tun-info"),
        "\
xvs (XDP Virtual Server) version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
UDP  10.0.0.2:53 wrr
  -> 10.244.2.2:53                Tunnel  ipip          2      0          0         
  -> 10.244.2.3:53                Tunnel  gre:-c        1      0          0         
  -> 10.244.2.4:53                Tunnel  gue:6080:r+c  1      0          0         
"
    );
    assert_eq!(
        format_save_with(&snap, true, &NumericResolver),
        "\
-A -u 10.0.0.2:53 -s wrr
-a -u 10.0.0.2:53 -r 10.244.2.2:53 -i -w 2 --tun-type ipip
-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i -w 1 --tun-type gre --tun-nocsum
-a -u 10.0.0.2:53 -r 10.244.2.4:53 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum
"
    );
}

#[test]
fn system_service_names_come_from_etc_services() {
    // Only where /etc/services has the usual entry (every Debian has it).
    let has_http = std::fs::read_to_string("/etc/services")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().take(2).eq(["http", "80/tcp"]))
        })
        .unwrap_or(false);
    if has_http {
        assert_eq!(
            SystemResolver.port_to_service(80, Protocol::Tcp).as_deref(),
            Some("http")
        );
        assert_eq!(
            SystemResolver.service_to_port("http", Protocol::Tcp),
            Some(80)
        );
    }
    assert_eq!(SystemResolver.port_to_service(0, Protocol::Tcp), None);
    assert_eq!(
        SystemResolver.service_to_port("no-such-service-x", Protocol::Udp),
        None
    );
}

#[test]
fn every_long_option_is_wired() {
    assert_eq!(
        op("--edit-service --udp-service 10.0.0.1:53 --ops --scheduler rr"),
        Op::EditService(
            udp("10.0.0.1", 53),
            ServiceConfig {
                flags: ServiceFlags {
                    onepacket: true,
                    ..Default::default()
                },
                ..config("rr")
            }
        )
    );
    assert_eq!(
        op("--edit-server -t 10.0.0.1:80 --real-server 10.1.0.1 --ipip"),
        Op::EditDest(
            tcp("10.0.0.1", 80),
            dest("10.1.0.1", 80, Forward::Tunnel, 1)
        )
    );
    assert_eq!(
        op("--add-server -t 10.0.0.1:80 --real-server 10.1.0.1 --gatewaying"),
        Op::AddDest(tcp("10.0.0.1", 80), dest("10.1.0.1", 80, Forward::Route, 1))
    );
    assert_eq!(
        op("--delete-server -t 10.0.0.1:80 --real-server 10.1.0.1:81"),
        Op::DelDest(tcp("10.0.0.1", 80), ip("10.1.0.1"), 81)
    );
    assert_eq!(parse("--restore").unwrap(), Command::Restore);
    let o = list("--list --connection --numeric --exact");
    assert!(o.connections && o.numeric && o.exact);
    let o = list("-L --tun-info --thresholds --persistent-conn --rate --stats --nosort");
    assert!(o.tun_info && o.thresholds && o.persistent_conn && o.rate && o.stats && o.nosort);
    assert_eq!(
        invalid("--start-daemon master --sync-maxlen 70000"),
        "illegal sync-maxlen specified"
    );
    assert_eq!(
        invalid("--start-daemon master --mcast-ttl 0"),
        "illegal mcast-ttl specified"
    );
    assert_eq!(
        invalid("--start-daemon master --mcast-group ff02::1x"),
        "invalid IPv6 mcast-group `ff02::1x'"
    );
    assert!(matches!(
        parse("--start-daemon master --mcast-group ff02::1 --mcast-port 8848 --sync-maxlen 1472"),
        Err(ParseError::Unsupported(_))
    ));
    assert_eq!(
        invalid("-A -t 10.0.0.1:80 --mcast-interface eth0"),
        "Illegal 'mcast-interface' option with the 'add-service' command"
    );
}

/// The clap definition `cargo xtask dist` renders xvsadm's man page and completions from
/// (lb_cli::xvsadm) has every long option ipvsadm's `-h` text lists, and no other.
#[test]
fn the_documented_command_line_has_every_option_of_the_help_text() {
    let help = crate::ipvsadm::usage_text();
    let mut listed: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == '|' || c == '[' || c == ']')
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    listed.sort();
    listed.dedup();
    let cmd = lb_cli::xvsadm::command();
    let mut defined: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(str::to_string)
        .collect();
    // -v/--version is in the usage line as -v only.
    defined.retain(|l| l != "version");
    defined.sort();
    assert_eq!(defined, listed);
}
