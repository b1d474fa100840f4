//! xvsadm's ipvsadm text against ipvsadm's own, recorded from the real ipvsadm on a real
//! kernel IPVS (tests/data/kernel-ipvs/, see lb-user/tests/vm_ipvs_netlink.rs): the rules
//! ipvsadm was given are parsed with the restore parser into the table model, the snapshot
//! the kernel had is built from it (no traffic, so zero counters and connections, the
//! kernel's default timeouts), and every listing must equal ipvsadm's byte for byte.
use std::collections::HashMap;
use std::net::IpAddr;

use lb_user::ipvsadm::{
    format_list_with, format_save_with, ipvs_banner, parse_args_with, parse_restore_full,
    parse_restore_with, xvs_banner, Command, ListOptions, NumericResolver, ParseError, Resolver,
    StaticResolver,
};
use lb_user::model::{ServiceKey, Table};
use lb_user::snapshot::{DestView, EngineKind, ServiceView, Snapshot, Stats, TunnelView};

const RULES: &str = include_str!("../../tests/data/kernel-ipvs/rules.txt");
const SAVE: &str = include_str!("../../tests/data/kernel-ipvs/save.txt");

fn golden(name: &str) -> &'static str {
    match name {
        "list.txt" => include_str!("../../tests/data/kernel-ipvs/list.txt"),
        "list-stats.txt" => include_str!("../../tests/data/kernel-ipvs/list-stats.txt"),
        "list-rate.txt" => include_str!("../../tests/data/kernel-ipvs/list-rate.txt"),
        "list-exact.txt" => include_str!("../../tests/data/kernel-ipvs/list-exact.txt"),
        "list-thresholds.txt" => include_str!("../../tests/data/kernel-ipvs/list-thresholds.txt"),
        "list-persistent-conn.txt" => {
            include_str!("../../tests/data/kernel-ipvs/list-persistent-conn.txt")
        }
        "list-tun-info.txt" => include_str!("../../tests/data/kernel-ipvs/list-tun-info.txt"),
        "list-timeout.txt" => include_str!("../../tests/data/kernel-ipvs/list-timeout.txt"),
        _ => panic!("no golden {name}"),
    }
}

/// The listings the goldens were recorded with (vm_ipvs_netlink.rs), by file name.
const LISTINGS: &[(&str, &[&str])] = &[
    ("list.txt", &["-L", "-n"]),
    ("list-stats.txt", &["-L", "-n", "--stats"]),
    ("list-rate.txt", &["-L", "-n", "--rate"]),
    ("list-exact.txt", &["-L", "-n", "--exact"]),
    ("list-thresholds.txt", &["-L", "-n", "--thresholds"]),
    (
        "list-persistent-conn.txt",
        &["-L", "-n", "--persistent-conn"],
    ),
    ("list-tun-info.txt", &["-L", "-n", "--tun-info"]),
    ("list-timeout.txt", &["-L", "-n", "--timeout"]),
];

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn list_options(words: &[&str]) -> ListOptions {
    match parse_args_with(&args(words), &NumericResolver).unwrap() {
        Command::List(o) => o,
        other => panic!("{words:?} is not a listing: {other:?}"),
    }
}

/// The snapshot a kernel programmed with `rules` (ipvsadm -R) shows before any traffic.
fn kernel_snapshot(rules: &str) -> Snapshot {
    kernel_snapshot_with(rules, &NumericResolver)
}

fn kernel_snapshot_with(rules: &str, names: &dyn Resolver) -> Snapshot {
    let mut table = Table::new();
    let mut pe: HashMap<ServiceKey, String> = HashMap::new();
    let mut tunnels: HashMap<(ServiceKey, IpAddr, u16), TunnelView> = HashMap::new();
    for (nop, extras) in parse_restore_full(rules, names).unwrap() {
        table
            .apply_op(&nop.op)
            .unwrap_or_else(|e| panic!("line {:?}: {e}", nop.line));
        match &nop.op {
            lb_user::model::Op::AddService(k, _) | lb_user::model::Op::EditService(k, _) => {
                if let Some(p) = &extras.pe_name {
                    pe.insert(*k, p.clone());
                }
            }
            lb_user::model::Op::AddDest(k, d) | lb_user::model::Op::EditDest(k, d) => {
                if let Some(t) = extras.tunnel {
                    tunnels.insert((*k, d.addr, d.port), t);
                }
            }
            _ => {}
        }
    }
    Snapshot {
        conn_tab_size: 4096,
        services: table
            .services()
            .iter()
            .map(|s| ServiceView {
                key: s.key,
                config: s.config.clone(),
                engine: EngineKind::Kernel,
                stats: Stats::default(),
                dests: s
                    .dests
                    .iter()
                    .map(|d| DestView {
                        dest: d.clone(),
                        active: 0,
                        inactive: 0,
                        persist: 0,
                        stats: Stats::default(),
                        tunnel: tunnels.get(&(s.key, d.addr, d.port)).copied(),
                    })
                    .collect(),
                pe_name: pe.get(&s.key).cloned(),
            })
            .collect(),
        conns: Vec::new(),
        timeouts: (900, 120, 300),
    }
}

fn list(snap: &Snapshot, name: &str, words: &[&str]) -> String {
    let opts = list_options(words);
    format_list_with(snap, &opts, &ipvs_banner(4096), &NumericResolver)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_listing_equals_ipvsadms() {
    let snap = kernel_snapshot(RULES);
    for (name, words) in LISTINGS {
        assert_eq!(list(&snap, name, words), golden(name), "{name}");
    }
}

#[test]
fn only_the_banner_differs_with_xvs_banner() {
    let snap = kernel_snapshot(RULES);
    for (name, words) in LISTINGS {
        let opts = list_options(words);
        let got = format_list_with(
            &snap,
            &opts,
            &xvs_banner(snap.conn_tab_size),
            &NumericResolver,
        )
        .unwrap();
        let want = golden(name);
        if opts.timeout {
            // No banner on the timeout line.
            assert_eq!(got, want, "{name}");
            continue;
        }
        let (got_banner, got_rest) = got.split_once('\n').unwrap();
        let (want_banner, want_rest) = want.split_once('\n').unwrap();
        assert_eq!(got_rest, want_rest, "{name}");
        assert_eq!(want_banner, "IP Virtual Server version 1.2.1 (size=4096)");
        assert_eq!(
            got_banner,
            "xvs (XDP Virtual Server) version 1.2.1 (size=4096)"
        );
    }
}

#[test]
fn save_equals_ipvsadms() {
    let snap = kernel_snapshot(RULES);
    assert_eq!(format_save_with(&snap, true, &NumericResolver), SAVE);
}

#[test]
fn a_save_restores_to_the_same_listings_except_thresholds() {
    // ipvsadm -S writes no -x/-y: after a save and restore the thresholds are gone, in
    // ipvsadm as here. Everything else lists as before.
    let snap = kernel_snapshot(SAVE);
    for (name, words) in LISTINGS {
        let got = list(&snap, name, words);
        if *name == "list-thresholds.txt" {
            assert_ne!(got, golden(name));
            assert!(got.lines().skip(3).all(|l| {
                !l.starts_with("  ->") || l[34..].starts_with("0          0          ")
            }));
        } else {
            assert_eq!(got, golden(name), "{name}");
        }
    }
}

#[test]
fn save_round_trips() {
    let once = format_save_with(&kernel_snapshot(SAVE), true, &NumericResolver);
    assert_eq!(once, SAVE);
    let twice = format_save_with(&kernel_snapshot(&once), true, &NumericResolver);
    assert_eq!(twice, once);
    // Also through the strict parser, for the lines the model holds.
    let pe_services: Vec<String> = SAVE
        .lines()
        .filter(|l| l.contains("--pe"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let supported: String = SAVE
        .lines()
        .filter(|l| {
            let svc = l
                .split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            !pe_services.contains(&svc)
                && !l.contains("--tun-type gre")
                && !l.contains("--tun-type gue")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let ops = parse_restore_with(&supported, &NumericResolver).unwrap();
    let mut t = Table::new();
    for nop in &ops {
        t.apply_op(&nop.op).unwrap();
    }
    let again = format_save_with(&kernel_snapshot(&supported), true, &NumericResolver);
    assert_eq!(again, supported);
    assert_eq!(
        t.services().len(),
        supported.lines().filter(|l| l.starts_with("-A")).count()
    );
}

#[test]
fn the_strict_parser_refuses_what_the_model_cannot_hold_naming_the_line() {
    let e = parse_restore_with(RULES, &NumericResolver).unwrap_err();
    let line = RULES
        .lines()
        .position(|l| l.contains("--tun-type gre"))
        .unwrap()
        + 1;
    match &e {
        ParseError::Line { line: l, error } => {
            assert_eq!(*l, line);
            assert!(matches!(**error, ParseError::Unsupported(_)), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("--tun-type gre"), "{e}");
    let e = parse_restore_with(SAVE, &NumericResolver).unwrap_err();
    assert!(matches!(e, ParseError::Line { .. }), "{e:?}");
    let pe_only = "-A -u 10.0.0.7:5060 -s rr -p 60 --pe sip\n";
    let e = parse_restore_with(pe_only, &NumericResolver).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: --pe sip: persistence engines are not supported by xvs"
    );
}

/// The lines of Debian's /etc/services that the reference table's ports hit.
const DEBIAN_SERVICES: &str = "\
domain		53/tcp				# Domain Name Server
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
https		443/tcp				# http protocol over TLS/SSL
https		443/udp				# HTTP/3
shell		514/tcp		cmd syslog	# no passwords used
syslog		514/udp
sip		5060/tcp			# Session Initiation Protocol
sip		5060/udp
sip-tls		5061/tcp
sip-tls		5061/udp
http-alt	8080/tcp	webcache	# WWW caching service
tproxy		8081/tcp			# Transparent Proxy
";

/// `ipvsadm -L` (without -n) of the reference table where reverse DNS fails (ipvsadm then
/// prints the address) and /etc/services is Debian's: written from ipvsadm's source
/// (addrport_to_anyname, port_to_anyname), not recorded. Fwmark services have protocol 0, so
/// their ports stay numbers; Debian has no sctp entries.
const LIST_NAMES: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:http rr
  -> 10.244.1.5:http-alt          Masq    1      0          0         
  -> 10.244.1.6:http-alt          Masq    0      0          0         
  -> 10.244.1.7:tproxy            Masq    3      0          0         
TCP  10.0.0.4:https lc persistent 600 mask 255.255.255.0
  -> 10.244.4.1:https             Route   1      0          0         
  -> 10.244.4.2:https             Route   1      0          0         
TCP  10.0.0.5:0 wlc persistent 3600
  -> 10.244.5.1:0                 Route   2      0          0         
UDP  10.0.0.2:domain wrr
  -> 10.244.2.1:domain            Route   3      0          0         
  -> 10.244.2.2:domain            Tunnel  2      0          0         
  -> 10.244.2.3:domain            Tunnel  1      0          0         
UDP  10.0.0.6:syslog rr ops
  -> 10.244.6.1:syslog            Masq    1      0          0         
UDP  10.0.0.7:sip rr persistent 60 pe sip
  -> 10.244.7.1:sip               Masq    1      0          0         
UDP  10.0.0.8:sip-tls sh (sh-fallback) persistent 30 mask 255.255.0.0 pe sip ops
  -> 10.244.9.1:sip-tls           Masq    2      0          0         
SCTP 10.0.0.3:9000 sh (sh-fallback,sh-port)
  -> 10.244.3.1:9000              Masq    1      0          0         
  -> 10.244.3.2:9001              Masq    4      0          0         
TCP  [fd00::1]:https mh (mh-fallback)
  -> [fd00:1::1]:8443             Masq    1      0          0         
  -> [fd00:1::2]:8443             Masq    2      0          0         
UDP  [fd00::2]:domain wlc persistent 300 mask 64
  -> [fd00:2::1]:domain           Route   5      0          0         
  -> [fd00:2::2]:domain           Tunnel  0      0          0         
SCTP [fd00::3]:3868 sh (sh-port)
  -> [fd00:4::1]:3868             Masq    1      0          0         
FWM  42 wlc persistent 360
  -> 10.244.8.1:0                 Route   1      0          0         
  -> 10.244.8.2:8080              Masq    1      0          0         
FWM  43 IPv6 rr
  -> [fd00:3::1]:0                Route   1      0          0         
";

/// `ipvsadm -S` (without -n) of the same, written from ipvsadm's source.
const SAVE_NAMES: &str = "\
-A -t 10.0.0.1:http -s rr
-a -t 10.0.0.1:http -r 10.244.1.5:http-alt -m -w 1
-a -t 10.0.0.1:http -r 10.244.1.6:http-alt -m -w 0
-a -t 10.0.0.1:http -r 10.244.1.7:tproxy -m -w 3
-A -t 10.0.0.4:https -s lc -p 600 -M 255.255.255.0
-a -t 10.0.0.4:https -r 10.244.4.1:https -g -w 1
-a -t 10.0.0.4:https -r 10.244.4.2:https -g -w 1
-A -t 10.0.0.5:0 -s wlc -p 3600
-a -t 10.0.0.5:0 -r 10.244.5.1:0 -g -w 2
-A -u 10.0.0.2:domain -s wrr
-a -u 10.0.0.2:domain -r 10.244.2.1:domain -g -w 3
-a -u 10.0.0.2:domain -r 10.244.2.2:domain -i -w 2 --tun-type ipip
-a -u 10.0.0.2:domain -r 10.244.2.3:domain -i -w 1 --tun-type gre --tun-csum
-A -u 10.0.0.6:syslog -s rr -o
-a -u 10.0.0.6:syslog -r 10.244.6.1:syslog -m -w 1
-A -u 10.0.0.7:sip -s rr -p 60 --pe sip
-a -u 10.0.0.7:sip -r 10.244.7.1:sip -m -w 1
-A -u 10.0.0.8:sip-tls -s sh -p 30 -M 255.255.0.0 --pe sip -o -b sh-fallback
-a -u 10.0.0.8:sip-tls -r 10.244.9.1:sip-tls -m -w 2
-A --sctp-service 10.0.0.3:9000 -s sh -b sh-fallback,sh-port
-a --sctp-service 10.0.0.3:9000 -r 10.244.3.1:9000 -m -w 1
-a --sctp-service 10.0.0.3:9000 -r 10.244.3.2:9001 -m -w 4
-A -t [fd00::1]:https -s mh -b mh-fallback
-a -t [fd00::1]:https -r [fd00:1::1]:8443 -m -w 1
-a -t [fd00::1]:https -r [fd00:1::2]:8443 -m -w 2
-A -u [fd00::2]:domain -s wlc -p 300 -M 64
-a -u [fd00::2]:domain -r [fd00:2::1]:domain -g -w 5
-a -u [fd00::2]:domain -r [fd00:2::2]:domain -i -w 0 --tun-type gue --tun-port 6080 --tun-csum
-A --sctp-service [fd00::3]:3868 -s sh -b sh-port
-a --sctp-service [fd00::3]:3868 -r [fd00:4::1]:3868 -m -w 1
-A -f 42 -s wlc -p 360
-a -f 42 -r 10.244.8.1:0 -g -w 1
-a -f 42 -r 10.244.8.2:8080 -m -w 1
-A -f 43 -6 -s rr
-a -f 43 -6 -r [fd00:3::1]:0 -g -w 1
";

#[test]
fn names_without_n_as_ipvsadm_prints_them() {
    let names = StaticResolver::new().with_services(DEBIAN_SERVICES);
    let snap = kernel_snapshot(RULES);
    let opts = list_options(&["-L"]);
    assert!(!opts.numeric);
    assert_eq!(
        format_list_with(&snap, &opts, &ipvs_banner(4096), &names).unwrap(),
        LIST_NAMES
    );
    assert_eq!(format_save_with(&snap, false, &names), SAVE_NAMES);
    // The names read back (ipvsadm -R resolves them) to the same table.
    let back = kernel_snapshot_with(SAVE_NAMES, &names);
    assert_eq!(format_save_with(&back, true, &NumericResolver), SAVE);
}
