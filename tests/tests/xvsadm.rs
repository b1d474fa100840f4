//! xvsadm against a running xvsd: save/restore round trips, a bad restore file refused whole,
//! racing commands, and the attach-mode fallback. (Byte-for-byte equality with the real
//! ipvsadm's output is checked in lb-user/tests/ipvsadm_golden.rs against recorded goldens.)
use std::io::Write;
use std::process::{Command, Output, Stdio};

use xvs_tests::daemon::{bin, Daemon, DaemonDirs, Teardown};
use xvs_tests::netns::Netns;

const RULES: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1
-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 0
-A -u 10.0.0.2:53 -s wrr
-a -u 10.0.0.2:53 -r 10.1.0.3:5353 -m -w 3
-a -u 10.0.0.2:53 -r 10.1.0.4:5353 -m -w 2
-A -t 10.0.0.3:443 -s sh -b sh-fallback,sh-port
-a -t 10.0.0.3:443 -r 10.1.0.5:8443 -m -w 1
";

fn xvsadm(dirs: &DaemonDirs, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin("xvsadm"))
        .args(args)
        .env("XVSADM_SOCKET", dirs.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A namespace with a veth pair for the daemon to attach to.
fn node(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns
}

fn start(ns: &Netns, dirs: &DaemonDirs) -> Daemon {
    Daemon::start_with(
        ns,
        dirs,
        &["--iface", "d0", "--mode", "generic"],
        Stdio::null(),
    )
}

#[test]
fn save_restore_round_trip_reproduces_the_listing() {
    let ns = node("sr");
    let dirs = DaemonDirs::new("saverestore");
    let _cleanup = Teardown(dirs.clone());
    let d = start(&ns, &dirs);
    let r = xvsadm(&dirs, &["-R"], Some(RULES));
    assert!(r.status.success(), "{}", err(&r));
    let saved = text(&xvsadm(&dirs, &["-S", "-n"], None));
    let listing = text(&xvsadm(&dirs, &["-L", "-n"], None));
    assert!(
        listing.contains("TCP  10.0.0.3:443 sh (sh-fallback,sh-port)"),
        "{listing}"
    );
    // ipvsadm -S lists destinations newest first; restoring that reverses the list order,
    // exactly as ipvsadm-restore does on a kernel. Compare listings, which sort.
    d.stop();
    let _ = dirs.teardown();

    let d = start(&ns, &dirs);
    let r = xvsadm(&dirs, &["-R"], Some(&saved));
    assert!(r.status.success(), "{}", err(&r));
    assert_eq!(text(&xvsadm(&dirs, &["-L", "-n"], None)), listing);
    d.stop();
}

#[test]
fn a_restore_file_with_one_bad_line_is_refused_whole() {
    let ns = node("bl");
    let dirs = DaemonDirs::new("badline");
    let _cleanup = Teardown(dirs.clone());
    let d = start(&ns, &dirs);
    assert!(xvsadm(&dirs, &["-R"], Some(RULES)).status.success());
    let before = text(&xvsadm(&dirs, &["-S", "-n"], None));
    let bad = "\
-A -t 10.0.0.9:80 -s rr
-a -t 10.0.0.9:80 -r 10.1.0.9:8080 -m -w 1
-a -t 10.0.0.9:80 -r 10.1.0.10:8080 -m -w -5
";
    let r = xvsadm(&dirs, &["-R"], Some(bad));
    assert!(!r.status.success());
    assert!(err(&r).contains("line 3"), "{}", err(&r));
    assert_eq!(
        text(&xvsadm(&dirs, &["-S", "-n"], None)),
        before,
        "nothing changed"
    );
    // A line the model accepts but the fast path cannot serve is refused the same way.
    let lc = "-A -t 10.0.0.9:80 -s rr\n-A -t 10.0.0.10:80 -s lc\n";
    let r = xvsadm(&dirs, &["-R"], Some(lc));
    assert!(!r.status.success());
    assert!(
        err(&r).contains("line 2") && err(&r).contains("scheduler lc"),
        "{}",
        err(&r)
    );
    assert_eq!(
        text(&xvsadm(&dirs, &["-S", "-n"], None)),
        before,
        "nothing changed"
    );
    d.stop();
}

#[test]
fn racing_commands_leave_a_consistent_table() {
    let ns = node("rc");
    let dirs = DaemonDirs::new("racing");
    let _cleanup = Teardown(dirs.clone());
    let d = start(&ns, &dirs);
    assert!(
        xvsadm(&dirs, &["-A", "-t", "10.0.0.1:80", "-s", "wrr"], None)
            .status
            .success()
    );
    let handles: Vec<_> = (1..=16)
        .map(|i| {
            let dirs = dirs.clone();
            std::thread::spawn(move || {
                let rip = format!("10.1.0.{i}:8080");
                let o = xvsadm(
                    &dirs,
                    &["-a", "-t", "10.0.0.1:80", "-r", &rip, "-m", "-w", "2"],
                    None,
                );
                assert!(o.status.success(), "{}", err(&o));
                let o = xvsadm(
                    &dirs,
                    &["-e", "-t", "10.0.0.1:80", "-r", &rip, "-m", "-w", "1"],
                    None,
                );
                assert!(o.status.success(), "{}", err(&o));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let saved = text(&xvsadm(&dirs, &["-S", "-n"], None));
    assert_eq!(saved.lines().count(), 17, "{saved}");
    assert_eq!(saved.matches("-w 1").count(), 16, "{saved}");
    d.stop();
}

#[test]
fn native_mode_falls_back_to_generic_where_the_driver_refuses() {
    let ns = Netns::new("fb");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);
    let dirs = DaemonDirs::new("fallback");
    let _cleanup = Teardown(dirs.clone());
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("xvs-fb-{}.log", std::process::id())),
    )
    .unwrap();
    let log_path = std::env::temp_dir().join(format!("xvs-fb-{}.log", std::process::id()));
    let d = Daemon::start_with(
        &ns,
        &dirs,
        &["--iface", "br0", "--mode", "native"],
        Stdio::from(log),
    );
    d.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        log.contains("native XDP refused by the driver; attached in generic mode"),
        "{log}"
    );
    assert!(log.contains("hook=\"generic\""), "{log}");
}
