//! Project tasks: `cargo xtask <task>`.
mod bench;
mod dist;
mod image;
mod setup;
mod vm;

use std::process::Command;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "xvs build, run, test, bench and VM tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The main job: the daemon on a built-in demo table, with real traffic (needs root).
    Run,
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker).
    Setup,
    /// Build everything (the BPF object is built and embedded by lb-user's build script).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, then run every test (needs root: BPF and network namespaces).
    Test,
    /// Man pages and shell completions (bash, zsh, fish) for xvsd and xvsadm, from their clap
    /// definitions: written under target/dist/ (or --out).
    Dist {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Build the container image (dist/container/Containerfile) with buildah and check it
    /// from the inside; the base is built from Debian packages unless --base names one.
    Image {
        #[arg(long)]
        base: Option<String>,
    },
    /// Run the in-VM tests (kernel IPVS under qemu): `cargo xtask vm-test [--record-golden]`.
    VmTest(vm::VmTestArgs),
    /// Set up, then run the crash soak (needs root): churn, traffic, a SYN flood and SIGKILL
    /// restarts of xvsd together for N minutes, in namespaces of its own; reports RSS, map
    /// counts, connection failures and lost changes (both must be 0, else it fails).
    Soak {
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// Services per `xvsadm -R` batch the daemon is killed in.
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        /// SYNs per second of the flood (0: none).
        #[arg(long, default_value_t = 1000)]
        syn_rate: u32,
    },
    /// Set up, then run the benchmarks (needs root): BENCHMARKS.md, bench/results.json and
    /// SVG plots; `--quick` finishes in a few minutes and writes only under bench/quick/.
    Bench {
        #[arg(long)]
        quick: bool,
        /// Run one part only and rewrite the report around it; the other sections keep their
        /// last results.
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
    },
}

fn cargo(args: &[&str]) -> Result<()> {
    let s = Command::new(env!("CARGO")).args(args).status()?;
    if !s.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Run => {
            setup::setup()?;
            cargo(&["build", "--workspace", "--bins"])?;
            cargo(&["run", "--quiet", "-p", "xvs-tests", "--bin", "xvs-demo"])
        }
        Task::Setup => setup::setup(),
        Task::Build { release } => {
            setup::setup()?;
            let mut a = vec!["build", "--workspace", "--all-targets"];
            if release {
                a.push("--release");
            }
            cargo(&a)
        }
        Task::Test => {
            setup::setup()?;
            // The daemon tests run the xvsd binary: build it first.
            cargo(&["build", "--workspace", "--bins"])?;
            cargo(&["test", "--workspace"])?;
            // Against a real kernel IPVS under qemu (this kernel has none).
            vm::vm_test(vm::VmTestArgs {
                record_golden: false,
                timeout: 300,
                keep: false,
                quiet: true,
                prepare_only: false,
                static_link: false,
                test_args: Vec::new(),
            })
        }
        Task::VmTest(args) => vm::vm_test(args),
        Task::Soak {
            minutes,
            services,
            syn_rate,
        } => {
            setup::setup()?;
            cargo(&["build", "--workspace", "--bins"])?;
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "xvs-tests",
                "--bin",
                "xvs-soak",
                "--",
                "--minutes",
                &minutes.to_string(),
                "--services",
                &services.to_string(),
                "--syn-rate",
                &syn_rate.to_string(),
            ])
        }
        Task::Image { base } => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap();
            image::image(root, base)
        }
        Task::Dist { out } => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap();
            let out = out.unwrap_or_else(|| root.join("target/dist"));
            for f in dist::dist(&out)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        Task::Bench { quick, only } => {
            setup::setup()?;
            bench::bench(quick, only)
        }
    }
}
