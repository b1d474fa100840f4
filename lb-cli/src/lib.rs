//! The command lines of `xvsd` and `xvsadm` as clap definitions, in a crate of their own (only
//! clap): `xvsd` parses its arguments with [`xvsd::Cli`]; `cargo xtask dist` renders both man
//! pages and the shell completions from these definitions without building the BPF side.
pub mod xvsadm;
pub mod xvsd;
