//! The node's own clients, balanced at the socket (as Cilium's socket load balancing does):
//! connect() (TCP, connected UDP) and sendmsg() (unconnected UDP) to a VIP are rewritten to the
//! destination the service's scheduler picks, with the same tables and cursors as packets;
//! recvmsg() and getpeername() name the VIP again. The socket then talks to the real server
//! directly: no per-packet NAT, no local-source martians. Each such connection is kept in
//! SOCK_CONNS like a CONNS entry (destination, kernel TCP state from sockops, last use), so
//! listings, counts and expiry treat it like any other.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB},
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::{SockAddrContext, SockOpsContext},
};
use lb_common::{
    path, tcp_state, ConnValue, L4Addr, SockConnValue, SockKey, PROTO_TCP, PROTO_UDP, UDP_STATE,
};

use crate::ct::{self, DIR_INPUT, DIR_OUTPUT};
use crate::maps::{count, CONFIG, SERVICES, SOCK_CONNS, SOCK_REV};
use crate::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::sched;

/// connect4 / sendmsg4: a socket addressing a VIP is pointed at its destination.
#[inline(always)]
pub fn to_vip(ctx: &SockAddrContext) {
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return;
    }
    let (vip, vport) = (sa.user_ip4, sa.user_port as u16);
    let Some(svc) = SERVICES.get_ptr_mut(&L4Addr {
        addr: vip,
        port: vport,
        proto,
        _pad: 0,
    }) else {
        return;
    };
    let Some(cfg) = CONFIG.get(0) else {
        return;
    };
    // The hooks see every namespace's sockets: only this node's are balanced here.
    let ctxp = ctx.sock_addr as *mut c_void;
    if cfg.netns_cookie == 0 || unsafe { bpf_get_netns_cookie(ctxp) } != cfg.netns_cookie {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctxp) };
    let key = SockKey {
        cookie,
        addr: vip,
        port: vport,
        proto,
        _pad: 0,
    };
    let now = ct::now();
    // The client's own address, when the socket is bound already (sh hashes it).
    let sk = unsafe { sa.__bindgen_anon_1.sk };
    let (caddr, cport) = if sk.is_null() {
        (0, 0)
    } else {
        unsafe { ((*sk).src_ip4, ((*sk).src_port as u16).to_be()) }
    };
    if proto == PROTO_UDP {
        // A UDP flow keeps its destination while it lives, as a kernel IPVS connection does.
        if let Some(c) = SOCK_CONNS.get_ptr_mut(&key) {
            let c = unsafe { &mut *c };
            if ct::dest_live(&c.conn) && !ct::expired(cfg, &c.conn, now) {
                c.conn.last_seen_ns = now;
                if cport != 0 {
                    c.client_addr = caddr;
                    c.client_port = cport;
                }
                sa.user_ip4 = c.conn.rip;
                sa.user_port = c.conn.rport as u32;
                count(path::SOCK_ESTABLISHED);
                return;
            }
        }
    }
    let Some((dest_id, dest)) = sched::pick(unsafe { &mut *svc }, caddr, cport) else {
        count(path::SOCK_NO_DEST);
        return;
    };
    let rev = SockKey {
        cookie,
        addr: dest.addr,
        port: dest.port,
        proto,
        _pad: 0,
    };
    let val = SockConnValue {
        conn: ConnValue {
            dest_id,
            dest_gen: dest.gen,
            rip: dest.addr,
            rport: dest.port,
            state: if proto == PROTO_TCP {
                ct::next_state(proto, DIR_INPUT, TCP_SYN, tcp_state::NONE)
            } else {
                UDP_STATE
            },
            flags: 0,
            last_seen_ns: now,
        },
        client_addr: caddr,
        client_port: cport,
        _pad: 0,
    };
    let vip_addr = L4Addr {
        addr: vip,
        port: vport,
        proto,
        _pad: 0,
    };
    if SOCK_REV.insert(&rev, &vip_addr, 0).is_err() {
        count(path::SOCK_TABLE_FULL);
        return;
    }
    if SOCK_CONNS.insert(&key, &val, 0).is_err() {
        let _ = SOCK_REV.remove(&rev);
        count(path::SOCK_TABLE_FULL);
        return;
    }
    ct::account_conn(dest_id);
    sa.user_ip4 = dest.addr;
    sa.user_port = dest.port as u32;
    count(path::SOCK_NEW);
}

/// recvmsg4 / getpeername4: a real server's address, as this socket sees it, becomes the
/// VIP it was reached through.
#[inline(always)]
pub fn from_dest(ctx: &SockAddrContext) {
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) };
    let rev = SockKey {
        cookie,
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        proto,
        _pad: 0,
    };
    let Some(vip) = (unsafe { SOCK_REV.get(&rev) }) else {
        return;
    };
    let (addr, port) = (vip.addr, vip.port);
    sa.user_ip4 = addr;
    sa.user_port = port as u32;
}

/// The kernel's TCP socket states (include/net/tcp_states.h).
const TCP_ESTABLISHED: u32 = 1;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_TIME_WAIT: u32 = 6;
const TCP_CLOSE: u32 = 7;
const TCP_CLOSE_WAIT: u32 = 8;
const TCP_LAST_ACK: u32 = 9;
const TCP_CLOSING: u32 = 11;

/// sockops: learns a balanced TCP socket's own address once connect() bound it, and moves its
/// connection through the kernel IPVS states the segments it exchanges would cause.
#[inline(always)]
pub fn sockops(ctx: &SockOpsContext) {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_STATE_CB {
        return;
    }
    if ctx.family() != 2 {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
    // remote_port is in network order, in the upper half of the word on little-endian hosts.
    let rp = ctx.remote_port();
    let rport = if rp > 0xffff {
        (rp >> 16) as u16
    } else {
        rp as u16
    };
    let rev = SockKey {
        cookie,
        addr: ctx.remote_ip4(),
        port: rport,
        proto: PROTO_TCP,
        _pad: 0,
    };
    let Some(vip) = (unsafe { SOCK_REV.get(&rev) }) else {
        return;
    };
    let key = SockKey {
        cookie,
        addr: vip.addr,
        port: vip.port,
        proto: PROTO_TCP,
        _pad: 0,
    };
    let Some(c) = SOCK_CONNS.get_ptr_mut(&key) else {
        return;
    };
    let c = unsafe { &mut *c };
    c.conn.last_seen_ns = ct::now();
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        c.client_addr = ctx.local_ip4();
        c.client_port = (ctx.local_port() as u16).to_be();
        let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
        return;
    }
    let (old, new) = (ctx.arg(0), ctx.arg(1));
    // The segments behind each socket transition, as kernel IPVS would have seen them.
    let events: [(usize, u8); 2] = match new {
        // SYN-ACK from the server, then the client's ACK.
        TCP_ESTABLISHED => [(DIR_OUTPUT, TCP_SYN | TCP_ACK), (DIR_INPUT, TCP_ACK)],
        // The client closes first.
        TCP_FIN_WAIT1 => [(DIR_INPUT, TCP_FIN | TCP_ACK), (DIR_INPUT, 0xff)],
        // The server closed first.
        TCP_CLOSE_WAIT => [(DIR_OUTPUT, TCP_FIN | TCP_ACK), (DIR_INPUT, TCP_ACK)],
        // The client's FIN after the server's.
        TCP_LAST_ACK => [(DIR_INPUT, TCP_FIN | TCP_ACK), (DIR_INPUT, 0xff)],
        // The server's FIN after the client's, acknowledged.
        TCP_TIME_WAIT | TCP_CLOSING => [(DIR_OUTPUT, TCP_FIN | TCP_ACK), (DIR_INPUT, TCP_ACK)],
        // The end: acknowledged (from LAST_ACK) or reset.
        TCP_CLOSE if old == TCP_LAST_ACK => [(DIR_OUTPUT, TCP_ACK), (DIR_INPUT, 0xff)],
        TCP_CLOSE if old != TCP_TIME_WAIT && old != 5 => [(DIR_INPUT, TCP_RST), (DIR_INPUT, 0xff)],
        _ => return,
    };
    for (dir, flags) in events {
        if flags != 0xff {
            c.conn.state = ct::next_state(PROTO_TCP, dir, flags, c.conn.state);
        }
    }
}
