//! xvs fast path: IPVS-semantics NAT load balancing in XDP.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod conn;
mod csum;
mod maps;
mod parse;
mod xdp;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The balancer: attach to every interface that carries client or real-server traffic.
#[xdp]
pub fn xvs_xdp(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
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
