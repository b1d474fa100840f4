//! Project tasks: `cargo xtask <task>`.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "xvs build, run, test, bench and VM tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Placeholder until the tasks land.
    Noop,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Noop => Ok(()),
    }
}
