//! What a benchmark run leaves behind: `results.json` (every figure, with its rounds, its
//! baseline and the ratio), SVG plots of the scaling curves, and BENCHMARKS.md (generated, but
//! for the hand-written reading between its markers, which is kept across runs).
use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::e2e::{Method, METHODS, PATTERNS};
use super::micro::{Hook, CASES, HOOKS};
use super::plot::{plot, YAxis};
use super::stats::Summary;
use super::sys::Machine;
use super::{BenchResult, Ctx};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MicroFigure {
    /// The program measured: "xdp" (`xvs_xdp`) or "tc" (`xvs_tc`); results from before the
    /// tc hook have none and are XDP's.
    #[serde(default = "xdp_hook")]
    pub hook: String,
    /// "calls" (many calls, repeat = 1) or "repeat" (one call, large repeat).
    pub method: String,
    pub case: String,
    pub what: String,
    pub services: u32,
    /// Connections in the table when measured.
    pub conns: u32,
    pub packets_per_round: u64,
    /// ns per packet.
    pub ns: Summary,
    pub baseline: String,
    pub baseline_ns: Summary,
    /// Per round: ns - floor ns.
    pub net_ns: Summary,
    /// Per round: ns / floor ns.
    pub ratio: Summary,
    pub rounds_ns: Vec<f64>,
    pub rounds_baseline_ns: Vec<f64>,
    pub checked: String,
}

fn xdp_hook() -> String {
    "xdp".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct E2eRound {
    /// Packets (UDP datagrams, TCP data segments) delivered per second.
    pub pps: f64,
    /// UDP: packets the generator sent per second (the offered load).
    pub sent_pps: f64,
    pub delivered: u64,
    pub seconds: f64,
    /// CPU time of the pipeline (generator, receivers, the softirq work in their context,
    /// ksoftirqd) per delivered packet.
    pub cpu_ns_per_pkt: f64,
    /// Whole machine (/proc/stat, all but idle and iowait) per delivered packet.
    pub busy_ns_per_pkt: f64,
    /// Whole machine softirq time (/proc/stat) per delivered packet.
    pub softirq_ns_per_pkt: f64,
    /// Pipeline CPU time / wall time (2.0 = both CPUs busy).
    pub cpu_utilisation: f64,
    /// Delivered to destination namespace 1 and 2 (TCP: bytes).
    pub per_dest: Vec<u64>,
    /// UDP datagrams the receivers' sockets dropped (full buffers).
    pub receiver_drops: u64,
    /// sendmmsg calls of the UDP generator that failed.
    pub generator_errors: u64,
    pub mbit_s: f64,
    pub checked: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct E2eFigure {
    pub method: String,
    pub method_what: String,
    pub pattern: String,
    pub pattern_what: String,
    pub unit: String,
    pub services: u32,
    pub seconds_per_round: f64,
    /// Delivered per second.
    pub pps: Summary,
    pub baseline: String,
    pub baseline_pps: Summary,
    pub pps_ratio: Summary,
    pub cpu_ns_per_pkt: Summary,
    pub baseline_cpu_ns_per_pkt: Summary,
    pub cpu_ratio: Summary,
    pub machine_busy_ns_per_pkt: Summary,
    pub machine_softirq_ns_per_pkt: Summary,
    /// UDP: delivered / offered.
    pub delivered_of_offered: Summary,
    pub rounds: Vec<E2eRound>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub mode: String,
    pub started_utc: String,
    pub seconds: f64,
    pub machine: Machine,
    pub commit: String,
    pub loadavg_start: f64,
    pub loadavg_end: f64,
    pub micro: String,
    pub e2e: String,
    pub tools: Vec<String>,
    pub command: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub micro: Vec<MicroFigure>,
    pub e2e: Vec<E2eFigure>,
}

/// "YYYY-MM-DD HH:MM UTC" from Unix seconds (civil-from-days, H. Hinnant).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

pub fn thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn services_label(n: u32) -> String {
    if n == 1 {
        "1 service".into()
    } else {
        format!("{} services", thousands(n))
    }
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

pub fn write_json(r: &Results, dir: &Path) -> BenchResult<()> {
    std::fs::create_dir_all(dir).ctx("creating the output directory")?;
    let s = serde_json::to_string_pretty(r).ctx("serialising")?;
    std::fs::write(dir.join("results.json"), s + "\n").ctx("writing results.json")
}

/// The SVG plots; returns (file name, caption) for the report.
pub fn write_plots(r: &Results, dir: &Path) -> BenchResult<Vec<(String, String)>> {
    let mut files = Vec::new();
    let conns: BTreeSet<u32> = r.micro.iter().map(|f| f.conns).collect();
    for (hook, c) in HOOKS
        .iter()
        .flat_map(|h| conns.iter().map(move |c| (*h, c)))
    {
        let series: Vec<(String, Vec<(f64, Summary)>)> = CASES
            .iter()
            .filter_map(|case| {
                let pts: Vec<(f64, Summary)> = r
                    .micro
                    .iter()
                    .filter(|f| {
                        f.hook == hook.id()
                            && f.method == "calls"
                            && f.case == case.id
                            && f.conns == *c
                    })
                    .map(|f| (f.services as f64, f.ns))
                    .collect();
                (!pts.is_empty()).then(|| (case.id.to_string(), pts))
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        // XDP's plots keep their names from before the tc hook.
        let name = match hook {
            Hook::Xdp => format!("micro-ns-per-packet-{c}-conns.svg"),
            Hook::Tc => format!("micro-tc-ns-per-packet-{c}-conns.svg"),
        };
        plot(
            &dir.join(&name),
            &format!(
                "BPF_PROG_TEST_RUN, {}, ns/packet (median, min-max), {} connections in the table",
                hook.prog(),
                thousands(*c)
            ),
            "services (10 destinations each)",
            "ns per packet (method: calls of repeat 1)",
            &series,
            YAxis::Linear,
        )?;
        files.push((
            name,
            format!(
                "`{}`: ns per packet against the number of services, {} connections in the table (method `calls`; the floor is the lowest line)",
                hook.prog(),
                thousands(*c)
            ),
        ));
    }
    for p in PATTERNS {
        let by = |m: Method, f: &dyn Fn(&E2eFigure) -> Summary| -> Vec<(f64, Summary)> {
            r.e2e
                .iter()
                .filter(|x| x.pattern == p.id() && x.method == m.id())
                .map(|x| (x.services as f64, f(x)))
                .collect()
        };
        let pps: Vec<(String, Vec<(f64, Summary)>)> = METHODS
            .iter()
            .map(|m| {
                (
                    m.id().to_string(),
                    by(*m, &|x| Summary {
                        min: x.pps.min / 1e6,
                        median: x.pps.median / 1e6,
                        max: x.pps.max / 1e6,
                    }),
                )
            })
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if pps.is_empty() {
            continue;
        }
        let name = format!("e2e-{}-mpps.svg", p.id());
        plot(
            &dir.join(&name),
            &format!("{}: million {} delivered per second", p.id(), p.unit()),
            "services",
            "Mpps delivered (median, min-max)",
            &pps,
            YAxis::Linear,
        )?;
        files.push((
            name,
            format!(
                "{}: packets delivered per second against the number of services",
                p.what()
            ),
        ));
        let cpu: Vec<(String, Vec<(f64, Summary)>)> = METHODS
            .iter()
            .map(|m| (m.id().to_string(), by(*m, &|x| x.cpu_ns_per_pkt)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let name = format!("e2e-{}-cpu.svg", p.id());
        plot(
            &dir.join(&name),
            &format!("{}: CPU time per delivered packet", p.id()),
            "services",
            "ns of CPU per packet (median, min-max)",
            &cpu,
            YAxis::Linear,
        )?;
        files.push((
            name,
            format!(
                "{}: CPU time per delivered packet (whole pipeline) against the number of services",
                p.id()
            ),
        ));
    }
    Ok(files)
}

const READING_START: &str = "<!-- reading:start -->";
const READING_END: &str = "<!-- reading:end -->";

fn kept_reading(report: &Path) -> String {
    let old = std::fs::read_to_string(report).unwrap_or_default();
    match (old.find(READING_START), old.find(READING_END)) {
        (Some(a), Some(b)) if b > a => old[a + READING_START.len()..b].trim().to_string(),
        _ => "_Not written yet: run the full benchmark and read the tables._".to_string(),
    }
}

fn cell_ns(f: &MicroFigure) -> String {
    if f.case == "floor" {
        format!("{} ns [{}–{}]", f1(f.ns.median), f1(f.ns.min), f1(f.ns.max))
    } else {
        format!(
            "{} ns [{}–{}] ×{:.2} (+{})",
            f1(f.ns.median),
            f1(f.ns.min),
            f1(f.ns.max),
            f.ratio.median,
            f1(f.net_ns.median)
        )
    }
}

fn fmt_pps(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.0} k", x / 1e3)
    }
}

fn cell_e2e(f: &E2eFigure) -> String {
    let base = f.method == "forward";
    let mut s = format!(
        "{}/s [{}–{}]",
        fmt_pps(f.pps.median),
        fmt_pps(f.pps.min),
        fmt_pps(f.pps.max)
    );
    if !base {
        s.push_str(&format!(" ×{:.2}", f.pps_ratio.median));
    }
    s.push_str(&format!("<br>{:.0} ns CPU/pkt", f.cpu_ns_per_pkt.median));
    if !base {
        s.push_str(&format!(
            " ×{:.2} ({:+.0})",
            f.cpu_ratio.median,
            f.cpu_ns_per_pkt.median - f.baseline_cpu_ns_per_pkt.median
        ));
    }
    s
}

/// Writes BENCHMARKS.md.
///
/// Sections 1 and 2 are this benchmark's. `cargo xtask bench` appends the others (3. control
/// plane, 4. kernel IPVS in the VM) from their own files after this runs; with `keep_tail`
/// (rewriting the report from saved results, without xtask) the existing report's sections
/// from "## 3." on are kept as they are.
pub fn write_markdown(
    r: &Results,
    report: &Path,
    plots_dir_rel: &str,
    plots: &[(String, String)],
    keep_tail: bool,
) -> BenchResult<()> {
    let reading = kept_reading(report);
    let tail = if keep_tail {
        let old = std::fs::read_to_string(report).unwrap_or_default();
        ["\n## 3. ", "\n## 4. ", "\n## 5. "]
            .iter()
            .filter_map(|h| old.find(h))
            .min()
            .map(|i| old[i..].to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let m = &r.meta;
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str("<!-- Generated by `cargo xtask bench` (tests/src/bench/report.rs) from the results in \
                bench/results.json; only the reading between the reading markers is written by hand \
                and kept across runs. -->\n\n");
    s.push_str(&format!(
        "Measured on **{} CPUs ({}), {} GiB, Linux {}**, {} mode, {}; commit `{}`; the run took {:.1} min; \
         load average {:.2} at the start, {:.2} at the end. Tools: {}.\n\n",
        m.machine.nproc,
        m.machine.cpu_model,
        m.machine.mem_total_gib,
        m.machine.kernel,
        m.mode,
        m.started_utc,
        m.commit,
        m.seconds / 60.0,
        m.loadavg_start,
        m.loadavg_end,
        m.tools.join(", ")
    ));
    s.push_str("These machines are small and shared: every figure is the median of several rounds with \
                its min and max, next to a baseline measured in the same rounds, and compared as a ratio \
                to that baseline. Absolute figures move from run to run and machine to machine; the ratios \
                move much less.\n\n");
    s.push_str("## How to reproduce\n\n```sh\n");
    s.push_str(&format!(
        "cargo xtask bench           # full run ({:.0} minutes for sections 1 and 2 here): BENCHMARKS.md, bench/results.json, bench/*.svg\n",
        m.seconds / 60.0
    ));
    s.push_str("cargo xtask bench --quick   # a few minutes: fewer sizes, rounds and packets; writes bench/quick/ only\n");
    s.push_str("cargo xtask bench --only control   # one part (packets: sections 1 and 2; control: 3; vm: 4), the report rewritten around it\n");
    s.push_str("```\n\n");
    s.push_str("Root is needed (BPF programs, XDP, network namespaces). `xtask` installs what is missing \
                (as for `cargo xtask test`, plus Debian's `iptables` and `nftables`), then runs the VM \
                part, `xvs-bench-control` (section 3) and \
                `cargo run --release -p xvs-tests --bin xvs-bench -- [--quick] --out bench`. Every \
                measurement checks its packets were processed the intended way and the run fails \
                otherwise (see \"checked\" in results.json). Nothing leaves the network namespaces the \
                benchmark creates.\n\n");
    s.push_str("## Reading\n\n");
    s.push_str(READING_START);
    s.push_str("\n\n");
    s.push_str(&reading);
    s.push_str("\n\n");
    s.push_str(READING_END);
    s.push_str("\n\n");

    // ---- item 1 ----
    s.push_str("## 1. Per-packet cost of the BPF programs (BPF_PROG_TEST_RUN)\n\n");
    s.push_str(&format!("{}\n\n", m.micro));
    s.push_str("The real compiled programs (the object `cargo build` embeds) run through \
                BPF_PROG_TEST_RUN on 64-byte TCP frames, with `fib_redirect` off (verdict pass after \
                the rewrite: XDP_PASS, TC_ACT_OK) except in `est_fwd_fib`. Every case runs through both \
                hooks' programs, `xvs_xdp` and `xvs_tc` (the same balancer core: tc reads and writes the \
                skb through the kernel's helpers, `bpf_skb_store_bytes` and the checksum helpers, where \
                XDP writes the frame directly), each against the floor of its own hook: the trivial \
                `xvs_pass` (XDP) or `xvs_tc_pass` (tc) program, measured by the same method at the start \
                and the end of every round. Compare a hook's net cost over its own floor; the floors \
                differ because BPF_PROG_TEST_RUN builds an skb for tc. Two methods:\n\n\
                * **calls** (Katran's method): many calls with repeat = 1, each on a fresh input, the \
                kernel-reported durations averaged. Carries a fixed per-call cost (timer reads and \
                setup inside the kernel's timed region, the same for every program), which is why its \
                floor is about four times the `repeat` floor. Every case, new connections included.\n\
                * **repeat**: one call with a large repeat count. The kernel reruns the program on its \
                own output, so only cases whose output is again an input of the same case: the floor, \
                the non-VIP packet, and established forward/reply through a *bounce* connection whose \
                NAT maps the packet onto itself (same lookups, same rewrite and checksum code; the path \
                counters prove every repetition took the path). Closer to the program's own cost.\n\n\
                Compare **net cost over the floor** (`+ns`) across methods, and ratios within one method.\n\n");
    s.push_str("Cases:\n\n");
    for c in CASES {
        s.push_str(&format!("* `{}`: {}\n", c.id, c.what));
    }
    s.push_str("\nThe table holds N services of 10 destinations each (rr; the measured service 0 has weights \
                1..10 and is switched to wrr and sh for those cases), and a connection table (hash maps of \
                1,048,576 entries, which refuse new entries when full rather than evict: the pre-fill \
                and each case's new connections stay below it) pre-filled through the map with connections spread over every service \
                and destination. New connections come from clients never seen before, one per call; each \
                call's two entries are checked and removed afterwards so the table keeps its size.\n\n");
    s.push_str("Cells: median ns per packet [min–max over rounds] ×ratio to the floor (+net ns over the floor).\n\n");
    let services: BTreeSet<u32> = r.micro.iter().map(|f| f.services).collect();
    let conns: BTreeSet<u32> = r.micro.iter().map(|f| f.conns).collect();
    for (hook, method) in HOOKS
        .iter()
        .flat_map(|h| ["calls", "repeat"].map(move |m| (*h, m)))
    {
        let hook = hook.id();
        for c in &conns {
            let rows: Vec<&str> = CASES
                .iter()
                .map(|c| c.id)
                .filter(|id| {
                    r.micro
                        .iter()
                        .any(|f| f.hook == hook && f.method == method && f.case == *id)
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let any = r
                .micro
                .iter()
                .find(|f| f.hook == hook && f.method == method && f.conns == *c);
            let Some(any) = any else { continue };
            s.push_str(&format!(
                "### `{}`, method `{method}`, {} connections in the table ({} packets per case and round)\n\n",
                if hook == "tc" { "xvs_tc" } else { "xvs_xdp" },
                thousands(*c),
                thousands(any.packets_per_round as u32)
            ));
            s.push_str("| case |");
            for n in &services {
                s.push_str(&format!(" {} |", services_label(*n)));
            }
            s.push_str("\n|---|");
            for _ in &services {
                s.push_str("---|");
            }
            s.push('\n');
            for id in rows {
                s.push_str(&format!("| `{id}` |"));
                for n in &services {
                    match r.micro.iter().find(|f| {
                        f.hook == hook
                            && f.method == method
                            && f.case == id
                            && f.conns == *c
                            && f.services == *n
                    }) {
                        Some(f) => s.push_str(&format!(" {} |", cell_ns(f))),
                        None => s.push_str(" – |"),
                    }
                }
                s.push('\n');
            }
            s.push('\n');
        }
    }
    for (file, caption) in plots.iter().filter(|(f, _)| f.starts_with("micro")) {
        s.push_str(&format!(
            "![{caption}]({plots_dir_rel}/{file})\n\n_{caption}._\n\n"
        ));
    }

    // ---- item 2 ----
    s.push_str("## 2. End to end through the balancer's namespace (veth)\n\n");
    s.push_str(&format!("{}\n\n", m.e2e));
    s.push_str(concat!(
        "```text\n",
        " client ns                balancer ns                        destination ns 1 and 2\n",
        " c0 10.10.0.2/16 ── l0 10.10.0.1/16   l1 10.11.1.1/24 ── b0 10.11.1.2-6/24  (5 endpoints)\n",
        "                                      l2 10.11.2.1/24 ── b0 10.11.2.2-6/24  (5 endpoints)\n",
        "```\n\n"
    ));
    s.push_str(
        "One such set of namespaces per method, all built at once with the same table, and the \
                rounds go through the methods in turn (for every pattern: forward, xdp-native, \
                xdp-generic, tc, iptables, nftables), so the baseline is measured next to each figure. \
                Methods:\n\n",
    );
    for mth in METHODS {
        s.push_str(&format!("* `{}`: {}\n", mth.id(), mth.what()));
    }
    s.push_str("\nThe table: N services of the protocol under test (VIP 10.100.0.0 + i, port 80) with the \
                same 10 endpoints :8080, as xvs rr services, as kube-proxy iptables-mode rules \
                (`KUBE-SERVICES` with one rule per service → `KUBE-SVC-*` with `statistic --mode random \
                --probability 1/n` jumps → `KUBE-SEP-*` with the hairpin mark and the DNAT, plus \
                `KUBE-POSTROUTING`'s masquerade check; loaded with iptables-legacy-restore), and as \
                kube-proxy nftables-mode rules (`service-ips` verdict map on `daddr . l4proto . dport` → \
                per-service chain `numgen random mod 10 vmap` → per-endpoint chain with the DNAT; loaded \
                with `nft -f`, in transactions of 500 services). Only kube-proxy's NAT path is \
                reproduced; its filter chains would add the same cost to both. Traffic goes to four \
                services at 1/8, 3/8, 5/8 and 7/8 of the list (service 0 when N = 1): iptables walks \
                `KUBE-SERVICES` in order, so on average half the list, as for a service taken at random; \
                the other services are there to show the cost of scale. Conntrack (iptables, nftables) \
                consults the NAT rules only on a connection's first packet, which is why the patterns \
                include one that makes every packet a new connection.\n\n");
    s.push_str("Patterns:\n\n");
    for p in PATTERNS {
        s.push_str(&format!("* `{}`: {}\n", p.id(), p.what()));
    }
    s.push_str("\nThe UDP generator writes whole frames on the client's veth (AF_PACKET, \
                PACKET_QDISC_BYPASS, sendmmsg batches of 32) as fast as it can; UDP receivers drain one \
                socket per destination namespace (recvmmsg, non-blocking, 1 ms naps when empty: no \
                wake-up per packet); TCP senders and receivers are ordinary sockets. No thread is pinned \
                (the machine is shared; the scheduler puts them where there is room). Every veth has \
                one queue per CPU, like a multi-queue NIC, and all offloads that batch packets (GRO, GSO, \
                TSO, checksum offload) are off, so every method handles the same packets one by one, \
                except in the `-offloads` and `host-` patterns: there the senders (c0, b0, and the \
                balancer namespace's own veths) keep their default offloads (tx checksum offload, \
                TSO, GSO), as pods and the node's own processes have them, so TCP leaves its sockets \
                as GSO super-packets with CHECKSUM_PARTIAL; the XDP methods do not run those patterns \
                (XDP cannot see CHECKSUM_PARTIAL, and its port rewrite would corrupt those checksums: \
                see the README). There the unit is still bytes / MSS, so CPU per \"segment\" is CPU per \
                MSS of payload. \
                Each method runs as it would be deployed: only `xdp-native` has the pass-through XDP \
                program on the peers (c0, b0), which a redirect into a veth needs to be delivered; `tc` \
                forwards by FIB lookup and bpf_redirect and has the socket hooks attached too. The \
                `host-` patterns run from the balancer namespace itself (the node's own clients): `tc` \
                is then xvs at the socket (connect() goes to the chosen endpoint, no per-packet NAT), \
                `iptables` and `nftables` the same rules through their OUTPUT hooks, and `forward` a \
                direct connection to the endpoint (the baseline); for `host-tcp-conns` the unit is a \
                connection (connect, then close with an RST: no TIME_WAIT) and the CPU is per \
                connection. On \
                veth most of the path runs in softirq in the sender's context, so the packet rate is one \
                CPU's worth of sender + balancer + receiver work.\n\n\
                **Delivered** counts what the receivers' sockets got (UDP datagrams; TCP bytes / MSS = \
                data segments). **CPU per packet** is the CPU time of the whole pipeline during the \
                measured window divided by the packets delivered: this process's CPU time (the \
                generator, the receivers, and the softirq work the kernel does in their context: the \
                balancer's XDP program, forwarding, NAT, conntrack, the receivers' network stack) plus \
                the ksoftirqd threads' (softirq work deferred out of those contexts). The balancer \
                namespace has no process of its own, so a method's cost is what it adds over `forward`: \
                compare the CPU ratios. Other work on the machine does not count in it; results.json \
                also has the whole machine's busy and softirq time per packet from /proc/stat, which \
                does.\n\n\
                Each run checks: packets reached the endpoints' sockets on :8080 though they were sent \
                to VIP:80 (the balancer routes the VIPs back to the client, its default route: only a DNAT delivers them); many-flow \
                patterns reached both destination namespaces; for xvs the path counters show every \
                delivered packet was balanced (new flows as new connections, TCP replies reverse-NATed) \
                and left by XDP_REDIRECT in native mode or bpf_redirect at tc (the kernel forwarded \
                none of them) or by the stack in generic mode (with offloads: every balanced GSO packet \
                redirected, replies reverse-NATed); for the other methods the kernel forwarded at least \
                as many packets as were delivered (with offloads: some); in the `host-` patterns every \
                connection was balanced at the socket (`tc`) and the endpoints accepted every \
                connection made.\n\n");
    s.push_str("Cells: median packets delivered per second [min–max] ×ratio to `forward` in the same rounds; \
                CPU ns per delivered packet (whole pipeline) ×ratio to `forward` (and the difference of \
                the medians: the balancer's own CPU time per packet, over plain forwarding).\n\n");
    let e2e_services: BTreeSet<u32> = r.e2e.iter().map(|f| f.services).collect();
    for p in PATTERNS {
        if !r.e2e.iter().any(|f| f.pattern == p.id()) {
            continue;
        }
        let secs = r
            .e2e
            .iter()
            .find(|f| f.pattern == p.id())
            .map(|f| f.seconds_per_round)
            .unwrap_or(0.0);
        s.push_str(&format!(
            "### `{}`: {} ({secs:.1} s per round)\n\n| method |",
            p.id(),
            p.what()
        ));
        for n in &e2e_services {
            s.push_str(&format!(" {} |", services_label(*n)));
        }
        s.push_str("\n|---|");
        for _ in &e2e_services {
            s.push_str("---|");
        }
        s.push('\n');
        for mth in METHODS {
            if !r
                .e2e
                .iter()
                .any(|f| f.pattern == p.id() && f.method == mth.id())
            {
                continue;
            }
            s.push_str(&format!("| `{}` |", mth.id()));
            for n in &e2e_services {
                match r
                    .e2e
                    .iter()
                    .find(|f| f.pattern == p.id() && f.method == mth.id() && f.services == *n)
                {
                    Some(f) => s.push_str(&format!(" {} |", cell_e2e(f))),
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
        if p.proto() == crate::packet::UDP {
            let off: Vec<String> = r
                .e2e
                .iter()
                .filter(|f| f.pattern == p.id() && f.method == "forward")
                .map(|f| {
                    let offered: Vec<f64> = f.rounds.iter().map(|x| x.sent_pps).collect();
                    format!(
                        "{}: {}/s",
                        services_label(f.services),
                        fmt_pps(Summary::of(&offered).median)
                    )
                })
                .collect();
            s.push_str(&format!(
                "Offered load (generator's rate, median, during `forward`): {}.\n\n",
                off.join("; ")
            ));
        }
        for (file, caption) in plots
            .iter()
            .filter(|(f, _)| f.starts_with(&format!("e2e-{}-", p.id())))
        {
            s.push_str(&format!("![{caption}]({plots_dir_rel}/{file})\n\n"));
        }
    }
    s.push_str(&tail);
    std::fs::write(report, s).ctx("writing the report")
}
