//! `cargo xtask bench [--quick] [--only packets|control|vm]`: the benchmarks behind
//! BENCHMARKS.md.
//!
//! Installs what the comparison needs beyond `setup` (Debian's iptables and nftables: the
//! kernel has both built in, the user-space tools are packages), then runs the benchmark
//! binary in release mode from the workspace root:
//! `cargo run --release -p xvs-tests --bin xvs-bench -- [--quick] --out bench`.
//! The full run writes BENCHMARKS.md, bench/results.json and bench/*.svg; --quick writes only
//! under bench/quick/. xtask itself does not depend on lb-user (it must build before
//! bpf-linker is installed).
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the comparison runs need.
const BENCH_PACKAGES: &[&str] = &["iptables", "nftables"];

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<()> {
    let s = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed ({s})");
    }
    Ok(())
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = BENCH_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!(
            "bench: Debian packages present ({})",
            BENCH_PACKAGES.join(", ")
        );
        return Ok(());
    }
    println!("bench: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The parts of the benchmark, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Sections 1 and 2: the BPF programs (BPF_PROG_TEST_RUN) and end-to-end traffic (xvs-bench).
    Packets,
    /// Section 3: the control plane and memory (xvs-bench-control).
    Control,
    /// Section 4: kernel IPVS against the fast path in the qemu VM.
    Vm,
    /// No measurement: rewrite the report (every section) from the saved results.
    Report,
}

pub fn bench(quick: bool, only: Option<Part>) -> Result<()> {
    packages()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let runs = |p: Part| only.is_none_or(|o| o == p);
    if only == Some(Part::Report) {
        return rewrite_report(root, quick);
    }
    // Kernel IPVS against the fast path in the VM first: it writes bench/vm.md, which the
    // report below takes in as a section.
    if runs(Part::Vm) {
        crate::vm::vm_bench(quick)?;
    }
    // The control plane and memory: writes control.md beside vm.md (under bench/quick/ with
    // --quick: the binary adds quick/ itself, as xvs-bench does).
    if runs(Part::Control) {
        // xvs-bench-control runs the release xvsd and xvsadm found next to it: build them, as
        // `cargo run` builds only the benchmark itself (a fresh clone has neither).
        let daemon = ["build", "--release", "-p", "lb-user", "--bins"];
        println!("bench: cargo {}", daemon.join(" "));
        run(Command::new(env!("CARGO")).args(daemon).current_dir(root))?;
        let mut ctl = vec![
            "run",
            "--release",
            "-p",
            "xvs-tests",
            "--bin",
            "xvs-bench-control",
            "--",
        ];
        if quick {
            ctl.push("--quick");
        }
        ctl.extend(["--out", "bench"]);
        println!("bench: cargo {}", ctl.join(" "));
        run(Command::new(env!("CARGO")).args(&ctl).current_dir(root))?;
    }
    if runs(Part::Packets) {
        let mut args = vec![
            "run",
            "--release",
            "-p",
            "xvs-tests",
            "--bin",
            "xvs-bench",
            "--",
        ];
        if quick {
            args.push("--quick");
        }
        args.extend(["--out", "bench"]);
        println!("bench: cargo {}", args.join(" "));
        run(Command::new(env!("CARGO")).args(&args).current_dir(root))?;
    }
    append_sections(root, quick)
}

/// Regenerates every section from the results the parts saved (after a change to the report
/// code, or to a part's hand-kept reading), without measuring anything.
fn rewrite_report(root: &Path, quick: bool) -> Result<()> {
    for bin in ["xvs-bench-control", "xvs-bench"] {
        let mut args = vec!["run", "--release", "-p", "xvs-tests", "--bin", bin, "--"];
        if quick {
            args.push("--quick");
        }
        // Both read bench/ (bench/quick/ with --quick) from --out bench.
        args.extend(["--report-only", "--out", "bench"]);
        println!("bench: cargo {}", args.join(" "));
        run(Command::new(env!("CARGO")).args(&args).current_dir(root))?;
    }
    append_sections(root, quick)
}

/// The report from xvs-bench covers the BPF programs and end-to-end traffic; the control plane
/// and the VM comparison write their own sections, added here after it so that every run
/// regenerates one consistent BENCHMARKS.md.
fn append_sections(root: &Path, quick: bool) -> Result<()> {
    let dir = if quick {
        root.join("bench/quick")
    } else {
        root.join("bench")
    };
    let report = if quick {
        dir.join("BENCHMARKS.md")
    } else {
        root.join("BENCHMARKS.md")
    };
    let Ok(mut text) = std::fs::read_to_string(&report) else {
        // `--only control|vm` before any run of the packet part: no report to add to yet.
        println!(
            "bench: no {} yet (run the packet part to write it); sections left in {}",
            report.display(),
            dir.display()
        );
        return Ok(());
    };
    // Sections appended by an earlier run are replaced, not repeated.
    if let Some(i) = ["\n## 3. ", "\n## 4. ", "\n## 5. "]
        .iter()
        .filter_map(|h| text.find(h))
        .min()
    {
        text.truncate(i);
    }
    // One blank line before the first appended section, however many the report ended with.
    text.truncate(text.trim_end().len());
    text.push('\n');
    for (file, title) in [
        ("control.md", "3. Control plane and memory"),
        ("vm.md", "4. Kernel IPVS in the qemu VM"),
        // Written by xvs-bench-metrics (run by hand: see that section).
        ("metrics.md", "5. One metrics scrape at scale"),
    ] {
        let Ok(section) = std::fs::read_to_string(dir.join(file)) else {
            println!(
                "bench: no {} (section {title} left out)",
                dir.join(file).display()
            );
            continue;
        };
        // The sections' own first heading becomes a numbered one of the report.
        let body = match section.strip_prefix("## ") {
            Some(rest) => rest.split_once('\n').map(|(_, b)| b).unwrap_or(""),
            None => section.as_str(),
        };
        text.push_str(&format!("\n## {title}\n{body}"));
    }
    std::fs::write(&report, text).with_context(|| format!("writing {}", report.display()))
}
