//! ipvsadm, as a library: its command line and its exact output, for `xvsadm`.
//!
//! Users who know `ipvsadm` use `xvsadm` the same way and read the same text:
//!
//! - [`parse_args`] takes an ipvsadm command line (without the program name) to a
//!   [`Command`]: table operations in the model's terms ([`crate::model::Op`]), a listing with
//!   its [`ListOptions`], save, restore, zero, `--set`, help, version. Syntax, defaults and
//!   error messages are ipvsadm 1.31's (see [`parse`]). What xvs cannot do is refused with
//!   [`ParseError::Unsupported`] naming the option, never ignored: `--pe`, `--tun-type
//!   gue|gre` and the other tunnel options (the table model holds neither), and everything
//!   about the connection sync daemon (`--start-daemon`, `--stop-daemon`, `--daemon`,
//!   `--syncid` and the `--mcast-*`/`--sync-maxlen` options that only go with them).
//! - [`parse_restore`] reads ipvsadm-restore's input (the `-S` format) into numbered
//!   operations, all or nothing.
//! - [`format_list`] and [`format_save`] print a [`crate::snapshot::Snapshot`] as ipvsadm
//!   prints the kernel's table (see [`format`]); the banner line is a parameter
//!   ([`xvs_banner`] / [`ipvs_banner`]).
//! - [`usage_text`], [`version_text`]: `-h`, `-v`.
//!
//! Names: without `-n` ipvsadm prints host names (reverse DNS, falling back to the address)
//! and service names from `/etc/services` (falling back to the number); [`SystemResolver`]
//! asks the C library the same questions, so the text is the same on the same machine.
//! `*_with` variants take another [`Resolver`] ([`NumericResolver`], [`StaticResolver`]).
//!
//! xvs extension, off by default: `-L --engine` ends each service line with ` [fastpath]` or
//! ` [kernel]`, the engine serving it.
mod cnum;
pub mod format;
pub mod names;
pub mod parse;
mod popt;
mod usage;

#[cfg(test)]
mod tests;

pub use format::{
    format_list, format_list_with, format_save, format_save_with, ipvs_banner, xvs_banner,
    FormatError, IPVS_VERSION,
};
pub use names::{NumericResolver, Resolver, StaticResolver, SystemResolver};
pub use parse::{
    parse_args, parse_args_full, parse_args_with, parse_restore, parse_restore_full,
    parse_restore_with, restore_text, Command, Extras, ListOptions, ParseError, Parsed,
    DEFAULT_PERSISTENT_TIMEOUT, DEFAULT_SCHEDULER, PROGRAM,
};
pub use usage::{usage_text, version_text};
