//! xvs fast path: IPVS-semantics NAT load balancing at XDP and tc. Both entry points are
//! thin: they wrap their context and run the one balancer in `lb`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod csum;
mod ct;
mod ctx;
mod fwd;
mod lb;
mod maps;
mod nat;
mod parse;
mod sched;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Headers the balancer reads: Ethernet, IPv4 with options, TCP with its flags.
const HEADERS_MAX: u32 = 14 + 60 + 20;

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

/// A pass-through program for the peers of veth devices: an XDP redirect into a veth only
/// delivers when its peer has an XDP program.
#[xdp]
pub fn xvs_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
