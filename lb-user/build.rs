//! Builds the BPF programs (lb-ebpf) with the nightly toolchain and bpf-linker and leaves the
//! object in OUT_DIR for `include_bytes!`. Set XVS_SKIP_EBPF=1 to embed an empty object instead
//! (for work on userspace-only parts on a machine without the BPF toolchain).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let obj = out_dir.join("xvs.bpf.o");
    println!("cargo:rerun-if-env-changed=XVS_SKIP_EBPF");
    if env::var_os("XVS_SKIP_EBPF").is_some() {
        std::fs::write(&obj, b"").unwrap();
        return;
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let ebpf = root.join("lb-ebpf");
    for p in [
        "lb-ebpf/src",
        "lb-ebpf/Cargo.toml",
        "Cargo.lock",
        "lb-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf)
        .args(["+nightly", "build", "--release", "--locked"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's settings are for the host toolchain; none of them may leak in.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    // BTF for inspectable maps; cpu v3 for atomic fetch-add; inline memset/memcpy of the
    // FIB lookup parameters instead of byte loops (see toolchain notes).
    let flags = [
        "-C",
        "debuginfo=2",
        "-C",
        "link-arg=--btf",
        "-C",
        "target-cpu=v3",
        "-C",
        "link-arg=--disable-expand-memcpy-in-order",
    ];
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    let home_bin = env::var("HOME")
        .map(|h| Path::new(&h).join(".cargo/bin"))
        .ok();
    if let (Some(bin), Ok(path)) = (home_bin, env::var("PATH")) {
        cmd.env("PATH", format!("{}:{}", bin.display(), path));
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run cargo +nightly for lb-ebpf: {e}. Run `cargo xtask setup` (or .ci/run) first.")
    });
    if !status.success() {
        panic!(
            "building the BPF programs failed (see above). If nightly's rust-src or bpf-linker is \
             missing, run `cargo xtask setup`; or set XVS_SKIP_EBPF=1 to build userspace only."
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/lb");
    std::fs::copy(&built, &obj).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}
