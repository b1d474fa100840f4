//! The IPVS netlink client against a real kernel IPVS and ipvsadm, inside the test VM
//! (`cargo xtask vm-test`). Outside the VM (no XVS_IN_VM) every test returns at once.
//!
//! The reference table below is written once by ipvsadm (`ipvsadm -R`) and once by the client;
//! both must read back identically through the client and through ipvsadm, and ipvsadm's
//! listings must equal the golden files in tests/data/kernel-ipvs/ (recorded from this test by
//! `cargo xtask vm-test --record-golden`).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lb_user::ipvs_nl::{
    to_table, DestOptions, IpvsClient, IpvsError, KernelService, ServiceOptions, Stats, Timeouts,
    Tunnel, TunnelKind,
};
use lb_user::model::{
    Destination, Family, Forward, Protocol, ServiceConfig, ServiceFlags, ServiceKey,
};

// ---------------------------------------------------------------------------------------
// Harness

static KERNEL: Mutex<()> = Mutex::new(());

/// The kernel's table is shared: tests take turns, each starting from an empty table.
fn setup() -> Option<(MutexGuard<'static, ()>, IpvsClient)> {
    if std::env::var_os("XVS_IN_VM").is_none() {
        eprintln!("note: skipped: needs a kernel with IPVS (run `cargo xtask vm-test`)");
        return None;
    }
    let guard = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let c = IpvsClient::new().expect("IPVS netlink family");
    c.flush().expect("flush");
    Some((guard, c))
}

fn recording() -> bool {
    std::env::var_os("XVS_RECORD_GOLDEN").is_some()
}

/// Leaves a file for the harness (it copies $XVS_VM_OUT back to the host).
fn artifact(rel: &str, content: &str) {
    if let Some(dir) = std::env::var_os("XVS_VM_OUT") {
        let p = std::path::Path::new(&dir).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// Compares with a committed golden file, unless recording new ones.
fn golden(name: &str, actual: &str, committed: &str) {
    artifact(&format!("kernel-ipvs/{name}"), actual);
    if recording() {
        return;
    }
    assert_eq!(
        actual, committed,
        "ipvsadm output differs from tests/data/kernel-ipvs/{name} (re-record with \
         `cargo xtask vm-test --record-golden` if the change is intended)"
    );
}

fn ipvsadm_with_input(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("ipvsadm")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ipvsadm");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(i) = input {
            stdin.write_all(i.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "ipvsadm {} failed: {}{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ipvsadm(args: &[&str]) -> String {
    ipvsadm_with_input(args, None).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(args: &str) {
    let st = Command::new("/sbin/ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// The reference table

/// Every kind of entry: TCP/UDP/SCTP, IPv4/IPv6, fwmark (both families), schedulers rr wrr sh
/// mh lc wlc with flags, persistence with timeout and netmask, a persistence engine,
/// one-packet scheduling, masq/route/tunnel (ipip, gre, gue) destinations, weights incl. 0,
/// thresholds. Services and destinations in the order they are added.
const RULES: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.244.1.5:8080 -m -w 1
-a -t 10.0.0.1:80 -r 10.244.1.6:8080 -m -w 0
-a -t 10.0.0.1:80 -r 10.244.1.7:8081 -m -w 3 -x 100 -y 50
-A -u 10.0.0.2:53 -s wrr
-a -u 10.0.0.2:53 -r 10.244.2.1:53 -g -w 3
-a -u 10.0.0.2:53 -r 10.244.2.2:53 -i -w 2
-a -u 10.0.0.2:53 -r 10.244.2.3:53 -i -w 1 --tun-type gre --tun-csum
-A --sctp-service 10.0.0.3:9000 -s sh -b sh-fallback,sh-port
-a --sctp-service 10.0.0.3:9000 -r 10.244.3.1:9000 -m -w 1
-a --sctp-service 10.0.0.3:9000 -r 10.244.3.2:9001 -m -w 4
-A -t 10.0.0.4:443 -s lc -p 600 -M 255.255.255.0
-a -t 10.0.0.4:443 -r 10.244.4.1:443 -g -w 1
-a -t 10.0.0.4:443 -r 10.244.4.2:443 -g -w 1 -x 1000
-A -t 10.0.0.5:0 -s wlc -p 3600
-a -t 10.0.0.5:0 -r 10.244.5.1:0 -g -w 2
-A -u 10.0.0.6:514 -s rr -o
-a -u 10.0.0.6:514 -r 10.244.6.1:514 -m -w 1
-A -u 10.0.0.7:5060 -s rr -p 60 --pe sip
-a -u 10.0.0.7:5060 -r 10.244.7.1:5060 -m -w 1
-A -u 10.0.0.8:5061 -s sh -b sh-fallback -p 30 -M 255.255.0.0 --pe sip -o
-a -u 10.0.0.8:5061 -r 10.244.9.1:5061 -m -w 2 -x 5
-A -t [fd00::1]:443 -s mh -b mh-fallback
-a -t [fd00::1]:443 -r [fd00:1::1]:8443 -m -w 1
-a -t [fd00::1]:443 -r [fd00:1::2]:8443 -m -w 2 -x 10 -y 5
-A -u [fd00::2]:53 -s wlc -p 300 -M 64
-a -u [fd00::2]:53 -r [fd00:2::1]:53 -g -w 5
-a -u [fd00::2]:53 -r [fd00:2::2]:53 -i -w 0 --tun-type gue --tun-port 6080 --tun-csum
-A -f 42 -s wlc -p
-a -f 42 -r 10.244.8.1:0 -g -w 1
-a -f 42 -r 10.244.8.2:8080 -m -w 1
-A -f 43 -6 -s rr
-a -f 43 -6 -r [fd00:3::1]:0 -g -w 1
-A --sctp-service [fd00::3]:3868 -s sh -b sh-port
-a --sctp-service [fd00::3]:3868 -r [fd00:4::1]:3868 -m -w 1
";

struct Entry {
    key: ServiceKey,
    config: ServiceConfig,
    options: ServiceOptions,
    /// In the order added (the kernel lists them the other way round).
    dests: Vec<(Destination, DestOptions)>,
}

fn inet(proto: Protocol, addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        proto,
        addr: a(addr),
        port,
    }
}

fn cfg(sched: &str, flags: u32, timeout: u32, netmask: u32) -> ServiceConfig {
    ServiceConfig {
        scheduler: sched.into(),
        flags: ServiceFlags::from_bits(flags),
        timeout,
        netmask,
    }
}

fn dest(addr: &str, port: u16, forward: Forward, weight: u32, u: u32, l: u32) -> Destination {
    Destination {
        addr: a(addr),
        port,
        forward,
        weight,
        u_thresh: u,
        l_thresh: l,
    }
}

fn plain(d: Destination) -> (Destination, DestOptions) {
    (d, DestOptions::default())
}

fn tunnel(d: Destination, kind: TunnelKind, port: u16, flags: u16) -> (Destination, DestOptions) {
    (
        d,
        DestOptions {
            tunnel: Tunnel { kind, port, flags },
        },
    )
}

const ALL: u32 = u32::MAX;
const P: u32 = ServiceFlags::PERSISTENT;
const S1: u32 = ServiceFlags::SCHED1;
const S2: u32 = ServiceFlags::SCHED2;
/// ipvsadm's persistence timeout when `-p` has no value.
const IPVSADM_DEFAULT_PERSISTENCE: u32 = 360;

fn no_opts() -> ServiceOptions {
    ServiceOptions::default()
}

/// The model of RULES.
fn reference_table() -> Vec<Entry> {
    use Forward::*;
    use Protocol::*;
    vec![
        Entry {
            key: inet(Tcp, "10.0.0.1", 80),
            config: cfg("rr", 0, 0, ALL),
            options: no_opts(),
            dests: vec![
                plain(dest("10.244.1.5", 8080, Masq, 1, 0, 0)),
                plain(dest("10.244.1.6", 8080, Masq, 0, 0, 0)),
                plain(dest("10.244.1.7", 8081, Masq, 3, 100, 50)),
            ],
        },
        Entry {
            key: inet(Udp, "10.0.0.2", 53),
            config: cfg("wrr", 0, 0, ALL),
            options: no_opts(),
            dests: vec![
                plain(dest("10.244.2.1", 53, Route, 3, 0, 0)),
                plain(dest("10.244.2.2", 53, Tunnel, 2, 0, 0)),
                tunnel(
                    dest("10.244.2.3", 53, Tunnel, 1, 0, 0),
                    TunnelKind::Gre,
                    0,
                    lb_user::ipvs_nl::Tunnel::CSUM,
                ),
            ],
        },
        Entry {
            key: inet(Sctp, "10.0.0.3", 9000),
            config: cfg("sh", S1 | S2, 0, ALL),
            options: no_opts(),
            dests: vec![
                plain(dest("10.244.3.1", 9000, Masq, 1, 0, 0)),
                plain(dest("10.244.3.2", 9001, Masq, 4, 0, 0)),
            ],
        },
        Entry {
            key: inet(Tcp, "10.0.0.4", 443),
            config: cfg("lc", P, 600, 0xffff_ff00),
            options: no_opts(),
            dests: vec![
                plain(dest("10.244.4.1", 443, Route, 1, 0, 0)),
                plain(dest("10.244.4.2", 443, Route, 1, 1000, 0)),
            ],
        },
        Entry {
            key: inet(Tcp, "10.0.0.5", 0),
            config: cfg("wlc", P, 3600, ALL),
            options: no_opts(),
            dests: vec![plain(dest("10.244.5.1", 0, Route, 2, 0, 0))],
        },
        Entry {
            key: inet(Udp, "10.0.0.6", 514),
            config: cfg("rr", ServiceFlags::ONEPACKET, 0, ALL),
            options: no_opts(),
            dests: vec![plain(dest("10.244.6.1", 514, Masq, 1, 0, 0))],
        },
        Entry {
            key: inet(Udp, "10.0.0.7", 5060),
            config: cfg("rr", P, 60, ALL),
            options: ServiceOptions {
                pe_name: Some("sip".into()),
            },
            dests: vec![plain(dest("10.244.7.1", 5060, Masq, 1, 0, 0))],
        },
        Entry {
            key: inet(Udp, "10.0.0.8", 5061),
            config: cfg("sh", P | S1 | ServiceFlags::ONEPACKET, 30, 0xffff_0000),
            options: ServiceOptions {
                pe_name: Some("sip".into()),
            },
            dests: vec![plain(dest("10.244.9.1", 5061, Masq, 2, 5, 0))],
        },
        Entry {
            key: inet(Tcp, "fd00::1", 443),
            config: cfg("mh", S1, 0, 128),
            options: no_opts(),
            dests: vec![
                plain(dest("fd00:1::1", 8443, Masq, 1, 0, 0)),
                plain(dest("fd00:1::2", 8443, Masq, 2, 10, 5)),
            ],
        },
        Entry {
            key: inet(Udp, "fd00::2", 53),
            config: cfg("wlc", P, 300, 64),
            options: no_opts(),
            dests: vec![
                plain(dest("fd00:2::1", 53, Route, 5, 0, 0)),
                tunnel(
                    dest("fd00:2::2", 53, Tunnel, 0, 0, 0),
                    TunnelKind::Gue,
                    6080,
                    lb_user::ipvs_nl::Tunnel::CSUM,
                ),
            ],
        },
        Entry {
            key: ServiceKey::Fwmark {
                family: Family::Inet,
                mark: 42,
            },
            config: cfg("wlc", P, IPVSADM_DEFAULT_PERSISTENCE, ALL),
            options: no_opts(),
            dests: vec![
                plain(dest("10.244.8.1", 0, Route, 1, 0, 0)),
                plain(dest("10.244.8.2", 8080, Masq, 1, 0, 0)),
            ],
        },
        Entry {
            key: ServiceKey::Fwmark {
                family: Family::Inet6,
                mark: 43,
            },
            config: cfg("rr", 0, 0, 128),
            options: no_opts(),
            dests: vec![plain(dest("fd00:3::1", 0, Route, 1, 0, 0))],
        },
        Entry {
            key: inet(Sctp, "fd00::3", 3868),
            config: cfg("sh", S2, 0, 128),
            options: no_opts(),
            dests: vec![plain(dest("fd00:4::1", 3868, Masq, 1, 0, 0))],
        },
    ]
}

fn write_with_client(c: &IpvsClient, table: &[Entry]) {
    for e in table {
        c.add_service_with(&e.key, &e.config, &e.options)
            .unwrap_or_else(|err| panic!("add {}: {err}", e.key));
        for (d, o) in &e.dests {
            c.add_dest_with(&e.key, d, o)
                .unwrap_or_else(|err| panic!("add {} to {}: {err}", d.addr, e.key));
        }
    }
}

/// What a service looks like through the client, for comparing: everything configurable.
type Shape = (
    ServiceKey,
    ServiceConfig,
    ServiceOptions,
    Vec<(Destination, DestOptions)>,
);

fn shape_of(ks: &KernelService) -> Shape {
    (
        ks.service.key,
        ks.service.config.clone(),
        ks.options.clone(),
        ks.dests().map(|(d, s)| (d.clone(), s.options)).collect(),
    )
}

fn expected_shapes(table: &[Entry]) -> Vec<Shape> {
    let mut v: Vec<Shape> = table
        .iter()
        .map(|e| {
            let mut dests = e.dests.clone();
            dests.reverse(); // the kernel lists the newest first
            (e.key, e.config.clone(), e.options.clone(), dests)
        })
        .collect();
    v.sort_by_key(|s| s.0);
    v
}

fn read_shapes(c: &IpvsClient) -> Vec<Shape> {
    let mut v: Vec<Shape> = c.services().unwrap().iter().map(shape_of).collect();
    v.sort_by_key(|s| s.0);
    v
}

fn assert_same_shapes(actual: &[Shape], expected: &[Shape]) {
    assert_eq!(actual.len(), expected.len(), "number of services");
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a, e, "service {}", e.0);
    }
}

/// ipvsadm's views of the table, by golden file name.
fn listings() -> Vec<(&'static str, String)> {
    vec![
        ("list.txt", ipvsadm(&["-L", "-n"])),
        ("list-stats.txt", ipvsadm(&["-L", "-n", "--stats"])),
        ("list-rate.txt", ipvsadm(&["-L", "-n", "--rate"])),
        ("list-exact.txt", ipvsadm(&["-L", "-n", "--exact"])),
        (
            "list-thresholds.txt",
            ipvsadm(&["-L", "-n", "--thresholds"]),
        ),
        (
            "list-persistent-conn.txt",
            ipvsadm(&["-L", "-n", "--persistent-conn"]),
        ),
        ("list-tun-info.txt", ipvsadm(&["-L", "-n", "--tun-info"])),
        ("save.txt", ipvsadm(&["-S", "-n"])),
    ]
}

fn committed(name: &str) -> &'static str {
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
        "save.txt" => include_str!("../../tests/data/kernel-ipvs/save.txt"),
        "rules.txt" => include_str!("../../tests/data/kernel-ipvs/rules.txt"),
        "list-timeout.txt" => include_str!("../../tests/data/kernel-ipvs/list-timeout.txt"),
        other => panic!("no golden file {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn info_matches_ipvsadm() {
    let Some((_g, c)) = setup() else { return };
    let info = c.info().unwrap();
    assert_eq!(info.version, 0x010201);
    assert_eq!(info.version_string(), "1.2.1");
    let header = ipvsadm(&["-L", "-n"]);
    assert_eq!(
        header.lines().next().unwrap(),
        format!(
            "IP Virtual Server version 1.2.1 (size={})",
            info.conn_tab_size
        )
    );
    assert!(c.services().unwrap().is_empty());
}

/// ipvsadm writes, the client reads every attribute back; then the client writes the same
/// table and ipvsadm prints exactly what it printed for its own.
#[test]
fn reference_table_both_ways() {
    let Some((_g, c)) = setup() else { return };
    let table = reference_table();
    golden("rules.txt", RULES, committed("rules.txt"));

    // 1. ipvsadm writes.
    ipvsadm_with_input(&["-R"], Some(RULES)).unwrap_or_else(|e| panic!("{e}"));
    assert_same_shapes(&read_shapes(&c), &expected_shapes(&table));
    for ks in c.services().unwrap() {
        assert_eq!(
            ks.raw_flags,
            ks.service.config.flags.bits() | ServiceFlags::HASHED,
            "raw flags of {}",
            ks.service.key
        );
        assert_eq!(ks.stats, Stats::default());
        // GET_SERVICE (do) agrees with the dump.
        assert_eq!(c.service(&ks.service.key).unwrap(), ks);
    }
    // The dump converts to the model's table, destinations in the kernel's order.
    let dump = c.services().unwrap();
    let t = to_table(&dump).unwrap();
    for ks in &dump {
        assert_eq!(t.service(&ks.service.key), Some(&ks.service));
    }
    let by_ipvsadm = listings();
    for (name, text) in &by_ipvsadm {
        golden(name, text, committed(name));
    }

    // 2. The client writes the same table.
    c.flush().unwrap();
    assert!(ipvsadm(&["-S", "-n"]).is_empty());
    write_with_client(&c, &table);
    assert_same_shapes(&read_shapes(&c), &expected_shapes(&table));
    for ((name, want), (_, got)) in by_ipvsadm.iter().zip(listings()) {
        assert_eq!(&got, want, "ipvsadm {name} of the table the client wrote");
    }
}

#[test]
fn edits_deletes_and_ipvsadm_edits() {
    let Some((_g, c)) = setup() else { return };
    let key = inet(Protocol::Tcp, "10.0.0.1", 80);
    c.add_service(&key, &cfg("rr", 0, 0, ALL)).unwrap();
    let d1 = dest("10.244.1.1", 8080, Forward::Masq, 1, 0, 0);
    let d2 = dest("10.244.1.2", 8080, Forward::Masq, 1, 0, 0);
    let d3 = dest("10.244.1.3", 8080, Forward::Masq, 1, 0, 0);
    for d in [&d1, &d2, &d3] {
        c.add_dest(&key, d).unwrap();
    }
    let order = |c: &IpvsClient| -> Vec<Destination> { c.service(&key).unwrap().service.dests };
    assert_eq!(order(&c), vec![d3.clone(), d2.clone(), d1.clone()]);

    // Edit a service: scheduler, flags, timeout, netmask all replaced.
    let edited = cfg("sh", P | S1 | S2, 1800, 0xffff_0000);
    c.edit_service(&key, &edited).unwrap();
    assert_eq!(c.service(&key).unwrap().service.config, edited);
    assert_eq!(
        ipvsadm(&["-S", "-n"]).lines().next().unwrap(),
        "-A -t 10.0.0.1:80 -s sh -p 1800 -M 255.255.0.0 -b sh-fallback,sh-port"
    );
    let back = cfg("wrr", 0, 0, ALL);
    c.edit_service(&key, &back).unwrap();
    assert_eq!(c.service(&key).unwrap().service.config, back);

    // Edit a destination: it keeps its place in the list.
    let d2e = dest("10.244.1.2", 8080, Forward::Masq, 7, 200, 100);
    c.edit_dest(&key, &d2e).unwrap();
    assert_eq!(order(&c), vec![d3.clone(), d2e.clone(), d1.clone()]);

    // ipvsadm edits, the client sees them.
    ipvsadm(&[
        "-e",
        "-t",
        "10.0.0.1:80",
        "-r",
        "10.244.1.1:8080",
        "-m",
        "-w",
        "0",
    ]);
    ipvsadm(&[
        "-E",
        "-t",
        "10.0.0.1:80",
        "-s",
        "mh",
        "-b",
        "mh-port",
        "-p",
        "90",
    ]);
    let ks = c.service(&key).unwrap();
    assert_eq!(ks.service.dests[2].weight, 0);
    assert_eq!(ks.service.config, cfg("mh", P | S2, 90, ALL));

    // Delete a destination, then the service.
    c.del_dest(&key, d2e.addr, d2e.port).unwrap();
    let mut d1z = d1.clone();
    d1z.weight = 0;
    assert_eq!(order(&c), vec![d3.clone(), d1z]);
    c.del_service(&key).unwrap();
    assert!(c.services().unwrap().is_empty());
    assert!(c.dests(&key).unwrap().is_empty());
}

#[test]
fn kernel_errors_are_typed() {
    let Some((_g, c)) = setup() else { return };
    let key = inet(Protocol::Tcp, "10.0.0.1", 80);
    let missing = inet(Protocol::Udp, "10.0.0.9", 53);
    c.add_service(&key, &cfg("rr", 0, 0, ALL)).unwrap();

    let e = c.add_service(&key, &cfg("rr", 0, 0, ALL)).unwrap_err();
    assert!(
        matches!(e, IpvsError::ServiceExists(k) if k == key),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "Service already exists: TCP 10.0.0.1:80");

    for e in [
        c.del_service(&missing).unwrap_err(),
        c.edit_service(&missing, &cfg("rr", 0, 0, ALL)).unwrap_err(),
        c.service(&missing).unwrap_err(),
        c.zero_service(&missing).unwrap_err(),
        c.add_dest(&missing, &dest("10.244.0.1", 53, Forward::Masq, 1, 0, 0))
            .unwrap_err(),
    ] {
        assert!(
            matches!(e, IpvsError::NoSuchService(k) if k == missing),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "No such service: UDP 10.0.0.9:53");
        assert_eq!(e.errno(), Some(libc::ESRCH));
    }

    let other = inet(Protocol::Tcp, "10.0.0.2", 80);
    let e = c
        .add_service(&other, &cfg("nosuch", 0, 0, ALL))
        .unwrap_err();
    assert!(
        matches!(&e, IpvsError::SchedulerNotFound { scheduler, pe_name: None } if scheduler == "nosuch"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "Scheduler not found: nosuch");
    let e = c.edit_service(&key, &cfg("nosuch", 0, 0, ALL)).unwrap_err();
    assert!(matches!(e, IpvsError::SchedulerNotFound { .. }), "{e:?}");
    let e = c
        .add_service_with(
            &other,
            &cfg("rr", P, 60, ALL),
            &ServiceOptions {
                pe_name: Some("nope".into()),
            },
        )
        .unwrap_err();
    assert!(
        matches!(&e, IpvsError::SchedulerNotFound { pe_name: Some(p), .. } if p == "nope"),
        "{e:?}"
    );

    let d = dest("10.244.1.1", 8080, Forward::Masq, 1, 0, 0);
    c.add_dest(&key, &d).unwrap();
    let e = c.add_dest(&key, &d).unwrap_err();
    assert!(matches!(e, IpvsError::DestExists { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "Destination already exists: 10.244.1.1:8080 in TCP 10.0.0.1:80"
    );
    let nd = dest("10.244.1.9", 8080, Forward::Masq, 1, 0, 0);
    for e in [
        c.edit_dest(&key, &nd).unwrap_err(),
        c.del_dest(&key, nd.addr, nd.port).unwrap_err(),
    ] {
        assert!(matches!(e, IpvsError::NoSuchDest { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "No such destination: 10.244.1.9:8080 in TCP 10.0.0.1:80"
        );
    }

    // The kernel reads the weight as a signed int.
    let heavy = dest("10.244.1.2", 8080, Forward::Masq, 1 << 31, 0, 0);
    let e = c.add_dest(&key, &heavy).unwrap_err();
    assert!(matches!(e, IpvsError::WeightRange(2147483648)), "{e:?}");
    let e = c
        .edit_dest(&key, &dest("10.244.1.1", 8080, Forward::Masq, 1, 10, 20))
        .unwrap_err();
    assert!(
        matches!(
            e,
            IpvsError::ThresholdRange {
                lower: 20,
                upper: 10
            }
        ),
        "{e:?}"
    );

    // EINVAL: an IPv6 prefix above 128, a GUE tunnel without port, a masq destination of the
    // other family.
    let v6 = inet(Protocol::Tcp, "fd00::1", 80);
    let e = c.add_service(&v6, &cfg("rr", P, 60, 129)).unwrap_err();
    assert!(matches!(e, IpvsError::Invalid { .. }), "{e:?}");
    c.add_service(&v6, &cfg("rr", 0, 0, 128)).unwrap();
    let e = c
        .add_dest_with(
            &v6,
            &dest("fd00:1::1", 80, Forward::Tunnel, 1, 0, 0),
            &DestOptions {
                tunnel: Tunnel {
                    kind: TunnelKind::Gue,
                    port: 0,
                    flags: 0,
                },
            },
        )
        .unwrap_err();
    assert!(matches!(e, IpvsError::Invalid { .. }), "{e:?}");
    let e = c
        .add_dest(&v6, &dest("10.244.1.1", 80, Forward::Masq, 1, 0, 0))
        .unwrap_err();
    assert!(matches!(e, IpvsError::Invalid { .. }), "{e:?}");

    // Nothing of that changed the table.
    let ks = c.services().unwrap();
    assert_eq!(ks.len(), 2);
    assert_eq!(c.service(&key).unwrap().service.dests, vec![d]);
    assert!(c.service(&v6).unwrap().service.dests.is_empty());
}

/// An IPv4 tunnel destination in an IPv6 service (the one mixed-family case the kernel takes).
#[test]
fn mixed_family_tunnel_destination() {
    let Some((_g, c)) = setup() else { return };
    let v6 = inet(Protocol::Tcp, "fd00::1", 80);
    c.add_service(&v6, &cfg("rr", 0, 0, 128)).unwrap();
    let d4 = dest("10.244.1.1", 80, Forward::Tunnel, 2, 0, 0);
    let d6 = dest("fd00:1::1", 80, Forward::Tunnel, 3, 0, 0);
    c.add_dest(&v6, &d4).unwrap();
    c.add_dest(&v6, &d6).unwrap();
    assert_eq!(c.service(&v6).unwrap().service.dests, vec![d6, d4.clone()]);
    c.del_dest(&v6, d4.addr, d4.port).unwrap();
    assert_eq!(c.service(&v6).unwrap().service.dests.len(), 1);
}

/// Without CAP_NET_ADMIN every command is refused (capabilities are per thread: this thread
/// drops its own).
#[test]
fn commands_need_cap_net_admin() {
    let Some((_g, _c)) = setup() else { return };
    std::thread::spawn(|| {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data words, for this thread only.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
            d[0].effective &= !(1 << 12); // CAP_NET_ADMIN
            assert_eq!(libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()), 0);
        }
        let c = IpvsClient::new().expect("resolving a family needs no capability");
        let e = c.info().unwrap_err();
        assert!(matches!(e, IpvsError::PermissionDenied { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "get IPVS info: permission denied: needs CAP_NET_ADMIN"
        );
        let e = c
            .add_service(&inet(Protocol::Tcp, "10.0.0.1", 80), &cfg("rr", 0, 0, ALL))
            .unwrap_err();
        assert!(matches!(e, IpvsError::PermissionDenied { .. }), "{e:?}");
    })
    .join()
    .unwrap();
}

#[test]
fn timeouts_round_trip() {
    let Some((_g, c)) = setup() else { return };
    let defaults = c.timeouts().unwrap();
    assert_eq!(
        defaults,
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
    let list = ipvsadm(&["-L", "-n", "--timeout"]);
    golden("list-timeout.txt", &list, committed("list-timeout.txt"));

    let t = Timeouts {
        tcp: 1000,
        tcp_fin: 100,
        udp: 200,
    };
    c.set_timeouts(&t).unwrap();
    assert_eq!(c.timeouts().unwrap(), t);
    assert_eq!(
        ipvsadm(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 1000 100 200\n"
    );
    // 0 leaves a value as it is.
    c.set_timeouts(&Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 250,
    })
    .unwrap();
    assert_eq!(c.timeouts().unwrap(), Timeouts { udp: 250, ..t });
    ipvsadm(&["--set", "900", "120", "300"]);
    assert_eq!(c.timeouts().unwrap(), defaults);
}

/// Counters through real connections (local clients to a VIP whose destination is a local
/// address), read by the client and by ipvsadm, then zeroed.
#[test]
fn counters_and_zero() {
    let Some((_g, c)) = setup() else { return };
    let _ = Command::new("/sbin/ip")
        .args(["link", "del", "xvs0"])
        .stderr(Stdio::null())
        .status();
    ip("link add xvs0 type dummy");
    ip("addr add 10.99.0.1/32 dev xvs0");
    ip("addr add 10.99.0.2/32 dev xvs0");
    ip("link set xvs0 up");
    let k1 = inet(Protocol::Tcp, "10.99.0.1", 80);
    let k2 = inet(Protocol::Tcp, "10.99.0.2", 80);
    for k in [&k1, &k2] {
        let ServiceKey::Inet { addr, .. } = k else {
            unreachable!()
        };
        c.add_service(k, &cfg("rr", 0, 0, ALL)).unwrap();
        c.add_dest(k, &Destination::masq(*addr, 80, 1)).unwrap();
        let l = TcpListener::bind((*addr, 80)).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
            }
        });
    }
    // A local destination stays Masq in the table (the kernel finds it local when it
    // routes, per packet).
    assert_eq!(
        c.service(&k1).unwrap().service.dests[0].forward,
        Forward::Masq
    );
    let connect = |addr: &str, n: usize| {
        for _ in 0..n {
            let mut s = TcpStream::connect((a(addr), 80)).unwrap();
            s.write_all(b"hello").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"hello");
        }
    };
    connect("10.99.0.1", 3);
    connect("10.99.0.2", 2);
    // The estimator folds the per-CPU counters in every 2 s.
    std::thread::sleep(Duration::from_millis(2500));

    let s1 = c.service(&k1).unwrap();
    let s2 = c.service(&k2).unwrap();
    assert_eq!(s1.stats.conns, 3);
    assert_eq!(s2.stats.conns, 2);
    assert!(
        s1.stats.inpkts >= 9 && s1.stats.inbytes > 0,
        "{:?}",
        s1.stats
    );
    assert_eq!(s1.dest_state[0].stats.conns, 3);
    let st = &s1.dest_state[0];
    assert_eq!(st.active_conns + st.inactive_conns, 3, "{st:?}");

    // ipvsadm shows the same counters.
    let stats = ipvsadm(&["-L", "-n", "--stats", "--exact", "-t", "10.99.0.1:80"]);
    let line = stats
        .lines()
        .find(|l| l.starts_with("TCP  10.99.0.1:80"))
        .unwrap_or_else(|| panic!("{stats}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    let s = &s1.stats;
    assert_eq!(
        nums,
        vec![s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes],
        "{stats}"
    );

    c.zero_service(&k1).unwrap();
    let z1 = c.service(&k1).unwrap();
    assert_eq!(z1.stats, Stats::default());
    assert_eq!(z1.dest_state[0].stats, Stats::default());
    // Zeroing touches counters only.
    assert_eq!(
        z1.dest_state[0].active_conns + z1.dest_state[0].inactive_conns,
        3
    );
    assert_eq!(c.service(&k2).unwrap().stats.conns, 2);
    c.zero_all().unwrap();
    assert_eq!(c.service(&k2).unwrap().stats, Stats::default());

    c.flush().unwrap();
    ip("link del xvs0");
}
