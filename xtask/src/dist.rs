//! `cargo xtask dist [--out DIR]`: man pages (section 8) and bash, zsh and fish completions for
//! xvsd and xvsadm, rendered from their clap definitions (lb-cli) by clap_mangen and
//! clap_complete. Default output: target/dist/.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Every file written, relative to `out`.
pub fn dist(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man/man8");
    std::fs::create_dir_all(&man).with_context(|| man.display().to_string())?;
    let pages = [
        (lb_cli::xvsd::Cli::command(), lb_cli::xvsd::MAN_EXTRA),
        (lb_cli::xvsadm::command(), lb_cli::xvsadm::DIFFERENCES),
    ];
    for (cmd, extra) in pages {
        let name = cmd.get_name().to_string();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .section("8")
            .manual("xvs")
            .render(&mut page)?;
        page.extend_from_slice(extra.as_bytes());
        let p = man.join(format!("{name}.8"));
        std::fs::write(&p, page).with_context(|| p.display().to_string())?;
        written.push(p);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir)?;
            let mut c = cmd.clone();
            written.push(clap_complete::generate_to(shell, &mut c, &name, &dir)?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_man_pages_and_completions() {
        let out = std::env::temp_dir().join(format!("xvs-dist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut files: Vec<String> = dist(&out)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(&out).unwrap().display().to_string())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "completions/bash/xvsadm.bash",
                "completions/bash/xvsd.bash",
                "completions/fish/xvsadm.fish",
                "completions/fish/xvsd.fish",
                "completions/zsh/_xvsadm",
                "completions/zsh/_xvsd",
                "man/man8/xvsadm.8",
                "man/man8/xvsd.8",
            ]
        );
        let xvsd = std::fs::read_to_string(out.join("man/man8/xvsd.8")).unwrap();
        assert!(xvsd.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{xvsd}");
        assert!(xvsd.contains(".TH xvsd 8"), "{xvsd}");
        assert!(xvsd.contains("metrics\\-listen"), "{xvsd}");
        assert!(xvsd.contains(".SH SIGNALS"));
        let xvsadm = std::fs::read_to_string(out.join("man/man8/xvsadm.8")).unwrap();
        assert!(xvsadm.contains(".SH DIFFERENCES FROM IPVSADM"));
        assert!(xvsadm.contains("\\-\\-engine"), "{xvsadm}");
        let bash = std::fs::read_to_string(out.join("completions/bash/xvsadm.bash")).unwrap();
        assert!(bash.contains("--tcp-service") && bash.contains("--engine"));
        let bash = std::fs::read_to_string(out.join("completions/bash/xvsd.bash")).unwrap();
        assert!(bash.contains("--metrics-listen") && bash.contains("teardown"));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
