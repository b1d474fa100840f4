//! `cargo xtask bench [--quick]`: the benchmarks of BENCHMARKS.md (see tests/src/bench).
//!
//! ```text
//! xvs-bench [--quick] [--out DIR] [--report FILE] [--only micro|e2e]
//! ```
//! Writes DIR/results.json, DIR/*.svg and the report (default: BENCHMARKS.md next to DIR for
//! the full run; DIR/quick/ and DIR/quick/BENCHMARKS.md for --quick, so a quick run never
//! overwrites the committed full results). Needs root.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xvs_tests::bench::e2e::{self, E2eOpts, Method, Pattern, METHODS, PATTERNS};
use xvs_tests::bench::micro::{self, MicroOpts};
use xvs_tests::bench::report::{self, Meta, Results};
use xvs_tests::bench::sys;

struct Args {
    quick: bool,
    out: PathBuf,
    report: Option<PathBuf>,
    only: Option<String>,
    services: Option<Vec<u32>>,
    patterns: Option<Vec<Pattern>>,
    methods: Option<Vec<Method>>,
    seconds: Option<f64>,
    rounds: Option<usize>,
    report_only: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: xvs-bench [--quick] [--out DIR] [--report FILE] [--only micro|e2e]\n\
         \x20                [--services N,N..] [--patterns P,P..] [--methods M,M..]\n\
         \x20                [--seconds S (e2e window)] [--rounds R]\n\
         \x20                [--report-only (rewrite plots and report from DIR/results.json)]\n\
         patterns: {}\nmethods: {}",
        PATTERNS.map(|p| p.id()).join(" "),
        METHODS.map(|m| m.id()).join(" ")
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("bench"),
        report: None,
        only: None,
        services: None,
        patterns: None,
        methods: None,
        seconds: None,
        rounds: None,
        report_only: false,
    };
    fn list<T>(v: Option<String>, f: impl Fn(&str) -> Option<T>) -> Vec<T> {
        let v = v.unwrap_or_else(|| usage());
        v.split(',')
            .map(|x| f(x).unwrap_or_else(|| usage()))
            .collect()
    }
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--report-only" => a.report_only = true,
            "--out" => a.out = it.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--report" => a.report = Some(it.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--only" => a.only = Some(it.next().unwrap_or_else(|| usage())),
            "--services" => a.services = Some(list(it.next(), |x| x.parse().ok())),
            "--patterns" => a.patterns = Some(list(it.next(), Pattern::from_id)),
            "--methods" => a.methods = Some(list(it.next(), Method::from_id)),
            "--seconds" => {
                a.seconds = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--rounds" => {
                a.rounds = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    a
}

fn tool_version(cmd: &str, args: &[&str]) -> String {
    sys::cmd(cmd, args)
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|_| format!("{cmd}: not found"))
}

/// Ctrl-C or a kill would skip the Drops that delete the namespaces: block those signals in
/// every thread and let one thread wait for them, delete this process's namespaces (named
/// `xvs<tag>-<pid>-<n>` by `Netns::new`) and exit. Programs and maps die with the process.
fn cleanup_on_signals() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            libc::sigwait(&set, &mut sig);
            let mark = format!("-{}-", std::process::id() % 100000);
            let mut n = 0;
            if let Ok(dir) = std::fs::read_dir("/run/netns") {
                for e in dir.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("xvsb") && name.contains(&mark) {
                        let _ = std::process::Command::new("ip")
                            .args(["netns", "del", &name])
                            .status();
                        n += 1;
                    }
                }
            }
            eprintln!("xvs-bench: interrupted (signal {sig}); deleted {n} network namespaces");
            std::process::exit(130);
        });
    }
}

fn main() {
    let a = args();
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xvs-bench needs root (BPF programs, XDP, network namespaces)");
        std::process::exit(1);
    }
    cleanup_on_signals();
    let (dir, report_path) = if a.quick {
        let d = a.out.join("quick");
        let r = a.report.clone().unwrap_or_else(|| d.join("BENCHMARKS.md"));
        (d, r)
    } else {
        let parent = a
            .out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let r = a
            .report
            .clone()
            .unwrap_or_else(|| parent.join("BENCHMARKS.md"));
        (a.out.clone(), r)
    };
    if a.report_only {
        let r: Results = std::fs::read_to_string(dir.join("results.json"))
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                eprintln!(
                    "xvs-bench: reading {}: {e}",
                    dir.join("results.json").display()
                );
                std::process::exit(1)
            });
        write_outputs(&r, &dir, &report_path, true);
        return;
    }
    let micro_opts = if a.quick {
        MicroOpts {
            services: vec![1, 1_000],
            conns: vec![1_000],
            rounds: 3,
            calls: 100_000,
            new_calls: 20_000,
            repeat: 1_000_000,
        }
    } else {
        MicroOpts {
            services: vec![1, 1_000, 10_000, 50_000],
            conns: vec![1_000, 1_000_000],
            rounds: 5,
            calls: 300_000,
            new_calls: 40_000,
            repeat: 5_000_000,
        }
    };
    let e2e_opts = if a.quick {
        E2eOpts {
            services: vec![1, 1_000],
            rounds: 3,
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(600),
            patterns: PATTERNS.to_vec(),
            methods: METHODS.to_vec(),
        }
    } else {
        E2eOpts {
            services: vec![1, 1_000, 10_000],
            rounds: 5,
            warmup: Duration::from_millis(400),
            duration: Duration::from_millis(1500),
            patterns: PATTERNS.to_vec(),
            methods: METHODS.to_vec(),
        }
    };
    let mut micro_opts = micro_opts;
    let mut e2e_opts = e2e_opts;
    if let Some(s) = &a.services {
        micro_opts.services = s.clone();
        e2e_opts.services = s.clone();
    }
    if let Some(p) = &a.patterns {
        e2e_opts.patterns = p.clone();
    }
    if let Some(m) = &a.methods {
        e2e_opts.methods = m.clone();
    }
    if let Some(x) = a.seconds {
        e2e_opts.duration = Duration::from_secs_f64(x);
    }
    if let Some(r) = a.rounds {
        e2e_opts.rounds = r;
        micro_opts.rounds = r;
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t0 = Instant::now();
    let load0 = sys::loadavg();
    let mode = if a.quick { "quick" } else { "full" };
    eprintln!(
        "xvs-bench: {mode} run; results to {}, report {}",
        dir.display(),
        report_path.display()
    );
    let mut micro_figs = Vec::new();
    let mut e2e_figs = Vec::new();
    let run_micro = a.only.as_deref() != Some("e2e");
    let run_e2e = a.only.as_deref() != Some("micro");
    let res = (|| -> Result<(), String> {
        if run_micro {
            eprintln!("1. per-packet cost through BPF_PROG_TEST_RUN: {micro_opts:?}");
            micro::run(&micro_opts, &mut micro_figs)?;
        }
        if run_e2e {
            eprintln!("2. end to end on veth: {e2e_opts:?}");
            e2e::run(&e2e_opts, &mut e2e_figs)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        eprintln!("xvs-bench: FAILED: {e}");
        std::process::exit(1);
    }
    let r = Results {
        meta: Meta {
            mode: mode.into(),
            started_utc: report::utc(started),
            seconds: t0.elapsed().as_secs_f64(),
            machine: sys::machine(),
            commit: sys::git_commit(),
            loadavg_start: load0,
            loadavg_end: sys::loadavg(),
            micro: if run_micro {
                format!(
                    "Services {:?}, connections in the table {:?}, {} rounds; per case and round: {} calls (new connections: {}) for method `calls`, one call of {} repetitions for method `repeat`.",
                    micro_opts.services,
                    micro_opts.conns,
                    micro_opts.rounds,
                    report::thousands(micro_opts.calls as u32),
                    report::thousands(micro_opts.new_calls as u32),
                    report::thousands(micro_opts.repeat)
                )
            } else {
                "not run".into()
            },
            e2e: if run_e2e {
                format!(
                    "Services {:?}, {} rounds; per pattern, method and round: {:.1} s of warm-up, then {:.1} s measured.",
                    e2e_opts.services,
                    e2e_opts.rounds,
                    e2e_opts.warmup.as_secs_f64(),
                    e2e_opts.duration.as_secs_f64()
                )
            } else {
                "not run".into()
            },
            tools: vec![
                tool_version("iptables-legacy", &["--version"]),
                tool_version("nft", &["--version"]),
            ],
            command: std::env::args().collect::<Vec<_>>().join(" "),
        },
        micro: micro_figs,
        e2e: e2e_figs,
    };
    write_outputs(&r, &dir, &report_path, false);
    eprintln!(
        "xvs-bench: done in {:.1} min: {}, {}",
        r.meta.seconds / 60.0,
        dir.join("results.json").display(),
        report_path.display()
    );
}

fn write_outputs(r: &Results, dir: &Path, report_path: &Path, keep_tail: bool) {
    let write = || -> Result<(), String> {
        report::write_json(r, dir)?;
        let plots = report::write_plots(r, dir)?;
        let rel = relative(dir, report_path.parent().unwrap_or(Path::new(".")));
        report::write_markdown(r, report_path, &rel, &plots, keep_tail)
    };
    if let Err(e) = write() {
        eprintln!("xvs-bench: writing results failed: {e}");
        std::process::exit(1);
    }
}

/// `dir` relative to `base` for links in the report (both relative to the working directory
/// in practice: bench and ., or bench/quick and bench/quick).
fn relative(dir: &Path, base: &Path) -> String {
    let d = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let b = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    match d.strip_prefix(&b) {
        Ok(p) if p.as_os_str().is_empty() => ".".into(),
        Ok(p) => p.display().to_string(),
        Err(_) => d.display().to_string(),
    }
}
