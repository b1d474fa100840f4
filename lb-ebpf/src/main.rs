//! xvs fast path: IPVS-semantics NAT load balancing at XDP and tc. Both entry points are
//! thin: they wrap their context and run the one balancer in `lb`.
//!
//! The crate is a workspace member so rustfmt and clippy cover it: on the host it compiles as
//! a plain binary (std, an empty main), on bpfel-unknown-none as the BPF object.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
// Map keys and values are passed by reference on purpose: each lives once on the BPF stack
// (aya-ebpf's maps take `impl Borrow<K>`, which a by-value argument would copy).
#![allow(clippy::needless_borrows_for_generic_args)]

mod csum;
mod ct;
mod ctx;
mod fwd;
mod lb;
mod maps;
mod nat;
mod parse;
mod sched;
mod sock;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{cgroup_sock_addr, classifier, sock_ops, xdp},
    programs::{SockAddrContext, SockOpsContext, TcContext, XdpContext},
};

/// Headers the balancer reads: Ethernet with a VLAN tag, IPv4 with options, and TCP with its
/// flags or an ICMP error with the IPv4 header (options included) and ports it embeds.
const HEADERS_MAX: u32 = 18 + 60 + 8 + 60 + 20;

/// The balancer at XDP: NICs with native XDP.
#[xdp]
pub fn xvs_xdp(ctx: XdpContext) -> u32 {
    lb::run(&mut ctx::Xdp(&ctx), &ctx)
}

/// The balancer at tc (tcx ingress): veth and other virtual devices, where it works on GSO
/// skbs without a copy and keeps the kernel's checksum offload state correct.
#[classifier]
pub fn xvs_tc(ctx: TcContext) -> i32 {
    // GSO packets of local senders may carry only part of their headers in the linear area.
    let linear = (ctx.data_end() - ctx.data()) as u32;
    let len = ctx.len();
    if linear < HEADERS_MAX && len > linear {
        let _ = ctx.pull_data(if len < HEADERS_MAX { len } else { HEADERS_MAX });
    }
    lb::run(&mut ctx::Tc(&ctx), &ctx) as i32
}

/// The node's own clients: connect() to a VIP goes to the scheduled destination.
#[cgroup_sock_addr(connect4)]
pub fn xvs_connect4(ctx: SockAddrContext) -> i32 {
    sock::to_vip(&ctx);
    1
}

/// Unconnected UDP: each sendmsg() to a VIP goes to its flow's destination.
#[cgroup_sock_addr(sendmsg4)]
pub fn xvs_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::to_vip(&ctx);
    1
}

/// Unconnected UDP: a datagram from a real server is reported as from the VIP.
#[cgroup_sock_addr(recvmsg4)]
pub fn xvs_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::from_dest(&ctx);
    1
}

/// getpeername() of a balanced socket names the VIP it connected to.
#[cgroup_sock_addr(getpeername4)]
pub fn xvs_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::from_dest(&ctx);
    1
}

/// TCP state of the node's balanced connections.
#[sock_ops]
pub fn xvs_sockops(ctx: SockOpsContext) -> u32 {
    sock::sockops(&ctx);
    1
}

/// A pass-through program for the peers of veth devices: an XDP redirect into a veth only
/// delivers when its peer has an XDP program.
#[xdp]
pub fn xvs_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A pass-through tc classifier: the floor the benchmark measures `xvs_tc` against
/// (BPF_PROG_TEST_RUN of a program that does nothing at the same hook).
#[classifier]
pub fn xvs_tc_pass(_ctx: TcContext) -> i32 {
    aya_ebpf::bindings::TC_ACT_OK
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// On the host (rustfmt, clippy) the crate is a plain binary that does nothing.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
