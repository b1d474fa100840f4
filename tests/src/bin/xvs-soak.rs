//! `cargo xtask soak --minutes N`: churn, traffic, a SYN flood and SIGKILL restarts together,
//! for N minutes, in namespaces this run creates (every address lives only inside them).
//!
//! * batches: `xvsadm -R` of `--services` services (deleting the previous batch's), xvsd
//!   killed (SIGKILL) at a random point of each; checked while dead (the packet path serves
//!   the old batch or the new one) and after the restart (the last acknowledged table);
//! * churn: single changes (services, destinations, weights) on 10.200.0.0/16 through the
//!   control socket all the time, kills included; every acknowledged one must be there after
//!   every restart (one cut off by a kill may be there or not);
//! * traffic: a long TCP connection and a UDP flow that must never fail nor move, and a new
//!   TCP connection every 50 ms that must always be answered;
//! * a SYN flood (raw socket in the client namespace) at the balancer's VIP.
//!
//! Reports RSS, map counts, connection failures and lost changes; exits 1 if either is not 0.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_user::ctl::request;
use lb_user::ctl::{NumberedOp, Request, Response};
use lb_user::model::{Destination, Op, Service, ServiceConfig, ServiceKey, Table};
use xvs_tests::crash::{is_churn, rss_kib, sorted, Flows, Rig, Rng, Trials, VIP};
use xvs_tests::netns::Netns;
use xvs_tests::packet::Pkt;
use xvs_tests::servers::Conn;

struct Args {
    minutes: f64,
    services: usize,
    churn_services: u8,
    syn_rate: u32,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 3.0,
        services: 10_000,
        churn_services: 40,
        syn_rate: 1000,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--minutes" => a.minutes = val.parse().expect("--minutes N"),
            "--services" => a.services = val.parse().expect("--services N"),
            "--churn-services" => a.churn_services = val.parse().expect("--churn-services N"),
            "--syn-rate" => a.syn_rate = val.parse().expect("--syn-rate N"),
            other => panic!(
                "unknown argument {other}: --minutes N --services N --churn-services N --syn-rate N"
            ),
        }
        i += 2;
    }
    a
}

/// What the churn knows: the table of its services as last acknowledged, and the one change
/// a kill cut off (it may or may not have been applied).
#[derive(Default)]
struct Churn {
    expected: Table,
    uncertain: Option<(ServiceKey, Option<Service>, Option<Service>)>,
    acked: u64,
    cut_off: u64,
    refused: Vec<String>,
}

fn churn_key(i: u8) -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(10, 200, 0, i + 1), 80)
}

/// One valid random change to the churn's services.
fn churn_op(t: &Table, n: u8, rng: &mut Rng) -> Op {
    let k = churn_key(rng.below(n as u64) as u8);
    let Some(s) = t.service(&k) else {
        return Op::AddService(k, ServiceConfig::with_scheduler("rr"));
    };
    let backend = |i: u64| Destination::masq(Ipv4Addr::new(10, 11, (i % 3) as u8 + 1, 2), 8080, 1);
    match rng.below(10) {
        0 => Op::DelService(k),
        1 | 2 if !s.dests.is_empty() => {
            let d = &s.dests[rng.below(s.dests.len() as u64) as usize];
            Op::DelDest(k, d.addr, d.port)
        }
        3..=5 if !s.dests.is_empty() => {
            let mut d = s.dests[rng.below(s.dests.len() as u64) as usize].clone();
            d.weight = rng.below(5) as u32;
            Op::EditDest(k, d)
        }
        _ => {
            let d = backend(rng.below(3));
            if s.dest(d.addr, d.port).is_some() {
                Op::EditService(
                    k,
                    ServiceConfig::with_scheduler(if s.config.scheduler == "rr" {
                        "wrr"
                    } else {
                        "rr"
                    }),
                )
            } else {
                Op::AddDest(k, d)
            }
        }
    }
}

fn churn_loop(
    socket: std::path::PathBuf,
    state: Arc<Mutex<Churn>>,
    n: u8,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        {
            let mut st = state.lock().unwrap();
            if st.uncertain.is_some() {
                // Wait until the main loop has looked at the restarted daemon's table.
                drop(st);
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let op = churn_op(&st.expected, n, &mut rng);
            let key = match &op {
                Op::AddService(k, _)
                | Op::EditService(k, _)
                | Op::DelService(k)
                | Op::AddDest(k, _)
                | Op::EditDest(k, _)
                | Op::DelDest(k, ..) => *k,
                Op::Clear => unreachable!(),
            };
            let before = st.expected.service(&key).cloned();
            let mut after_t = st.expected.clone();
            after_t.apply_op(&op).expect("churn ops are valid");
            let after = after_t.service(&key).cloned();
            match request(
                &socket,
                &Request::Apply(vec![NumberedOp { line: None, op }]),
            ) {
                Ok(Response::Ok) => {
                    st.expected = after_t;
                    st.acked += 1;
                }
                Ok(Response::Error(e)) => {
                    st.refused.push(e);
                }
                Ok(other) => st.refused.push(format!("{other:?}")),
                // No answer: the daemon is dead (or was killed while handling it).
                Err(_) => {
                    st.cut_off += 1;
                    st.uncertain = Some((key, before, after));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Compares the churn's services in `got` with what was acknowledged; a change cut off by a
/// kill may be there or not. Returns the lost changes.
fn check_churn(state: &mut Churn, got: &Table) -> Vec<String> {
    let mut lost = Vec::new();
    let mut actual = Table::new();
    for s in got.services().iter().filter(|s| is_churn(&s.key)) {
        actual.restore_service(&s.key, Some(s.clone()));
    }
    if let Some((k, before, after)) = state.uncertain.take() {
        let now = actual.service(&k).cloned();
        let norm = |s: &Option<Service>| {
            s.clone().map(|mut s| {
                s.dests.sort_by_key(|d| d.id());
                s
            })
        };
        if norm(&now) == norm(&after) {
            state.expected.restore_service(&k, after);
        } else if norm(&now) != norm(&before) {
            lost.push(format!(
                "churn {k}: neither before nor after the cut-off change"
            ));
        }
    }
    if sorted(&actual) != sorted(&state.expected) {
        let exp: BTreeMap<ServiceKey, Service> = sorted(&state.expected)
            .into_iter()
            .map(|s| (s.key, s))
            .collect();
        let act: BTreeMap<ServiceKey, Service> =
            sorted(&actual).into_iter().map(|s| (s.key, s)).collect();
        for (k, s) in &exp {
            if act.get(k) != Some(s) {
                lost.push(format!(
                    "LOST CHANGE: churn {k}: acknowledged {s:?}, listed {:?}",
                    act.get(k)
                ));
            }
        }
        for k in act.keys().filter(|k| !exp.contains_key(k)) {
            lost.push(format!("churn {k}: listed but never acknowledged"));
        }
        // Go on from what is there, so one loss is reported once.
        state.expected = actual;
    }
    lost
}

/// SYNs from the client's own address and ports below its ephemeral range (the backends'
/// SYN-ACKs come back to the client, whose kernel resets them).
fn syn_flood(client: &Netns, rate: u32, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let fd =
        client.enter(|| unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) });
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(VIP).to_be(),
        },
        sin_zero: [0; 8],
    };
    let per_tick = (rate / 100).max(1);
    let mut port: u16 = 1024;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..per_tick {
            port = if port >= 30_000 { 1024 } else { port + 1 };
            let mut p = Pkt::tcp(("10.10.0.2", port), ("10.0.0.100", 80), 0x02);
            p.payload.clear();
            let frame = p.build();
            let ip = &frame[14..];
            let r = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    ip.as_ptr() as *const libc::c_void,
                    ip.len(),
                    0,
                    &dst as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if r > 0 {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lru_count(path: &std::path::Path) -> usize {
    use aya::maps::{HashMap, Map, MapData};
    use lb_common::{ConnValue, FlowKey};
    let Ok(md) = MapData::from_pin(path) else {
        return 0;
    };
    let Ok(m) = HashMap::<MapData, FlowKey, ConnValue>::try_from(Map::LruHashMap(md)) else {
        return 0;
    };
    m.keys().filter(|k| k.is_ok()).count()
}

fn main() {
    let a = args();
    let (mut rng, seed) = Rng::from_env();
    println!(
        "soak: {} min, batches of {} services, {} churn services, SYN flood {}/s, XVS_CRASH_SEED={seed}",
        a.minutes, a.services, a.churn_services, a.syn_rate
    );
    let mut rig = Rig::with_conn_table("soak", a.services, 1 << 18);
    let flows = Flows::start(&rig.topo);
    let mut trials = Trials::new(&rig, a.services);
    println!("one batch takes {:?}", trials.batch_time);
    let stop = Arc::new(AtomicBool::new(false));
    let churn = Arc::new(Mutex::new(Churn::default()));
    let mut threads = Vec::new();
    {
        let (sock, st, stop) = (rig.dirs.socket(), churn.clone(), stop.clone());
        let (n, s) = (a.churn_services, rng.next_u64());
        threads.push(std::thread::spawn(move || churn_loop(sock, st, n, s, stop)));
    }
    let syns = Arc::new(AtomicU64::new(0));
    // The flood and the prober need the client namespace: they get their own handle on it.
    // (ManuallyDrop: the topology owns the namespace and deletes it.)
    let client = std::mem::ManuallyDrop::new(Netns {
        name: rig.topo.client.name.clone(),
    });
    let probe_fail = Arc::new(Mutex::new(Vec::<String>::new()));
    let probes = Arc::new(AtomicU64::new(0));
    let ok = std::thread::scope(|sc| {
        if a.syn_rate > 0 {
            let (stop, sent) = (stop.clone(), syns.clone());
            let c: &Netns = &client;
            sc.spawn(move || syn_flood(c, a.syn_rate, stop, sent));
        }
        {
            let (stop, fails, n) = (stop.clone(), probe_fail.clone(), probes.clone());
            let phase = rig.phase.clone();
            let c: &Netns = &client;
            let start = Instant::now();
            sc.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let p0 = phase.load(Ordering::SeqCst);
                    let t = start.elapsed();
                    let r = match Conn::open(c, None, SocketAddrV4::new(VIP, 80)) {
                        Err(e) => Err(format!("connect: {e}")),
                        Ok(mut k) => k.ask().map_err(|e| format!("answer ({}): {e}", k.peer())),
                    };
                    match r {
                        Ok(_) => {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => fails.lock().unwrap().push(format!(
                            "new connection at {:.1}s ({} -> {}): {e}",
                            t.as_secs_f64(),
                            xvs_tests::crash::phase_name(p0),
                            xvs_tests::crash::phase_name(phase.load(Ordering::SeqCst)),
                        )),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        let t0 = Instant::now();
        let mut lost: Vec<String> = Vec::new();
        let mut other: Vec<String> = Vec::new();
        let (mut kills, mut acked, mut rolled_back, mut committed_unacked, mut dead_new) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut rss_max, mut rss_last, mut restart_max) = (0u64, 0u64, Duration::ZERO);
        let mut cycle = 0u64;
        while t0.elapsed().as_secs_f64() < a.minutes * 60.0 {
            cycle += 1;
            let tr = trials.run(&mut rig, &mut rng);
            kills += 1;
            acked += tr.acked as u64;
            committed_unacked += tr.committed_unacked as u64;
            dead_new += tr.dead_saw_new as u64;
            rolled_back += (tr.dead_saw_new && !tr.acked && !tr.committed_unacked) as u64;
            restart_max = restart_max.max(tr.restart);
            for e in tr.errors {
                if e.contains("LOST CHANGE") {
                    lost.push(format!("cycle {cycle}: {e}"));
                } else {
                    other.push(format!("cycle {cycle}: {e}"));
                }
            }
            {
                let mut st = churn.lock().unwrap();
                let got = rig.saved();
                lost.extend(
                    check_churn(&mut st, &got)
                        .into_iter()
                        .map(|e| format!("cycle {cycle}: {e}")),
                );
            }
            if !flows.flowing(Duration::from_secs(5)) {
                other.push(format!(
                    "cycle {cycle}: traffic did not resume after the restart"
                ));
            }
            // Let the daemon run a while between kills: churn, flood and traffic go on.
            std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
            if let Some(pid) = rig.pid() {
                rss_last = rss_kib(pid);
                rss_max = rss_max.max(rss_last);
            }
            let services = xvs_tests::crash::pinned_count(&rig.dirs.pin_dir.join("SERVICES"));
            let conns = lru_count(&rig.dirs.pin_dir.join("CONNS"));
            let st = churn.lock().unwrap();
            let fails = flows.failures().len() + probe_fail.lock().unwrap().len();
            println!(
                "[{:>6.1}s] cycle {cycle}: kill after {:?} ({}), restart {:?}; xvsd RSS {} MiB; SERVICES {services}, CONNS {conns}; churn acked {} cut off {}; SYNs {}; probes {}; connection failures {fails}; lost changes {}",
                t0.elapsed().as_secs_f64(),
                tr.kill_after,
                if tr.acked { "acked" } else if tr.dead_saw_new { "switched, not acked" } else { "before the switch" },
                tr.restart,
                rss_last / 1024,
                st.acked,
                st.cut_off,
                syns.load(Ordering::Relaxed),
                probes.load(Ordering::Relaxed),
                lost.len()
            );
            if !lost.is_empty() || fails > 0 || !other.is_empty() {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let flow_fails = flows.failures();
        let probe_fails = probe_fail.lock().unwrap().clone();
        let st = churn.lock().unwrap();
        println!(
            "\n== soak report ({:.1} min) ==",
            t0.elapsed().as_secs_f64() / 60.0
        );
        println!("kills (SIGKILL during a batch): {kills}");
        println!("  batches acknowledged before the kill: {acked}");
        println!("  switched but not acknowledged (rolled back at restart): {rolled_back}");
        println!("  committed, answer lost to the kill: {committed_unacked}");
        println!("  dead with the new batch in the packet path: {dead_new}");
        println!("longest restart: {restart_max:?}");
        println!(
            "churn changes acknowledged: {}, cut off by a kill: {}, refused: {}",
            st.acked,
            st.cut_off,
            st.refused.len()
        );
        println!("SYNs sent: {}", syns.load(Ordering::Relaxed));
        println!(
            "new connections answered: {}",
            probes.load(Ordering::Relaxed)
        );
        println!(
            "long TCP exchanges: {}, UDP exchanges: {}",
            flows.tcp_ok.load(Ordering::Relaxed),
            flows.udp_ok.load(Ordering::Relaxed)
        );
        println!(
            "xvsd RSS: last {} MiB, max {} MiB",
            rss_last / 1024,
            rss_max / 1024
        );
        println!(
            "SERVICES {}, CONNS {}",
            xvs_tests::crash::pinned_count(&rig.dirs.pin_dir.join("SERVICES")),
            lru_count(&rig.dirs.pin_dir.join("CONNS"))
        );
        let conn_failures = flow_fails.len() + probe_fails.len();
        println!("connection failures: {conn_failures}");
        for f in flow_fails.iter().chain(&probe_fails).take(10) {
            println!("  {f}");
        }
        println!("lost changes: {}", lost.len());
        for l in lost.iter().take(10) {
            println!("  {l}");
        }
        for r in st.refused.iter().take(5) {
            println!("refused churn change: {r}");
        }
        for o in other.iter().take(10) {
            println!("error: {o}");
        }
        let ok = conn_failures == 0 && lost.is_empty() && other.is_empty() && st.refused.is_empty();
        drop(st);
        for t in threads.drain(..) {
            let _ = t.join();
        }
        let _ = flows.stop();
        if !ok {
            println!("--- xvsd log ---\n{}", rig.tail_log());
        }
        ok
    });
    // Namespaces, daemon and pins are cleaned up by the guards' Drop before exiting.
    drop(rig);
    if !ok {
        println!("SOAK FAILED");
        std::process::exit(1);
    }
    println!("SOAK OK");
}
