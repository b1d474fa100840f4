//! `cargo xtask setup`: installs what a fresh machine lacks to build and test xvs, idempotently,
//! saying what it installs: Debian packages (LLVM 22 for bpf-linker, iproute2, ethtool), the
//! nightly toolchain's rust-src, and bpf-linker built against LLVM 22.
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages: LLVM 22 (bpf-linker links it), iproute2 and ethtool (network tests),
/// bpftool (inspecting maps), prometheus (the metrics test scrapes xvsd with it; promtool
/// checks the example alert rules). Services are not started by the install (no init in
/// these containers); the test runs its own Prometheus inside a test namespace.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "iproute2",
    "ethtool",
    "bpftool",
    "prometheus",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<()> {
    let s = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed ({s})");
    }
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the Debian packages of `pkgs` that are missing.
pub fn apt(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present ({})", pkgs.join(", "));
    } else {
        println!("setup: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        // On a host running systemd the package starts a Prometheus on *:9090: the tests need
        // only the binaries, so that service is stopped and disabled again.
        if missing.contains(&"prometheus") && std::path::Path::new("/run/systemd/system").exists() {
            println!(
                "setup: disabling the prometheus service the package started (tests run their own)"
            );
            let _ = Command::new("systemctl")
                .args(["disable", "--now", "prometheus"])
                .status();
        }
    }
    Ok(())
}

pub fn setup() -> Result<()> {
    apt(APT_PACKAGES)?;
    kubernetes_validate()?;

    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        bail!(
            "the nightly toolchain is missing: `rustup toolchain install nightly` (this project \
             is tested with nightly 2026-05-19, LLVM 22; a nightly on LLVM 23 needs a matching bpf-linker)"
        );
    }
    let has_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false);
    if has_src {
        println!("setup: nightly rust-src present");
    } else {
        println!("setup: installing nightly rust-src (build-std=core for the BPF target)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if linker_ok {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
    } else {
        println!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            // The build script must find LLVM 22, not a system /usr one.
            .env("PATH", path)
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    Ok(())
}

/// kubernetes-validate (PyPI; it ships the Kubernetes API's JSON schemas, so the manifests are
/// validated offline) in a virtual environment of its own: target/k8s-validate.
pub const K8S_VALIDATE_VERSION: &str = "1.37.0";

pub fn kubernetes_validate() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let venv = root.join("target/k8s-validate");
    let exe = venv.join("bin/kubernetes-validate");
    let have = Command::new(&exe)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(K8S_VALIDATE_VERSION))
        .unwrap_or(false);
    if have {
        println!("setup: kubernetes-validate {K8S_VALIDATE_VERSION} present");
        return Ok(());
    }
    println!(
        "setup: installing kubernetes-validate {K8S_VALIDATE_VERSION} (PyPI) into {}",
        venv.display()
    );
    if run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).is_err() {
        // Debian's own python3 makes virtual environments only with python3-venv.
        apt(&["python3-venv"])?;
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("kubernetes-validate=={K8S_VALIDATE_VERSION}")))
}
