//! `cargo xtask image [--base IMAGE]`: the container image (dist/container/Containerfile) built
//! with Debian's buildah, then checked from the inside: the binaries run, the man pages and
//! completions are there, the DaemonSet's init container finds `mount` and `mountpoint`.
//!
//! Without `--base`, the base is Debian 12 built from Debian's packages (debootstrap
//! --variant=minbase, cached as localhost/xvs-base:bookworm): no container registry is needed,
//! only the Debian archive. buildah runs with the vfs storage driver and chroot isolation, which
//! work inside containers and need no runtime (the Containerfile has no RUN step).
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const BASE_TAG: &str = "localhost/xvs-base:bookworm";

fn buildah() -> Command {
    let mut c = Command::new("buildah");
    c.env("STORAGE_DRIVER", "vfs")
        .env("BUILDAH_ISOLATION", "chroot");
    c
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn run(cmd: &mut Command) -> Result<()> {
    let s = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed ({s})");
    }
    Ok(())
}

/// Debian 12 minbase from the Debian archive, committed as BASE_TAG (once).
fn debian_base() -> Result<String> {
    if buildah()
        .args(["inspect", "--type", "image", BASE_TAG])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("image: base {BASE_TAG} present");
        return Ok(BASE_TAG.into());
    }
    println!(
        "image: building the base {BASE_TAG} from Debian packages (debootstrap, a minute or two)"
    );
    let ctr = output(buildah().args(["from", "scratch"]))?;
    let result = (|| -> Result<()> {
        let mnt = output(buildah().args(["mount", &ctr]))?;
        run(Command::new("debootstrap").args(["--variant=minbase", "bookworm", &mnt]))?;
        // What a slim image leaves out: the downloaded packages and the package lists.
        for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            let d = Path::new(&mnt).join(dir);
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        run(buildah().args(["umount", &ctr]))?;
        run(buildah().args(["commit", "--quiet", &ctr, BASE_TAG]))?;
        Ok(())
    })();
    let _ = buildah().args(["rm", &ctr]).output();
    result?;
    Ok(BASE_TAG.into())
}

/// Looks inside the built image: what the DaemonSet runs must be there and run.
fn verify(tag: &str) -> Result<()> {
    let ctr = output(buildah().args(["from", tag]))?;
    let result = (|| -> Result<()> {
        let mnt = output(buildah().args(["mount", &ctr]))?;
        let in_image = |args: &[&str]| output(Command::new("chroot").arg(&mnt).args(args));
        let v = in_image(&["/usr/local/sbin/xvsd", "--version"])?;
        let version = env!("CARGO_PKG_VERSION");
        if v != format!("xvsd {version}") {
            bail!("xvsd --version in the image: {v:?}");
        }
        let v = in_image(&["/usr/local/sbin/xvsadm", "-v"])?;
        if !v.starts_with(&format!("xvsadm v{version} ")) {
            bail!("xvsadm -v in the image: {v:?}");
        }
        in_image(&["/bin/sh", "-c", "command -v mountpoint && command -v mount"])?;
        for f in [
            "usr/local/share/man/man8/xvsd.8",
            "usr/local/share/man/man8/xvsadm.8",
            "usr/share/bash-completion/completions/xvsadm.bash",
            "etc/xvs/rules.example",
        ] {
            if !Path::new(&mnt).join(f).is_file() {
                bail!("/{f} missing from the image");
            }
        }
        let ep =
            output(buildah().args(["inspect", "--format", "{{.OCIv1.Config.Entrypoint}}", tag]))?;
        if ep != "[/usr/local/sbin/xvsd]" {
            bail!("entrypoint {ep}");
        }
        run(buildah().args(["umount", &ctr]))
    })();
    let _ = buildah().args(["rm", &ctr]).output();
    result
}

pub fn image(root: &Path, base: Option<String>) -> Result<()> {
    crate::setup::apt(&["buildah", "debootstrap"])?;
    let base = match base {
        Some(b) => b,
        None => debian_base()?,
    };
    crate::cargo(&["build", "--release", "-p", "lb-user", "--bins"])?;
    crate::dist::dist(&root.join("target/dist"))?;
    let tag = format!("localhost/xvs:{}", env!("CARGO_PKG_VERSION"));
    run(buildah()
        .arg("build")
        .arg("--quiet")
        .args(["--build-arg", &format!("BASE={base}")])
        .args(["-f", "dist/container/Containerfile", "-t", &tag, "."])
        .current_dir(root))?;
    verify(&tag)?;
    let size = output(buildah().args(["images", "--format", "{{.Size}}", &tag]))?;
    println!("image: {tag} built and verified ({size}); export it with `buildah push {tag} oci-archive:xvs.tar`");
    Ok(())
}
