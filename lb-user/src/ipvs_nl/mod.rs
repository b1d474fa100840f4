//! Kernel IPVS over generic netlink (the "IPVS" family, what `ipvsadm` uses).
//!
//! [`IpvsClient`] reads and writes the kernel's virtual service table in terms of the table
//! model ([`crate::model`]): services, their configuration and destinations, plus what the
//! model does not carry ([`ServiceOptions`], [`DestOptions`]) and what only the kernel knows
//! (counters, connection counts: [`KernelService`], [`DestState`]). Kernel errors come back
//! as [`IpvsError`] variants named after what the errno means for that request.
//!
//! ```no_run
//! use lb_user::ipvs_nl::IpvsClient;
//! use lb_user::model::{Destination, ServiceConfig, ServiceKey};
//! # fn main() -> Result<(), lb_user::ipvs_nl::IpvsError> {
//! let ipvs = IpvsClient::new()?; // IpvsError::NoIpvs on a kernel without IPVS
//! let key = ServiceKey::tcp([10, 0, 0, 1], 80);
//! ipvs.add_service(&key, &ServiceConfig::with_scheduler("rr"))?;
//! ipvs.add_dest(&key, &Destination::masq([10, 244, 1, 5], 8080, 1))?;
//! for s in ipvs.services()? {
//!     println!("{} {} dests", s.service.key, s.service.dests.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Encoding notes (include/uapi/linux/ip_vs.h, net/netfilter/ipvs/ip_vs_ctl.c): addresses are
//! 16-byte `nf_inet_addr`, ports big-endian, FLAGS is `{u32 flags; u32 mask}` (sent with mask
//! ~0 as ipvsadm does), NETMASK is a big-endian mask for IPv4 and a prefix length for IPv6
//! (the model's default mask 0xffff_ffff is sent as /128 for IPv6).

mod attrs;
mod client;
pub mod consts;
mod error;
mod messages;
mod types;

pub use client::IpvsClient;
pub use error::{IpvsError, Op};
pub use types::{
    to_table, DestOptions, DestState, IpvsInfo, KernelService, ServiceOptions, Stats, Timeouts,
    Tunnel, TunnelKind,
};
