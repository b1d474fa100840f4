//! Project tasks: `cargo xtask <task>`.
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
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker).
    Setup,
    /// Build everything (the BPF object is built and embedded by lb-user's build script).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, then run every test (needs root: BPF and network namespaces).
    Test,
    /// Run the in-VM tests (kernel IPVS under qemu): `cargo xtask vm-test [--record-golden]`.
    VmTest(vm::VmTestArgs),
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
            cargo(&["test", "--workspace"])
        }
        Task::VmTest(args) => vm::vm_test(args),
    }
}
