//! The control-plane benchmark: load time of N services x 10 destinations from empty, the
//! latency of one destination change, and the memory the table takes, for xvs next to
//! iptables-legacy and nftables rule sets shaped like kube-proxy's (see src/bench_control.rs).
//!
//! ```text
//! xvs-bench-control [--quick] [--out DIR] [--sizes N,N..] [--rounds R] [--changes M]
//!                   [--change-sizes N,N..] [--baseline-max N] [--iptables-max N]
//!                   [--baseline-rounds R] [--budget SECONDS]
//! ```
//! Writes DIR/control.json, DIR/control.md and the plots DIR/control-{load,change}.svg (the
//! full run), the same under DIR/quick/ (`--quick`, so a quick run never overwrites the full
//! results). `--report-only` rewrites the report and plots from the saved JSON. Needs root.
// Result tables are tuples built and read in one place each.
#![allow(clippy::type_complexity)]
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xvs_tests::bench::plot::{plot, Series, YAxis};
use xvs_tests::bench::report::utc;
use xvs_tests::bench::stats::{ratios, Summary};
use xvs_tests::bench::sys;

#[path = "../bench_control.rs"]
mod bench_control;

use bench_control::*;

struct Args {
    quick: bool,
    report_only: bool,
    out: PathBuf,
    sizes: Vec<u32>,
    rounds: usize,
    changes: usize,
    change_sizes: Vec<u32>,
    baseline_max: u32,
    iptables_max: u32,
    baseline_rounds: Option<usize>,
    budget: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: xvs-bench-control [--quick] [--out DIR] [--report-only] [--sizes N,N..] [--rounds R]\n\
         \x20                        [--changes M] [--change-sizes N,N..] [--baseline-max N]\n\
         \x20                        [--iptables-max N] [--baseline-rounds R] [--budget SECONDS]\n\
         --quick: sizes 1000,10000, 3 rounds, 200 changes at 10000, 30 s budget per series\n\
         full: sizes 1000,10000,50000, 5 rounds, 1000 changes at 10000 and 50000, 180 s budget\n\
         --baseline-max: largest table nft loads (quick 10000, full 50000: tens of minutes)\n\
         --iptables-max: largest table iptables-legacy loads (10000: at 50000 the kernel refuses\n\
         \x20 the rule blob after about 20 minutes of iptables-restore)\n\
         --baseline-rounds: rounds of the baselines from 1001 to 10000 services (quick 1, full\n\
         \x20 3); one above"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut quick = false;
    let mut report_only = false;
    let mut out = PathBuf::from("bench");
    let mut sizes = None;
    let mut rounds = None;
    let mut changes = None;
    let mut change_sizes = None;
    let mut baseline_max = None;
    let mut iptables_max = None;
    let mut baseline_rounds = None;
    let mut budget = None;
    let list = |v: Option<String>| -> Vec<u32> {
        v.unwrap_or_else(|| usage())
            .split(',')
            .map(|x| x.trim().parse().unwrap_or_else(|_| usage()))
            .collect()
    };
    let num =
        |v: Option<String>| -> u64 { v.and_then(|x| x.parse().ok()).unwrap_or_else(|| usage()) };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => quick = true,
            "--report-only" => report_only = true,
            "--out" => out = it.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--sizes" => sizes = Some(list(it.next())),
            "--rounds" => rounds = Some(num(it.next()) as usize),
            "--changes" => changes = Some(num(it.next()) as usize),
            "--change-sizes" => change_sizes = Some(list(it.next())),
            "--baseline-max" => baseline_max = Some(num(it.next()) as u32),
            "--iptables-max" => iptables_max = Some(num(it.next()) as u32),
            "--baseline-rounds" => baseline_rounds = Some(num(it.next()) as usize),
            "--budget" => budget = Some(Duration::from_secs(num(it.next()))),
            _ => usage(),
        }
    }
    let (d_sizes, d_rounds, d_changes, d_csizes, d_budget) = if quick {
        (vec![1_000, 10_000], 3, 200, vec![10_000], 30)
    } else {
        (
            vec![1_000, 10_000, 50_000],
            5,
            1_000,
            vec![10_000, 50_000],
            180,
        )
    };
    let sizes = sizes.unwrap_or(d_sizes);
    let change_sizes: Vec<u32> = change_sizes
        .unwrap_or(d_csizes)
        .into_iter()
        .filter(|n| sizes.contains(n))
        .collect();
    Args {
        quick,
        report_only,
        out,
        sizes,
        rounds: rounds.unwrap_or(d_rounds).max(1),
        changes: changes.unwrap_or(d_changes),
        change_sizes,
        baseline_max: baseline_max.unwrap_or(if quick { 10_000 } else { 50_000 }),
        iptables_max: iptables_max.unwrap_or(10_000),
        baseline_rounds,
        budget: budget.unwrap_or(Duration::from_secs(d_budget)),
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    mode: String,
    started_utc: String,
    seconds: f64,
    machine: MachineInfo,
    commit: String,
    loadavg_start: f64,
    loadavg_end: f64,
    tools: Vec<String>,
    command: String,
    sizes: Vec<u32>,
    rounds: usize,
    baseline_rounds_above_1000: usize,
    baseline_max: u32,
    /// Largest table iptables-legacy was asked to load (above it the rule blob exceeds what
    /// x_tables accepts; see the reading).
    #[serde(default)]
    iptables_max: u32,
    changes_requested: usize,
    change_sizes: Vec<u32>,
    budget_s: f64,
    daemon_sizes: Sizes,
    nft_batch: u32,
}

#[derive(Serialize, Deserialize)]
struct Ratio {
    services: u32,
    metric: String,
    baseline: String,
    /// xvs / baseline per round (the rounds that both ran), summarised.
    ratio: S3,
    rounds: usize,
}

#[derive(Serialize, Deserialize)]
struct TickFigure {
    services: u32,
    /// Node::tick in process (the daemon's 2-second estimator step, under the node lock):
    /// the first creates the estimators, the next ones are the steady state. Wall seconds.
    tick_s: Vec<f64>,
    /// The same ticks' CPU time (the calling thread's), seconds.
    tick_cpu_s: Vec<f64>,
    /// xvsd's CPU share of one core over a quiet window after the load.
    daemon_idle_cpu_share: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct Memory {
    maps_empty: Vec<MapMem>,
    maps_loaded: Vec<MapMem>,
    loaded_services: u32,
    per_entry: PerEntry,
}

#[derive(Serialize, Deserialize)]
struct Results {
    meta: Meta,
    load: Vec<LoadSeries>,
    load_ratios: Vec<Ratio>,
    changes: Vec<ChangeSeries>,
    memory: Option<Memory>,
    ticks: Vec<TickFigure>,
}

/// Min / median / max (bench::stats::Summary, readable back for --report-only).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct S3 {
    min: f64,
    median: f64,
    max: f64,
}

impl S3 {
    fn of(v: &[f64]) -> S3 {
        let s = Summary::of(v);
        S3 {
            min: s.min,
            median: s.median,
            max: s.max,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MachineInfo {
    nproc: usize,
    cpu_model: String,
    kernel: String,
    mem_total_gib: f64,
}

impl MachineInfo {
    fn now() -> MachineInfo {
        let m = sys::machine();
        MachineInfo {
            nproc: m.nproc,
            cpu_model: m.cpu_model,
            kernel: m.kernel,
            mem_total_gib: m.mem_total_gib,
        }
    }
}

const NFT_BATCH: u32 = 1_000;

/// The system allocator, counting live bytes: the in-process rounds report the heap a loaded
/// `Node` holds (VmRSS of the daemon also counts freed memory the allocator keeps).
struct CountingAlloc;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        let q = unsafe { std::alloc::System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
            LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Bytes currently allocated by this process.
pub fn live_heap() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn main() {
    let a = args();
    if a.report_only {
        let dir = if a.quick {
            a.out.join("quick")
        } else {
            a.out.clone()
        };
        let res = std::fs::read(dir.join("control.json"))
            .map_err(|e| format!("{}: {e}", dir.join("control.json").display()))
            .and_then(|b| serde_json::from_slice::<Results>(&b).map_err(|e| e.to_string()))
            .and_then(|r| write(&r, &dir, &plots_rel(&a)));
        if let Err(e) = res {
            eprintln!("xvs-bench-control: {e}");
            std::process::exit(1);
        }
        eprintln!(
            "xvs-bench-control: wrote {}",
            dir.join("control.md").display()
        );
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xvs-bench-control needs root (BPF, XDP, network namespaces)");
        std::process::exit(1);
    }
    install_signal_handlers();
    if let Err(e) = ensure_tools() {
        eprintln!("xvs-bench-control: {e}");
        std::process::exit(1);
    }
    let bins = match (
        xvs_tests::daemon::find_bin("xvsd"),
        xvs_tests::daemon::find_bin("xvsadm"),
    ) {
        (Some(xvsd), Some(xvsadm)) => Bins { xvsd, xvsadm },
        _ => {
            eprintln!(
                "xvsd/xvsadm not found next to this binary: cargo build --release -p lb-user --bins"
            );
            std::process::exit(1);
        }
    };
    let dir = if a.quick {
        a.out.join("quick")
    } else {
        a.out.clone()
    };
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t0 = Instant::now();
    let load0 = sys::loadavg();
    let mode = if a.quick { "quick" } else { "full" };
    let brounds = a.baseline_rounds.unwrap_or(if a.quick { 1 } else { 3 });
    eprintln!(
        "xvs-bench-control: {mode} run: sizes {:?}, {} rounds (baselines up to {} services, {} rounds above 1000), {} changes at {:?} ({} s budget per series); results to {}",
        a.sizes,
        a.rounds,
        a.baseline_max,
        brounds,
        a.changes,
        a.change_sizes,
        a.budget.as_secs(),
        dir.display()
    );
    let mut load: Vec<LoadSeries> = Vec::new();
    let mut changes: Vec<ChangeSeries> = Vec::new();
    let mut ticks: Vec<TickFigure> = Vec::new();
    let mut memory: Option<Memory> = None;
    let res = run(
        &a,
        &bins,
        brounds,
        &mut load,
        &mut changes,
        &mut ticks,
        &mut memory,
    );
    if let Err(e) = res {
        eprintln!("xvs-bench-control: FAILED: {e}");
        std::process::exit(1);
    }
    let load_ratios = ratios_of(&load);
    let r = Results {
        meta: Meta {
            mode: mode.into(),
            started_utc: utc(started),
            seconds: t0.elapsed().as_secs_f64(),
            machine: MachineInfo::now(),
            commit: sys::git_commit(),
            loadavg_start: load0,
            loadavg_end: sys::loadavg(),
            tools: vec![
                tool_version("iptables-legacy", &["--version"]),
                tool_version("nft", &["--version"]),
                tool_version("bpftool", &["--version"]),
            ],
            command: std::env::args().collect::<Vec<_>>().join(" "),
            sizes: a.sizes.clone(),
            rounds: a.rounds,
            baseline_rounds_above_1000: brounds,
            baseline_max: a.baseline_max,
            iptables_max: a.iptables_max,
            changes_requested: a.changes,
            change_sizes: a.change_sizes.clone(),
            budget_s: a.budget.as_secs_f64(),
            daemon_sizes: SIZES,
            nft_batch: NFT_BATCH,
        },
        load,
        load_ratios,
        changes,
        memory,
        ticks,
    };
    if let Err(e) = write(&r, &dir, &plots_rel(&a)) {
        eprintln!("xvs-bench-control: writing results failed: {e}");
        std::process::exit(1);
    }
    eprintln!(
        "xvs-bench-control: done in {:.1} min: {}, {}",
        r.meta.seconds / 60.0,
        dir.join("control.json").display(),
        dir.join("control.md").display()
    );
}

/// Where the report that takes in control.md finds the plots: `cargo xtask bench` appends it to
/// BENCHMARKS.md at the root (plots in the output directory) or, with --quick, to
/// BENCHMARKS.md in the quick directory beside them.
fn plots_rel(a: &Args) -> String {
    if a.quick {
        ".".into()
    } else {
        a.out.display().to_string()
    }
}

fn series<'a>(v: &'a mut Vec<LoadSeries>, engine: &str, n: u32) -> &'a mut LoadSeries {
    if let Some(k) = v.iter().position(|s| s.engine == engine && s.services == n) {
        return &mut v[k];
    }
    v.push(LoadSeries {
        engine: engine.into(),
        services: n,
        rounds: Vec::new(),
    });
    v.last_mut().unwrap()
}

fn run(
    a: &Args,
    bins: &Bins,
    brounds: usize,
    load: &mut Vec<LoadSeries>,
    changes: &mut Vec<ChangeSeries>,
    ticks: &mut Vec<TickFigure>,
    memory: &mut Option<Memory>,
) -> Res<()> {
    let largest = *a.sizes.iter().max().unwrap_or(&0);
    let copts = ChangeOpts {
        count: a.changes,
        budget: a.budget,
    };
    for &n in &a.sizes {
        eprintln!("== {n} services x {ENDPOINTS} destinations: generating the rule sets");
        let rules = xvs_rules(n);
        let baselines = n <= a.baseline_max;
        let ipt_here = baselines && n <= a.iptables_max;
        let ipt = if ipt_here {
            ipt_script(n)
        } else {
            String::new()
        };
        let nfts = if baselines {
            bench_control::nft_scripts(n, NFT_BATCH)
        } else {
            Vec::new()
        };
        // Above 10,000 services a baseline load takes tens of minutes: one round.
        let b_rounds = if n <= 1_000 {
            a.rounds
        } else if n <= 10_000 {
            brounds.min(a.rounds)
        } else {
            1
        };
        let ipt_ns = if ipt_here {
            Some(BaseNs::new("bci")?)
        } else {
            None
        };
        let nft_ns = if baselines {
            Some(BaseNs::new("bcn")?)
        } else {
            None
        };
        let change_here = a.change_sizes.contains(&n);
        for r in 0..a.rounds {
            check_stop()?;
            let last = r + 1 == a.rounds;
            let want_changes = (change_here && last).then_some(&copts);
            // xvs through the daemon.
            let (lr, ex) = xvs_round(
                bins,
                n,
                &rules,
                n == largest && r == 0,
                (r == 0).then_some(Duration::from_secs(5)),
                want_changes,
            )?;
            eprintln!(
                "   round {r}: xvs        load {:8.3} s  cpu {:7.3} s (xvsd {:6.3})  -S {:7.3} s  -C {:7.3} s  rss {:7} KiB  kmem {:+.1} MiB",
                lr.wall_s,
                lr.cpu_s,
                lr.daemon_cpu_s,
                lr.verify_s,
                lr.clear_s,
                lr.rss_kib,
                lr.kmem_delta_bytes as f64 / 1048576.0
            );
            series(load, "xvs", n).rounds.push(lr);
            if let (Some(e), Some(l)) = (ex.maps_empty, ex.maps_loaded) {
                let per_entry = per_entry(&l);
                *memory = Some(Memory {
                    maps_empty: e,
                    maps_loaded: l,
                    loaded_services: n,
                    per_entry,
                });
            }
            for c in &ex.changes {
                eprintln!(
                    "            xvs {:7} changes: {:5} p50 {:9.3} ms p99 {:9.3} ms max {:9.3} ms",
                    c.mode, c.latency.n, c.latency.p50_ms, c.latency.p99_ms, c.latency.max_ms
                );
            }
            changes.extend(ex.changes);
            let idle = ex.idle_cpu_share;
            // The same work in this process (no daemon, no socket, no ticker).
            // Three ticks in the first round: the first creates the estimators, the next two
            // are the steady state.
            let nticks = if r == 0 { 3 } else { 0 };
            let (lr, tick_s, ch) = inproc_round(n, &rules, nticks, want_changes)?;
            eprintln!(
                "            xvs inproc parse {:7.3} s  apply {:7.3} s  cpu {:7.3} s  heap {} KiB / {} KiB{}",
                lr.parse_s,
                lr.apply_s,
                lr.cpu_s,
                lr.heap_loaded_kib,
                lr.heap_ticked_kib,
                if tick_s.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  tick {}",
                        tick_s
                            .iter()
                            .map(|t| format!("{:.3} s (cpu {:.3} s)", t.0, t.1))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            series(load, "xvs-inproc", n).rounds.push(lr);
            if r == 0 {
                ticks.push(TickFigure {
                    services: n,
                    tick_s: tick_s.iter().map(|t| t.0).collect(),
                    tick_cpu_s: tick_s.iter().map(|t| t.1).collect(),
                    daemon_idle_cpu_share: idle,
                });
            }
            if let Some(c) = ch {
                eprintln!(
                    "            xvs inproc changes: {:5} p50 {:9.3} ms p99 {:9.3} ms",
                    c.latency.n, c.latency.p50_ms, c.latency.p99_ms
                );
                changes.push(c);
            }
            if baselines && r < b_rounds {
                let blast = r + 1 == b_rounds;
                let bchanges = (change_here && blast).then_some(&copts);
                if let Some(ipt_ns) = &ipt_ns {
                    let (lr, ch) = ipt_round(ipt_ns, n, &ipt, bchanges)?;
                    eprintln!(
                        "            iptables   load {:8.3} s  cpu {:7.3} s  save {:7.3} s  clear {:7.3} s  kmem {:+.1} MiB",
                        lr.wall_s,
                        lr.cpu_s,
                        lr.verify_s,
                        lr.clear_s,
                        lr.kmem_delta_bytes as f64 / 1048576.0
                    );
                    series(load, "iptables-legacy", n).rounds.push(lr);
                    if let Some(c) = ch {
                        eprintln!(
                            "            iptables changes: {:5} p50 {:9.3} ms p99 {:9.3} ms",
                            c.latency.n, c.latency.p50_ms, c.latency.p99_ms
                        );
                        changes.push(c);
                    }
                }
                let (lr, ch) = nft_round(nft_ns.as_ref().unwrap(), n, &nfts, bchanges)?;
                eprintln!(
                    "            nft        load {:8.3} s  cpu {:7.3} s  list {:7.3} s  clear {:7.3} s  kmem {:+.1} MiB ({} transactions)",
                    lr.wall_s,
                    lr.cpu_s,
                    lr.verify_s,
                    lr.clear_s,
                    lr.kmem_delta_bytes as f64 / 1048576.0,
                    lr.invocations
                );
                series(load, "nft", n).rounds.push(lr);
                if let Some(c) = ch {
                    eprintln!(
                        "            nft changes: {:5} p50 {:9.3} ms p99 {:9.3} ms",
                        c.latency.n, c.latency.p50_ms, c.latency.p99_ms
                    );
                    changes.push(c);
                }
            }
        }
    }
    Ok(())
}

fn ratios_of(load: &[LoadSeries]) -> Vec<Ratio> {
    let mut v = Vec::new();
    for x in load.iter().filter(|s| s.engine == "xvs") {
        for b in load.iter().filter(|s| {
            s.services == x.services && (s.engine == "iptables-legacy" || s.engine == "nft")
        }) {
            let k = x.rounds.len().min(b.rounds.len());
            let metrics: [(&str, fn(&LoadRound) -> f64); 3] = [
                ("load wall", |r| r.wall_s),
                ("load cpu", |r| r.cpu_s),
                ("clear wall", |r| r.clear_s),
            ];
            for (name, f) in metrics {
                let xs: Vec<f64> = x.rounds[..k].iter().map(f).collect();
                let bs: Vec<f64> = b.rounds[..k].iter().map(f).collect();
                v.push(Ratio {
                    services: x.services,
                    metric: name.into(),
                    baseline: b.engine.clone(),
                    ratio: S3::of(&ratios(&xs, &bs)),
                    rounds: k,
                });
            }
        }
    }
    v
}

// ------------------------------------------------------------------------------------------
// Report.
// ------------------------------------------------------------------------------------------

/// The plots, named in the report by their path from the report (BENCHMARKS.md at the root for
/// a full run, beside the plots in bench/quick/ for a quick one).
const LOAD_PLOT: &str = "control-load.svg";
const CHANGE_PLOT: &str = "control-change.svg";

fn write(r: &Results, dir: &Path, plots_rel: &str) -> Res<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("control.json"), json).map_err(|e| e.to_string())?;
    write_plots(r, dir)?;
    std::fs::write(dir.join("control.md"), markdown(r, plots_rel)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The scaling curves: load time, and one change's latency, against the table's size. Both on
/// a log y axis: the baselines take up to thousands of times what xvs takes.
fn write_plots(r: &Results, dir: &Path) -> Res<()> {
    let load: Vec<Series> = ["xvs", "xvs-inproc", "iptables-legacy", "nft"]
        .iter()
        .map(|e| {
            let pts = r
                .load
                .iter()
                .filter(|s| s.engine == *e && !s.rounds.is_empty())
                .map(|s| (s.services as f64, col(s, |x| x.wall_s)))
                .collect();
            (plot_label(e).to_string(), pts)
        })
        .filter(|(_, pts): &Series| !pts.is_empty())
        .collect();
    plot(
        &dir.join(LOAD_PLOT),
        "Loading N services x 10 destinations from empty (median, min-max over rounds)",
        "services (10 destinations each)",
        "seconds (log scale)",
        &load,
        YAxis::Log,
    )?;
    // (engine, mode, the series' label key): the in-process change is xvs's `inproc` mode.
    let change: Vec<Series> = [
        ("xvs", "e2e", "xvs"),
        ("xvs", "inproc", "xvs-inproc"),
        ("iptables-legacy", "e2e", "iptables-legacy"),
        ("nft", "e2e", "nft"),
    ]
    .iter()
    .map(|(e, m, label)| {
        let pts = r
            .changes
            .iter()
            .filter(|c| c.engine == *e && c.mode == *m && c.latency.n > 0)
            .map(|c| {
                let l = &c.latency;
                let s = Summary {
                    min: l.min_ms,
                    median: l.p50_ms,
                    max: l.p99_ms,
                };
                (c.services as f64, s)
            })
            .collect();
        (plot_label(label).to_string(), pts)
    })
    .filter(|(_, pts): &Series| !pts.is_empty())
    .collect();
    plot(
        &dir.join(CHANGE_PLOT),
        "One destination change (p50, bars from the minimum to p99)",
        "services in the table (10 destinations each)",
        "milliseconds (log scale)",
        &change,
        YAxis::Log,
    )?;
    Ok(())
}

fn plot_label(engine: &str) -> &str {
    match engine {
        "xvs" => "xvs (xvsadm)",
        "xvs-inproc" => "xvs in process",
        "iptables-legacy" => "iptables-legacy",
        "nft" => "nft",
        _ => engine,
    }
}

fn image(s: &mut String, plots_rel: &str, file: &str, caption: &str) {
    s.push_str(&format!(
        "![{caption}]({plots_rel}/{file})\n\n_{caption}._\n\n"
    ));
}

fn s3(s: &Summary) -> String {
    format!("{} / {} / {}", sec(s.min), sec(s.median), sec(s.max))
}

/// Seconds with a sensible number of digits.
fn sec(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 100.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A ratio with a sensible number of digits.
fn ratio_num(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn ratio_str(s: &S3) -> String {
    format!(
        "**{}** ({}–{})",
        ratio_num(s.median),
        ratio_num(s.min),
        ratio_num(s.max)
    )
}

fn bytes(x: f64) -> String {
    if x < 0.0 {
        return format!("-{}", bytes(-x));
    }
    if x >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", x / 1024.0 / 1024.0 / 1024.0)
    } else if x >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", x / 1024.0 / 1024.0)
    } else if x >= 1024.0 {
        format!("{:.1} KiB", x / 1024.0)
    } else {
        format!("{x:.0} B")
    }
}

fn col(s: &LoadSeries, f: fn(&LoadRound) -> f64) -> Summary {
    Summary::of(&s.rounds.iter().map(f).collect::<Vec<_>>())
}

fn find<'a>(r: &'a Results, engine: &str, n: u32) -> Option<&'a LoadSeries> {
    r.load
        .iter()
        .find(|s| s.engine == engine && s.services == n)
}

fn change<'a>(r: &'a Results, engine: &str, mode: &str, n: u32) -> Option<&'a ChangeSeries> {
    r.changes
        .iter()
        .find(|c| c.engine == engine && c.mode == mode && c.services == n && c.latency.n > 0)
}

fn engine_name(e: &str) -> &str {
    match e {
        "xvs" => "xvs: `xvsadm -R` → xvsd",
        "xvs-inproc" => "xvs in process (parse + `Node::apply`, no daemon)",
        "iptables-legacy" => "iptables-legacy-restore",
        "nft" => "nft -f",
        _ => e,
    }
}

fn mode_name(m: &str) -> &str {
    match m {
        "e2e" => "one process per change (spawn included)",
        "socket" => "control socket request (no spawn)",
        "inproc" => "`Node::apply` in process (no socket, no ticker)",
        "spawn" => "floor: `xvsadm --version` (spawn only)",
        "noop" => "empty request through the socket (daemon round trip)",
        _ => m,
    }
}

fn markdown(r: &Results, plots_rel: &str) -> String {
    let m = &r.meta;
    let mut s = String::new();
    let p = |s: &mut String, t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    p(&mut s, "## Control plane: loading and changing the table");
    p(&mut s, "");
    p(
        &mut s,
        &format!(
            "Run `{}` ({} mode, {}, {:.1} min) on commit `{}`: {} CPUs ({}), {:.1} GiB, kernel {}; load average {:.1} at the start and {:.1} at the end. {}.",
            m.command,
            m.mode,
            m.started_utc,
            m.seconds / 60.0,
            m.commit,
            m.machine.nproc,
            m.machine.cpu_model,
            m.machine.mem_total_gib,
            m.machine.kernel,
            m.loadavg_start,
            m.loadavg_end,
            m.tools.join("; ")
        ),
    );
    p(&mut s, "");
    p(&mut s, "The table: N TCP services (VIP 10.96.0.0 + i, port 80, rr), each with 10 destinations of its own (10.128.0.0 + 10 i + j, port 8080, masquerade, weight 1).");
    p(&mut s, &format!(
        "* **xvs**: `xvsadm -R` of the ipvsadm-save file into a freshly started `xvsd` (own network namespace with a veth pair, `--mode generic`, `--max-services {}` `--max-dests {}` `--sched-slots {}` `--conn-table-size {}`), counted with `xvsadm -S -n` (N x 11 lines), then `xvsadm -C`. **In process**: the same file parsed (`parse_restore`) and applied with `Node::apply` to maps of the same sizes in the benchmark's own process: the daemon's work without the process, the socket and the estimator ticker around it.",
        m.daemon_sizes.max_services, m.daemon_sizes.max_dests, m.daemon_sizes.sched_slots, m.daemon_sizes.conn_table_size
    ));
    p(&mut s, "* **iptables-legacy** (this machine's `iptables` is iptables-nft; kube-proxy's iptables mode with the legacy backend is the classic baseline): `iptables-legacy-restore` of the nat table kube-proxy's iptables mode writes (KUBE-SERVICES with one `-d VIP/32 -p tcp --dport 80 -j KUBE-SVC-x` per service, KUBE-SVC-x with the `-m statistic --mode random --probability 1/(10-k)` ladder, KUBE-SEP-x-k with the masquerade mark and `DNAT --to-destination`), counted with `iptables-legacy-save -t nat` (31 N + 8 rules, 11 N + 8 chains), then cleared by restoring an empty nat table. A private `XTABLES_LOCKFILE`, so other iptables users on the machine never make it wait.");
    p(&mut s, &format!("* **nft**: `nft -f` of kube-proxy's nftables-mode table (a `service-ips` verdict map keyed `ip daddr . meta l4proto . th dport`, per service a chain with `numgen random mod 10 vmap {{ 0 : goto endpoint-.., .. }}`, per endpoint a chain with the masquerade mark and `dnat to`), in one transaction per {} services (kube-proxy writes one transaction; on this kernel one transaction of 10,000 services took 208 s against 48 s in batches of 1,000, see the reading), counted with `nft list chains` and `nft list map` (11 N + 6 chains, N elements), then `nft delete table`.", m.nft_batch));
    p(&mut s, "* Every command is timed from its spawn to its exit (input written, output read), with its CPU (user + system, from `wait4`; for xvs plus the daemon's from /proc). The baselines run in their own namespaces, entered with `setns` before exec, so their spawn costs what an `xvsadm` spawn costs.");
    p(&mut s, &format!("* {} rounds of xvs per size; iptables and nft {} rounds at 1,000 services, {} up to 10,000 and 1 above (a baseline load of 50,000 services takes tens of minutes), nft up to {} services and iptables-legacy up to {} (above, the kernel refuses its rule blob: see the reading). Ratios are xvs / baseline per round (the rounds both ran), as median (min–max).", m.rounds, m.rounds, m.baseline_rounds_above_1000, m.baseline_max, if m.iptables_max == 0 { m.baseline_max } else { m.iptables_max.min(m.baseline_max) }));
    p(&mut s, "");

    // Load.
    p(
        &mut s,
        "### Loading N services x 10 destinations from empty",
    );
    p(&mut s, "");
    p(&mut s, "| services | engine | rounds | load, s (min / median / max) | CPU, s (median) | count listing, s (median) | clearing, s (median) |");
    p(&mut s, "|---:|---|---:|---|---:|---:|---:|");
    for &n in &m.sizes {
        for e in ["xvs", "xvs-inproc", "iptables-legacy", "nft"] {
            let Some(x) = find(r, e, n) else { continue };
            let (verify, clear) = if e == "xvs-inproc" {
                (
                    format!("{} (`Node::snapshot`)", sec(x.rounds[0].verify_s)),
                    "–".to_string(),
                )
            } else {
                (
                    sec(col(x, |r| r.verify_s).median),
                    sec(col(x, |r| r.clear_s).median),
                )
            };
            let load = if e == "xvs-inproc" {
                format!(
                    "{} (parse {} + apply {})",
                    s3(&col(x, |r| r.wall_s)),
                    sec(col(x, |r| r.parse_s).median),
                    sec(col(x, |r| r.apply_s).median)
                )
            } else {
                s3(&col(x, |r| r.wall_s))
            };
            let cpu = if e == "xvs" {
                format!(
                    "{} (xvsd {})",
                    sec(col(x, |r| r.cpu_s).median),
                    sec(col(x, |r| r.daemon_cpu_s).median)
                )
            } else {
                sec(col(x, |r| r.cpu_s).median)
            };
            p(
                &mut s,
                &format!(
                    "| {n} | {} | {} | {load} | {cpu} | {verify} | {clear} |",
                    engine_name(e),
                    x.rounds.len()
                ),
            );
        }
    }
    p(&mut s, "");
    if !r.load_ratios.is_empty() {
        p(&mut s, "Ratios xvs / baseline (below 1: xvs is faster):");
        p(&mut s, "");
        p(
            &mut s,
            "| services | baseline | load (wall) | load (CPU) | clearing (wall) | rounds |",
        );
        p(&mut s, "|---:|---|---|---|---|---:|");
        for &n in &m.sizes {
            for b in ["iptables-legacy", "nft"] {
                let get = |metric: &str| {
                    r.load_ratios
                        .iter()
                        .find(|x| x.services == n && x.baseline == b && x.metric == metric)
                };
                let (Some(w), Some(c), Some(cl)) =
                    (get("load wall"), get("load cpu"), get("clear wall"))
                else {
                    continue;
                };
                p(
                    &mut s,
                    &format!(
                        "| {n} | {b} | {} | {} | {} | {} |",
                        ratio_str(&w.ratio),
                        ratio_str(&c.ratio),
                        ratio_str(&cl.ratio),
                        w.rounds
                    ),
                );
            }
        }
        p(&mut s, "");
    }
    let largest = |e: &str| {
        r.load
            .iter()
            .filter(|x| x.engine == e && !x.rounds.is_empty())
            .map(|x| x.services)
            .max()
    };
    let ipt_note = match (largest("iptables-legacy"), largest("xvs")) {
        (Some(i), Some(x)) if i < x => format!("; iptables-legacy up to {i} services"),
        _ => String::new(),
    };
    image(
        &mut s,
        plots_rel,
        LOAD_PLOT,
        &format!("Load time against the number of services (log scales{ipt_note})"),
    );

    // Changes.
    p(&mut s, "### One destination change");
    p(&mut s, "");
    p(&mut s, "Each change deletes endpoint j of a service (services spread over the table), the next one adds it back: xvs `xvsadm -d` / `xvsadm -a ... -m -w 1`; iptables `iptables-legacy-restore --noflush` of the changed chains only (KUBE-SVC-x rewritten, KUBE-SEP-x-j created, or flushed and `-X`; kube-proxy's partial sync also rewrites KUBE-SERVICES whole, so this is iptables' cheapest change); nft one `nft -f` transaction (endpoint chain added, or flushed and deleted; the service chain flushed and its `numgen ... vmap` rule rewritten with 9 or 10 endpoints). The xvs modes are interleaved step by step, so they see the same machine. After the series every table is compared line for line (as a multiset) with the table before it, and counted.");
    p(&mut s, "");
    p(&mut s, "| services | engine | how | changes | p50, ms | p99, ms | min, ms | max, ms | CPU/change, ms |");
    p(&mut s, "|---:|---|---|---:|---:|---:|---:|---:|---:|");
    let mut sizes: Vec<u32> = r.changes.iter().map(|c| c.services).collect();
    sizes.sort();
    sizes.dedup();
    for &n in &sizes {
        for c in r.changes.iter().filter(|c| c.services == n) {
            let cpu = if c.mode == "e2e" && c.engine == "xvs" {
                format!(
                    "{} + xvsd {}",
                    ms(c.cpu_mean_ms),
                    ms(c.daemon_cpu_per_change_ms)
                )
            } else if c.cpu_mean_ms > 0.0 {
                ms(c.cpu_mean_ms)
            } else {
                "–".into()
            };
            p(
                &mut s,
                &format!(
                    "| {n} | {} | {} | {}{} | {} | {} | {} | {} | {cpu} |",
                    c.engine,
                    mode_name(&c.mode),
                    c.latency.n,
                    if c.budget_hit {
                        format!(" of {} (budget)", c.requested)
                    } else {
                        String::new()
                    },
                    ms(c.latency.p50_ms),
                    ms(c.latency.p99_ms),
                    ms(c.latency.min_ms),
                    ms(c.latency.max_ms)
                ),
            );
        }
    }
    p(&mut s, "");
    let mut rat = Vec::new();
    for &n in &sizes {
        let Some(x) = change(r, "xvs", "e2e", n) else {
            continue;
        };
        let spawn = change(r, "xvs", "spawn", n);
        for b in ["iptables-legacy", "nft"] {
            // The baseline at the same size, else the largest one below (a conservative ratio:
            // the baselines' changes get slower with the table).
            let bc = r
                .changes
                .iter()
                .filter(|c| c.engine == b && c.services <= n && c.latency.n > 0)
                .max_by_key(|c| c.services);
            if let Some(bc) = bc {
                rat.push(format!(
                    "| {n} | {b}{} | {} | {} | {} |",
                    if bc.services != n {
                        format!(" at {} services", bc.services)
                    } else {
                        String::new()
                    },
                    ratio1(x.latency.p50_ms, bc.latency.p50_ms),
                    ratio1(x.latency.p99_ms, bc.latency.p99_ms),
                    spawn
                        .map(|sp| format!(
                            "{} ms",
                            ms((x.latency.p50_ms - sp.latency.p50_ms).max(0.0))
                        ))
                        .unwrap_or_else(|| "–".into())
                ));
            }
        }
    }
    if !rat.is_empty() {
        p(&mut s, "Ratios of the xvs change (one `xvsadm` process each, spawn included) to the baselines' (one `iptables-restore` / `nft` process each):");
        p(&mut s, "");
        p(
            &mut s,
            "| services | baseline | p50 ratio | p99 ratio | xvs p50 minus the spawn floor |",
        );
        p(&mut s, "|---:|---|---:|---:|---:|");
        for l in rat {
            p(&mut s, &l);
        }
        p(&mut s, "");
    }
    image(
        &mut s,
        plots_rel,
        CHANGE_PLOT,
        "One destination change against the number of services (p50; bars from the minimum to p99; log scales)",
    );

    // Memory.
    p(&mut s, "### Memory");
    p(&mut s, "");
    if let Some(mem) = &r.memory {
        p(&mut s, &format!("BPF maps of the daemon, from the kernel (`bpftool -j map show pinned`: `bytes_memlock`, the map type's own accounting of what it allocated), empty and with {} services x 10 loaded. Per entry = memlock / max_entries.", mem.loaded_services));
        p(&mut s, "");
        p(&mut s, "| map | type | key + value, B | max entries | memlock empty | memlock loaded | per entry, B |");
        p(&mut s, "|---|---|---:|---:|---:|---:|---:|");
        for l in &mem.maps_loaded {
            let e = mem
                .maps_empty
                .iter()
                .find(|x| x.name == l.name)
                .map(|x| x.memlock_bytes)
                .unwrap_or(0);
            p(
                &mut s,
                &format!(
                    "| {} | {} | {} + {} | {} | {} | {} | {:.1} |",
                    l.name,
                    l.kind,
                    l.key_bytes,
                    l.value_bytes,
                    l.max_entries,
                    bytes(e as f64),
                    bytes(l.memlock_bytes as f64),
                    l.per_entry_bytes
                ),
            );
        }
        let pe = &mem.per_entry;
        p(&mut s, "");
        p(
            &mut s,
            &format!("* per **service**: {:.1} B (SERVICES);", pe.service),
        );
        p(&mut s, &format!("* per **destination**: {:.1} B (DESTS + DEST_STATS, per-CPU on {} CPUs, + BACKENDS, one per real-server address: every destination here has its own);", pe.destination, m.machine.nproc));
        p(&mut s, &format!("* per **scheduler slot**: {:.1} B (SCHED_SLOTS; an rr service of 10 destinations takes 11, and a change writes a fresh region before the old one is freed);", pe.sched_slot));
        p(
            &mut s,
            &format!(
                "* per **connection**: {:.1} B (CONNS + REPLIES, both LRU hashes);",
                pe.connection
            ),
        );
        p(&mut s, &format!("* a service of 10 destinations: {} (service + 10 destinations + 11 slots); fixed maps (CONFIG, TX_PORTS, PATH_STATS) {}; all maps as sized here: {}. Hash and array maps are preallocated at max_entries, so this is the cost of the sizes chosen, not of the entries in use (memlock empty = loaded).", bytes(pe.service_of_10), bytes(pe.fixed), bytes(pe.total_as_sized)));
        p(&mut s, "");
    }
    p(&mut s, "Resident memory and kernel memory. The delta is the memcg-accounted kmalloc slabs (kmalloc-cg-* in /proc/slabinfo, where nf_tables allocates its chains, rules, sets and elements) after the load minus before: machine-wide, so other work moves it too (read the median; vmalloc and per-CPU memory, which other benchmarks' BPF maps move by hundreds of MiB, are left out). Exact figures where the kernel gives them: xvs' maps (bpftool, above) and iptables' rule blob (IPT_SO_GET_INFO; x_tables refuses a blob of 512 MiB or more):");
    p(&mut s, "");
    p(&mut s, "| services | engine | xvsd VmRSS after load | after `-S -n` | VmHWM | kernel memory delta (median) | per service | the table in the kernel, exact | per service |");
    p(&mut s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let per10 = r.memory.as_ref().map(|m| m.per_entry.service_of_10);
    for &n in &m.sizes {
        for e in ["xvs", "iptables-legacy", "nft"] {
            let Some(x) = find(r, e, n) else { continue };
            let km = Summary::of(
                &x.rounds
                    .iter()
                    .map(|r| r.kmem_delta_bytes as f64)
                    .collect::<Vec<_>>(),
            );
            let rss = |f: fn(&LoadRound) -> f64| {
                if e == "xvs" {
                    bytes(col(x, f).median * 1024.0)
                } else {
                    "–".into()
                }
            };
            let exact = match e {
                "xvs" => per10.map(|b| {
                    (
                        format!(
                            "{} (maps sized to fit: N x a service of 10)",
                            bytes(b * n as f64)
                        ),
                        bytes(b),
                    )
                }),
                "iptables-legacy" => x.rounds.first().map(|r| {
                    (
                        format!(
                            "{} (rule blob, {} entries; + 16 B x {} CPUs of counters per entry)",
                            bytes(r.kernel_table_bytes as f64),
                            r.kernel_entries,
                            m.machine.nproc
                        ),
                        bytes(r.kernel_table_bytes as f64 / n as f64),
                    )
                }),
                _ => None,
            }
            .unwrap_or_else(|| ("–".into(), "–".into()));
            p(
                &mut s,
                &format!(
                    "| {n} | {e} | {} | {} | {} | {} | {} | {} | {} |",
                    rss(|r| r.rss_kib as f64),
                    rss(|r| r.rss_after_list_kib as f64),
                    rss(|r| r.hwm_kib as f64),
                    bytes(km.median),
                    bytes(km.median / n as f64),
                    exact.0,
                    exact.1
                ),
            );
        }
    }
    p(&mut s, "");
    let heaps: Vec<(u32, &LoadRound)> = m
        .sizes
        .iter()
        .filter_map(|&n| {
            find(r, "xvs-inproc", n)
                .and_then(|x| x.rounds.iter().find(|r| r.heap_ticked_kib > 0))
                .map(|r| (n, r))
        })
        .collect();
    if !heaps.is_empty() {
        p(&mut s, "What the daemon itself holds: the live heap of a loaded `Node` in process (the table, the engine's per-service state, and after its first estimator ticks the rate estimators), counted by the allocator. VmRSS above is larger: it also counts freed memory the allocator keeps and the process' code and stacks; xvsd hands freed memory back (malloc_trim) after every request or answer over 1 MiB.");
        p(&mut s, "");
        p(
            &mut s,
            "| services | heap after the load | with the estimators | per service of 10 |",
        );
        p(&mut s, "|---:|---:|---:|---:|");
        for (n, h) in heaps {
            p(
                &mut s,
                &format!(
                    "| {n} | {} | {} | {} |",
                    bytes(h.heap_loaded_kib as f64 * 1024.0),
                    bytes(h.heap_ticked_kib as f64 * 1024.0),
                    bytes(h.heap_ticked_kib as f64 * 1024.0 / n as f64)
                ),
            );
        }
        p(&mut s, "");
    }

    // Ticker.
    if !r.ticks.is_empty() {
        p(&mut s, "### The daemon's periodic work at scale");
        p(&mut s, "");
        p(&mut s, "`Node::tick` (the rate estimator, run by xvsd every 2 s: it reads the counters outside the node lock that every `xvsadm` request also takes, then folds them under it), timed in process after the load, and xvsd's CPU over a 5 s quiet window after the load:");
        p(&mut s, "");
        p(&mut s, "| services | tick wall, s (first, then steady state) | tick CPU, s | xvsd idle CPU, share of one core |");
        p(&mut s, "|---:|---|---|---:|");
        for t in &r.ticks {
            p(
                &mut s,
                &format!(
                    "| {} | {} | {} | {} |",
                    t.services,
                    t.tick_s
                        .iter()
                        .map(|x| sec(*x))
                        .collect::<Vec<_>>()
                        .join(", "),
                    t.tick_cpu_s
                        .iter()
                        .map(|x| sec(*x))
                        .collect::<Vec<_>>()
                        .join(", "),
                    t.daemon_idle_cpu_share
                        .map(|x| format!("{:.0} %", x * 100.0))
                        .unwrap_or_else(|| "–".into())
                ),
            );
        }
        p(&mut s, "");
    }

    p(&mut s, "### Reproducing");
    p(&mut s, "");
    p(&mut s, "```sh");
    p(&mut s, "cargo build --release -p lb-user --bins");
    p(
        &mut s,
        "cargo build --release -p xvs-tests --bin xvs-bench-control",
    );
    p(
        &mut s,
        "sudo target/release/xvs-bench-control          # full: bench/control.{json,md}",
    );
    p(
        &mut s,
        "sudo target/release/xvs-bench-control --quick  # quick: bench/quick/control.{json,md}",
    );
    p(&mut s, "```");
    p(&mut s, "");
    p(&mut s, "`--baseline-max N` and `--iptables-max N` bound the sizes the baselines load (full mode: nft up to 50,000, iptables-legacy up to 10,000); `--sizes`, `--rounds`, `--changes`, `--change-sizes`, `--budget` (seconds per change series) change the rest. Raw figures, every round and every change sample: `control.json`.");
    p(&mut s, "");
    p(&mut s, "### Reading");
    p(&mut s, "");
    for l in reading(r) {
        p(&mut s, &format!("* {l}"));
    }
    s
}

fn ratio1(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "–".into();
    }
    let x = a / b;
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// Sentences drawn from the figures.
fn reading(r: &Results) -> Vec<String> {
    let mut v = Vec::new();
    let m = &r.meta;
    let busy = m.loadavg_start.max(m.loadavg_end) > m.machine.nproc as f64;
    v.push(if busy {
        format!(
            "Noise: the machine was shared with other builds and benchmarks during the run (load average {:.1} → {:.1} on {} CPUs), so wall times carry contention; CPU times are steadier, and every figure is a min / median / max over rounds measured side by side.",
            m.loadavg_start, m.loadavg_end, m.machine.nproc
        )
    } else {
        format!(
            "Noise: the machine ran little else during the run (load average {:.1} → {:.1} on {} CPUs, this benchmark included); every figure is still a min / median / max over rounds measured side by side.",
            m.loadavg_start, m.loadavg_end, m.machine.nproc
        )
    });
    let median = |e: &str, n: u32| find(r, e, n).map(|s| col(s, |r| r.wall_s).median);
    let ratio = |b: &str, n: u32| {
        r.load_ratios
            .iter()
            .find(|q| q.services == n && q.baseline == b && q.metric == "load wall")
            .map(|q| q.ratio.median)
    };
    for &n in &m.sizes {
        let Some(xl) = median("xvs", n) else { continue };
        let mut parts = Vec::new();
        for (e, name) in [("iptables-legacy", "iptables-legacy"), ("nft", "nft")] {
            if let (Some(l), Some(q)) = (median(e, n), ratio(e, n)) {
                parts.push(format!(
                    "{name} {} s (xvs / {name} {})",
                    sec(l),
                    ratio_num(q)
                ));
            }
        }
        if parts.is_empty() {
            continue;
        }
        let ipt_note =
            if median("iptables-legacy", n).is_none() && n > m.iptables_max && m.iptables_max > 0 {
                "; iptables-legacy cannot hold this table (see the last point)"
            } else {
                ""
            };
        v.push(format!(
            "Load of {n} services (medians): xvs {} s, {}{ipt_note}.",
            sec(xl),
            parts.join(", ")
        ));
    }
    for &n in &m.change_sizes {
        let (Some(x), Some(b)) = (change(r, "xvs", "e2e", n), change(r, "nft", "e2e", n)) else {
            continue;
        };
        v.push(format!(
            "One endpoint change at {n} services: `xvsadm` {} ms p50 ({} ms p99, {} changes), `nft -f` {} ms p50 ({} changes within the {:.0} s budget): the xvs change is one map update plus a scheduler table of 10 slots, whatever the size of the table, where nft's transaction re-checks the table it joins.",
            ms(x.latency.p50_ms),
            ms(x.latency.p99_ms),
            x.latency.n,
            ms(b.latency.p50_ms),
            b.latency.n,
            m.budget_s
        ));
    }
    // Growth.
    let growth = |e: &str| -> Option<String> {
        let mut pts: Vec<(u32, f64)> = m
            .sizes
            .iter()
            .filter_map(|&n| find(r, e, n).map(|s| (n, col(s, |r| r.wall_s).median)))
            .collect();
        pts.sort_by_key(|p| p.0);
        if pts.len() < 2 {
            return None;
        }
        let (a, b) = (pts[0], pts[pts.len() - 1]);
        Some(format!(
            "{e}: {:.0}x the services took {:.1}x the time",
            b.0 as f64 / a.0 as f64,
            b.1 / a.1.max(1e-9)
        ))
    };
    let g: Vec<String> = ["xvs", "xvs-inproc", "iptables-legacy", "nft"]
        .iter()
        .filter_map(|e| growth(e))
        .collect();
    if !g.is_empty() {
        v.push(format!("Growth of the load time with the table (medians): {}. Both baselines grow faster than linearly: nft because every goto added to a verdict map makes the kernel's loop check (nf_tables_check_loops) walk every set of the table, and kube-proxy's shape has one anonymous vmap per service (its CPU is system time); iptables-legacy-restore mostly in user space (libiptc), and the kernel swaps in the whole rule blob on every commit.", g.join("; ")));
    }
    if let Some(t) = r.ticks.iter().max_by_key(|t| t.services) {
        if let (Some(&wall), Some(&cpu)) = (t.tick_s.last(), t.tick_cpu_s.last()) {
            v.push(format!(
                "At {} services one estimator tick (steady state) costs {} s of CPU ({} s wall) in process{}. It is one batched read of the per-CPU counters map (BPF_MAP_LOOKUP_BATCH, 4,096 destinations per syscall; about two thirds of the tick), which xvsd runs outside the node lock, then the fold into {} estimators under it: requests wait for the fold at most (see the `noop` and `socket` rows' maxima).",
                t.services,
                sec(cpu),
                sec(wall),
                t.daemon_idle_cpu_share
                    .map(|x| format!(", and the idle daemon used {:.0} % of a core", x * 100.0))
                    .unwrap_or_default(),
                t.services as u64 * (ENDPOINTS as u64 + 1)
            ));
        }
    }
    for c in r
        .changes
        .iter()
        .filter(|c| c.engine == "xvs" && c.mode == "inproc")
    {
        if let Some(e) = change(r, "xvs", "e2e", c.services) {
            v.push(format!(
                "At {} services a destination change costs {} ms (p50) in `Node::apply` itself, {} ms through `xvsadm` (p50; p99 {} ms): the difference is the process, the socket and waiting for the lock.",
                c.services,
                ms(c.latency.p50_ms),
                ms(e.latency.p50_ms),
                ms(e.latency.p99_ms)
            ));
        }
    }
    if let Some(mem) = &r.memory {
        let n = mem.loaded_services;
        let rss = find(r, "xvs", n).map(|x| {
            (
                col(x, |r| r.rss_kib as f64).median,
                col(x, |r| r.hwm_kib as f64).median,
            )
        });
        v.push(format!(
            "Memory: {} of BPF maps per service of 10 destinations when the maps are sized to fit ({:.0} B per service, {:.0} B per destination, {:.0} B per scheduler slot), {:.0} B per connection (both directions); the maps are preallocated, so xvsd sized for 65,536 services and 589,824 destinations holds {} whatever it serves.{}",
            bytes(mem.per_entry.service_of_10),
            mem.per_entry.service,
            mem.per_entry.destination,
            mem.per_entry.sched_slot,
            mem.per_entry.connection,
            bytes(mem.per_entry.total_as_sized),
            rss.map(|(rss, hwm)| format!(
                " xvsd's resident memory with {n} services: {} ({} per service), peaking at {} during the load (the whole `-R` request is held at once: as JSON, as operations, and as the engine's staged copy of every service next to the table being built).",
                bytes(rss * 1024.0),
                bytes(rss * 1024.0 / n as f64),
                bytes(hwm * 1024.0)
            ))
            .unwrap_or_default()
        ));
    }
    v.push("Measured once outside the run, with rule sets of the same shapes, on this machine while it was more heavily loaded (not repeated: it takes tens of minutes): iptables-legacy-restore of 50,000 services ran for 21 min (321 s of user CPU) and then the kernel refused the table at COMMIT: the rule blob (18.2 KiB per service above, about 890 MiB for 50,000) exceeds x_tables' 512 MiB limit (XT_MAX_TABLE_SIZE), so this table cannot be programmed through iptables-legacy at all, which is why the run stops iptables at 10,000 services. At the same time nft loaded the 50,000 services in 26 min (25 transactions of 2,000 services; 1,259 s of system CPU), one endpoint change took 44–71 s, and one nft transaction of 10,000 services took 208 s (192 s of system CPU) where batches of 1,000 took 48 s: the reason the loads above are batched.".into());
    v
}
