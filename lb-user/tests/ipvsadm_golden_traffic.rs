//! xvsadm's ipvsadm text against the real ipvsadm's for a table that carried traffic: the
//! goldens in tests/data/kernel-ipvs/traffic/ were recorded in the VM by
//! lb-user/tests/vm_golden_traffic.rs (`cargo xtask vm-test --record-golden`), each listing
//! with the kernel state it was printed from: /proc/net/ip_vs_conn for the connection
//! listings (`-c`), the netlink dump for the table listings (counters, rates, connection
//! counts), and the name files for the listings without `-n`. Here the Snapshot is rebuilt
//! from that state as xvsd builds it (connections through xvsd's own /proc parser) and every
//! listing must equal ipvsadm's byte for byte, banner included.
//!
//! The VM test's file is included as a module for the dump format and the conversions (its
//! one test, which needs the VM, only prints a note here).

#[allow(dead_code)]
#[path = "vm_golden_traffic.rs"]
mod vm;

use lb_user::ipvsadm::{format_list_with, xvs_banner, StaticResolver};

use vm::{
    check_conns, check_table, conns_from_proc, coverage_problems, list_options, names_from,
    snapshot_from_dump, Dump, BULK_DOWN, CONN_LISTINGS, GOLDEN_FILES, RULES, SERVICES,
    TABLE_LISTINGS,
};

fn golden(name: &str) -> &'static str {
    macro_rules! files {
        ($($f:literal),* $(,)?) => {
            match name {
                $($f => include_str!(concat!("../../tests/data/kernel-ipvs/traffic/", $f)),)*
                _ => panic!("no golden file {name}"),
            }
        };
    }
    files!(
        "rules.txt",
        "ip_vs_conn.txt",
        "ip_vs_conn-persistent.txt",
        "ip_vs_conn-names.txt",
        "dump.json",
        "services.txt",
        "hosts.txt",
        "list-conn.txt",
        "list-conn-persistent.txt",
        "list-conn-names.txt",
        "list.txt",
        "list-stats.txt",
        "list-stats-exact.txt",
        "list-rate.txt",
        "list-rate-exact.txt",
        "list-persistent-conn.txt",
        "list-service-stats.txt",
        "list-names.txt",
    )
}

fn dump() -> Dump {
    serde_json::from_str(golden("dump.json")).expect("dump.json")
}

/// The copy of /proc/net/ip_vs_conn `ipvsadm -L -n -c` was printed from.
fn proc() -> &'static str {
    golden(CONN_LISTINGS[0].1)
}

fn names() -> StaticResolver {
    names_from(golden("hosts.txt"), golden("services.txt"))
}

#[test]
fn connection_listings_equal_ipvsadms() {
    for (name, proc_file, words) in CONN_LISTINGS {
        let left_out = check_conns(golden(proc_file), words, &names(), golden(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // xvsd's parser keeps every line of the kernel's file here, templates included
        // (state ASSURED), so ours has every row.
        assert_eq!(left_out, Vec::<String>::new(), "{name}");
    }
}

#[test]
fn table_listings_equal_ipvsadms() {
    let d = dump();
    for (name, words) in TABLE_LISTINGS {
        check_table(&d, words, &names(), golden(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn only_the_banner_differs_with_xvs_banner() {
    let snap = snapshot_from_dump(&dump());
    for (name, words) in TABLE_LISTINGS {
        let opts = list_options(words);
        if opts.service.is_some() {
            continue; // no banner on a one-service listing
        }
        let got =
            format_list_with(&snap, &opts, &xvs_banner(snap.conn_tab_size), &names()).unwrap();
        let (got_banner, got_rest) = got.split_once('\n').unwrap();
        let (want_banner, want_rest) = golden(name).split_once('\n').unwrap();
        assert_eq!(got_rest, want_rest, "{name}");
        assert_eq!(want_banner, "IP Virtual Server version 1.2.1 (size=4096)");
        assert_eq!(
            got_banner,
            "xvs (XDP Virtual Server) version 1.2.1 (size=4096)"
        );
    }
}

/// The recording shows what it was made for; a re-recording that lost some of it fails here.
#[test]
fn the_recording_covers_what_it_is_for() {
    assert_eq!(golden("rules.txt"), RULES, "recorded from another table");
    assert_eq!(golden("services.txt"), SERVICES);
    for f in GOLDEN_FILES {
        assert!(!golden(f).is_empty(), "{f}");
    }
    let listings: Vec<(&str, String)> = CONN_LISTINGS
        .iter()
        .map(|(n, _, _)| *n)
        .chain(TABLE_LISTINGS.iter().map(|(n, _)| *n))
        .map(|n| (n, golden(n).to_string()))
        .collect();
    assert_eq!(
        coverage_problems(proc(), &dump(), &listings),
        Vec::<String>::new()
    );
    let row = |file: &str, start: &str| -> Vec<String> {
        golden(file)
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("{file}: no {start:?}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };

    // Counters of 10^8 and more abbreviated (K), less in full; everything in full (and wider
    // than the column) with --exact.
    let stats = row("list-stats.txt", "TCP  10.0.0.10:80 ");
    let exact = row("list-stats-exact.txt", "TCP  10.0.0.10:80 ");
    let d = dump();
    let bulk = d
        .services
        .iter()
        .find(|s| s.port == 80)
        .expect("the bulk service");
    let s = bulk.stats;
    assert!(s.inbytes >= 100_000_000, "{s:?}");
    assert!((BULK_DOWN..100_000_000).contains(&s.outbytes), "{s:?}");
    let all = [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes].map(|n| n.to_string());
    assert_eq!(exact[2..], all);
    assert_eq!(stats[2..5], all[..3]);
    assert_eq!(stats[5], format!("{}K", s.inbytes / 1000));
    assert_eq!(stats[6], all[4]);
    // Every rate column non-zero somewhere.
    let rate = row("list-rate.txt", "TCP  10.0.0.10:80 ");
    assert!(rate[2..].iter().all(|v| v != "0"), "{rate:?}");

    // Without -n: names from the files, cut to ipvsadm's columns in the table listing (33
    // characters of a service, 28 of a destination), in full in the connection listing.
    let names = golden("list-names.txt");
    assert!(names.contains("\nTCP  a-rather-long-virtual-servic wlc persistent 600\n"));
    assert!(names.contains("\n  -> backend-one.example.internal Masq "));
    assert!(names.contains("\n  -> 10.11.2.2:http-alt "));
    assert!(golden("list-conn-names.txt")
        .contains(" a-rather-long-virtual-service-name.example:https 10.11.2.2:http-alt\n"));

    // The connections: every line of the files, in the files' order.
    for (_, proc_file, _) in CONN_LISTINGS {
        let text = golden(proc_file);
        let (conns, dropped) = conns_from_proc(text);
        assert!(dropped.is_empty(), "{proc_file}");
        assert_eq!(conns.len(), text.lines().count() - 1, "{proc_file}");
    }
}
