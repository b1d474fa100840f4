//! `cargo xtask run`: the product on a built-in demo. Builds a self-contained network (a client,
//! the balancer, three backends, each in its own namespace; every address lives only inside
//! them), starts xvsd on the balancer's interfaces with a demo table (rr, wrr and sh services
//! with port mapping), sends real requests, prints which backend answered each, shows the
//! xvsadm listings, and cleans everything up, whatever happens.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use xvs_tests::daemon::{bin, Daemon, DaemonDirs, Teardown};
use xvs_tests::netns::Topology;
use xvs_tests::servers::{serve, tcp_ask, udp_ask};

const RULES: &str = "\
-A -t 10.0.0.10:80 -s rr
-a -t 10.0.0.10:80 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.10:80 -r 10.11.2.2:8080 -m -w 1
-a -t 10.0.0.10:80 -r 10.11.3.2:8080 -m -w 1
-A -t 10.0.0.11:80 -s wrr
-a -t 10.0.0.11:80 -r 10.11.1.2:8080 -m -w 3
-a -t 10.0.0.11:80 -r 10.11.2.2:8080 -m -w 2
-a -t 10.0.0.11:80 -r 10.11.3.2:8080 -m -w 1
-A -t 10.0.0.12:443 -s sh
-a -t 10.0.0.12:443 -r 10.11.1.2:8080 -m -w 1
-a -t 10.0.0.12:443 -r 10.11.2.2:8080 -m -w 1
-a -t 10.0.0.12:443 -r 10.11.3.2:8080 -m -w 1
-A -u 10.0.0.53:53 -s rr
-a -u 10.0.0.53:53 -r 10.11.1.2:8080 -m -w 1
-a -u 10.0.0.53:53 -r 10.11.2.2:8080 -m -w 1
-a -u 10.0.0.53:53 -r 10.11.3.2:8080 -m -w 1
";

fn xvsadm(dirs: &DaemonDirs, args: &[&str]) -> String {
    let out = Command::new(bin("xvsadm"))
        .args(args)
        .env("XVSADM_SOCKET", dirs.socket())
        .output()
        .expect("xvsadm");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

fn main() {
    println!("xvs demo: building namespaces xvsdemo* (client, balancer, backends rs1..rs3)");
    let topo = Topology::new("demo", 3);
    let _servers: Vec<_> = (0..3)
        .map(|i| serve(&topo.backends[i], 8080, &format!("rs{}", i + 1)))
        .collect();
    let dirs = DaemonDirs::new("demo");
    let _cleanup = Teardown(dirs.clone());
    std::fs::create_dir_all(&dirs.state_dir).unwrap();
    let rules = dirs.state_dir.join("demo.rules");
    std::fs::write(&rules, RULES).unwrap();
    let mut args: Vec<String> = topo
        .lb_ifaces()
        .into_iter()
        .flat_map(|i| ["--iface".to_string(), i])
        .collect();
    args.extend([
        "--mode".into(),
        "generic".into(),
        "--rules".into(),
        rules.display().to_string(),
    ]);
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    println!("starting xvsd {}", extra.join(" "));
    let d = Daemon::start_with(&topo.lb, &dirs, &extra, Stdio::null());

    let ask = |vip: [u8; 4], port: u16, src: Option<Ipv4Addr>| {
        tcp_ask(&topo.client, src, SocketAddrV4::new(vip.into(), port))
    };
    println!("\nrr  TCP 10.0.0.10:80 -> :8080, 6 connections:");
    let seq: Vec<String> = (0..6).map(|_| ask([10, 0, 0, 10], 80, None)).collect();
    println!("    {}", seq.join(" "));
    println!("wrr TCP 10.0.0.11:80 -> :8080 (weights rs1=3 rs2=2 rs3=1), 12 connections:");
    let seq: Vec<String> = (0..12).map(|_| ask([10, 0, 0, 11], 80, None)).collect();
    println!("    {}", seq.join(" "));
    println!("sh  TCP 10.0.0.12:443 -> :8080, 3 connections from each of 5 client addresses:");
    topo.add_client_addrs(20, 24);
    for i in 20..25u8 {
        let src = Ipv4Addr::new(10, 10, 0, i);
        let seq: Vec<String> = (0..3)
            .map(|_| ask([10, 0, 0, 12], 443, Some(src)))
            .collect();
        println!("    from {src}: {}", seq.join(" "));
    }
    println!("rr  UDP 10.0.0.53:53 -> :8080, 3 datagrams:");
    for _ in 0..3 {
        let (name, from) = udp_ask(
            &topo.client,
            None,
            SocketAddrV4::new([10, 0, 0, 53].into(), 53),
        );
        println!("    {name} (reply from {from})");
    }
    println!("\n$ xvsadm -L -n\n{}", xvsadm(&dirs, &["-L", "-n"]));
    println!(
        "$ xvsadm -L -n --stats\n{}",
        xvsadm(&dirs, &["-L", "-n", "--stats"])
    );
    d.stop();
    println!("stopped xvsd; tearing down the fast path and the namespaces");
}
