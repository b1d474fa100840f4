//! One packet-context interface for both hooks, so parsing, connection tracking, NAT and
//! forwarding are written once (as Cilium's `__ctx_buff`). XDP sees a linear frame and
//! updates checksums by hand (RFC 1624); tc sees an skb and goes through the kernel's
//! checksum helpers, which keep `CHECKSUM_PARTIAL` packets (local senders, GSO) correct.
use core::mem::size_of;

use crate::csum;
use crate::maps::{TC_BEHIND, TX_PORTS};
use crate::parse::Pkt;
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::{TcContext, XdpContext},
};

/// Where a forwarded packet goes, as the hook-independent code sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Up the kernel stack (untouched, or rewritten and left to the kernel to route).
    Pass,
    /// Dropped (a counted refusal).
    Drop,
}

/// bpf_fib_lookup's result codes.
pub const FIB_SUCCESS: i64 = 0;
pub const FIB_NO_NEIGH: i64 = 7;

/// What the shared code needs from a hook.
pub trait PacketCtx {
    /// Start and end of the directly readable bytes (XDP: the frame; tc: the linear part).
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole packet (tc: skb->len, which includes paged data of GSO packets).
    fn len(&self) -> usize;
    fn ifindex(&self) -> u32;
    /// Replaces a 16- or 32-bit field covered by the L4 checksum at `csum_off`. `pseudo`:
    /// the field is in the pseudo-header (an address). `udp`: a zero checksum means none.
    fn l4_csum_replace(
        &mut self,
        csum_off: usize,
        from: u32,
        to: u32,
        size: u8,
        pseudo: bool,
        udp: bool,
    ) -> Option<()>;
    /// Replaces a 32-bit field covered by the IPv4 header checksum at `csum_off`.
    fn l3_csum_replace(&mut self, csum_off: usize, from: u32, to: u32) -> Option<()>;
    fn store_u32(&mut self, off: usize, v: u32) -> Option<()>;
    fn store_u16(&mut self, off: usize, v: u16) -> Option<()>;
    /// `bpf_fib_lookup` from this context.
    fn fib_lookup(&self, params: &mut FibParams) -> i64;
    /// Whether a redirect out of `ifindex` delivers from this hook (XDP: only devices
    /// userspace listed in TX_PORTS; see README on veth).
    fn can_redirect(&self, ifindex: u32) -> bool;
    /// Transmits out of `ifindex` after a successful FIB lookup (MACs already set).
    fn redirect(&self, ifindex: u32) -> u32;
    /// Whether the hook can let the kernel resolve the next hop's MAC (tc only).
    fn can_redirect_neigh(&self) -> bool;
    /// Transmits out of `ifindex`, the kernel resolving the neighbour.
    fn redirect_neigh(&self, ifindex: u32) -> u32;
    /// The hook's return code for a verdict.
    fn verdict(&self, v: Verdict) -> u32;
    /// Whether this packet is better left to the tc program behind this one (XDP only: its
    /// checksum may be a CHECKSUM_PARTIAL seed, which XDP cannot tell from a full checksum).
    fn defer_to_tc(&self, _p: &Pkt) -> bool {
        false
    }
}

#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, off: usize) -> Option<*mut T> {
    if data + off + size_of::<T>() > data_end {
        return None;
    }
    Some((data + off) as *mut T)
}

/// Bounds-checked pointer into a context's readable bytes.
#[inline(always)]
pub fn at<C: PacketCtx, T>(ctx: &C, off: usize) -> Option<*mut T> {
    ptr_at(ctx.data(), ctx.data_end(), off)
}

pub struct Xdp<'a>(pub &'a XdpContext);

// The packet bounds are read from the context afresh (volatile) each time: LLVM otherwise
// keeps them in stack slots as plain integers, and the verifier no longer sees a packet
// pointer behind them.
impl PacketCtx for Xdp<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.0.ctx).data) as usize }
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.0.ctx).data_end) as usize }
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.0.ctx).ingress_ifindex }
    }
    #[inline(always)]
    fn l4_csum_replace(
        &mut self,
        csum_off: usize,
        from: u32,
        to: u32,
        size: u8,
        _pseudo: bool,
        udp: bool,
    ) -> Option<()> {
        // XDP cannot see ip_summed: the field is taken as a full checksum, as NICs deliver.
        let c: *mut u16 = at(self, csum_off)?;
        let old = unsafe { *c };
        if udp && old == 0 {
            // UDP checksum 0 means "none" and stays so.
            return Some(());
        }
        let diff = if size == 4 {
            csum::diff32(from, to)
        } else {
            csum::diff16(from as u16, to as u16)
        };
        let new = csum::apply(old, diff);
        unsafe { *c = if udp && new == 0 { 0xffff } else { new } };
        Some(())
    }
    #[inline(always)]
    fn l3_csum_replace(&mut self, csum_off: usize, from: u32, to: u32) -> Option<()> {
        let c: *mut u16 = at(self, csum_off)?;
        unsafe { *c = csum::apply(*c, csum::diff32(from, to)) };
        Some(())
    }
    #[inline(always)]
    fn store_u32(&mut self, off: usize, v: u32) -> Option<()> {
        let p: *mut u32 = at(self, off)?;
        unsafe { p.write_unaligned(v) };
        Some(())
    }
    #[inline(always)]
    fn store_u16(&mut self, off: usize, v: u16) -> Option<()> {
        let p: *mut u16 = at(self, off)?;
        unsafe { p.write_unaligned(v) };
        Some(())
    }
    #[inline(always)]
    fn fib_lookup(&self, params: &mut FibParams) -> i64 {
        unsafe {
            bpf_fib_lookup(
                self.0.ctx as *mut _,
                params,
                size_of::<FibParams>() as i32,
                0,
            )
        }
    }
    #[inline(always)]
    fn can_redirect(&self, ifindex: u32) -> bool {
        TX_PORTS.get(ifindex).is_some()
    }
    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        match TX_PORTS.redirect(ifindex, 0) {
            Ok(a) | Err(a) => a,
        }
    }
    #[inline(always)]
    fn can_redirect_neigh(&self) -> bool {
        false
    }
    #[inline(always)]
    fn redirect_neigh(&self, _ifindex: u32) -> u32 {
        xdp_action::XDP_PASS
    }
    #[inline(always)]
    fn verdict(&self, v: Verdict) -> u32 {
        match v {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Drop => xdp_action::XDP_DROP,
        }
    }
    /// A partial checksum holds exactly the folded pseudo-header sum; a full one equals it
    /// only by a 1-in-65,536 chance, and then tc (which knows) rewrites it correctly anyway.
    /// Only where userspace put tc behind XDP (virtual devices), so NIC traffic never pays
    /// for the lookup unless the sums match.
    #[inline(always)]
    fn defer_to_tc(&self, p: &Pkt) -> bool {
        let Some(c) = at::<Self, u16>(self, p.l4_csum_off()) else {
            return false;
        };
        let field = unsafe { c.read_unaligned() };
        let l4_len = p.ip_len - (p.l4_off - p.l3_off) as u32;
        let sum = (p.saddr & 0xffff)
            + (p.saddr >> 16)
            + (p.daddr & 0xffff)
            + (p.daddr >> 16)
            + ((p.proto as u16).to_be() as u32)
            + ((l4_len as u16).to_be() as u32);
        field == csum::fold(sum) && unsafe { TC_BEHIND.get(&self.ifindex()) }.is_some()
    }
}

pub struct Tc<'a>(pub &'a TcContext);

/// bpf_l4_csum_replace flags.
const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

impl PacketCtx for Tc<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.0.skb.skb).data) as usize }
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.0.skb.skb).data_end) as usize }
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        unsafe { (*self.0.skb.skb).ifindex }
    }
    #[inline(always)]
    fn l4_csum_replace(
        &mut self,
        csum_off: usize,
        from: u32,
        to: u32,
        size: u8,
        pseudo: bool,
        udp: bool,
    ) -> Option<()> {
        // The kernel's helper knows ip_summed: for CHECKSUM_PARTIAL it updates only the
        // pseudo-header seed for addresses and leaves ports to the final computation.
        let mut flags = size as u64;
        if pseudo {
            flags |= BPF_F_PSEUDO_HDR;
        }
        if udp {
            flags |= BPF_F_MARK_MANGLED_0;
        }
        self.0
            .l4_csum_replace(csum_off, from as u64, to as u64, flags)
            .ok()
    }
    #[inline(always)]
    fn l3_csum_replace(&mut self, csum_off: usize, from: u32, to: u32) -> Option<()> {
        self.0
            .l3_csum_replace(csum_off, from as u64, to as u64, 4)
            .ok()
    }
    #[inline(always)]
    fn store_u32(&mut self, off: usize, v: u32) -> Option<()> {
        self.0.store(off, &v, 0).ok()
    }
    #[inline(always)]
    fn store_u16(&mut self, off: usize, v: u16) -> Option<()> {
        self.0.store(off, &v, 0).ok()
    }
    #[inline(always)]
    fn fib_lookup(&self, params: &mut FibParams) -> i64 {
        unsafe {
            bpf_fib_lookup(
                self.0.skb.skb as *mut _,
                params,
                size_of::<FibParams>() as i32,
                0,
            )
        }
    }
    #[inline(always)]
    fn can_redirect(&self, _ifindex: u32) -> bool {
        true
    }
    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> u32 {
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
    #[inline(always)]
    fn can_redirect_neigh(&self) -> bool {
        true
    }
    #[inline(always)]
    fn redirect_neigh(&self, ifindex: u32) -> u32 {
        unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as u32 }
    }
    #[inline(always)]
    fn verdict(&self, v: Verdict) -> u32 {
        match v {
            Verdict::Pass => TC_ACT_OK as u32,
            Verdict::Drop => TC_ACT_SHOT as u32,
        }
    }
}
