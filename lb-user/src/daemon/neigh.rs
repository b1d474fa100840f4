//! Resolving next hops the XDP program could not: XDP has no way to have the kernel resolve a
//! missing neighbour, so it records the (interface, address) in NEIGH_WANTED and passes the
//! packet on; this module makes each wanted neighbour a *managed* entry (NTF_EXT_MANAGED,
//! Linux 5.16+), which the kernel resolves at once and keeps resolved. The next packet then
//! finds it. Without this a reply to an on-link client whose address the kernel never had
//! reason to resolve (a local VIP answering a secondary address) would never be delivered.
use std::io;
use std::net::Ipv4Addr;

const RTM_NEWNEIGH: u16 = 28;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NDA_DST: u16 = 1;
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 1;
const NLMSG_ERROR: u16 = 2;

/// The request's bytes: nlmsghdr, ndmsg, NDA_DST, NDA_FLAGS_EXT.
fn request(ifindex: u32, addr: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(44);
    let len: u32 = 16 + 12 + 8 + 8;
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // ndmsg: family, pad, pad, ifindex, state (NUD_NONE: to be resolved), flags, type.
    b.push(libc::AF_INET as u8);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.push(0);
    b.push(0);
    // NDA_DST
    b.extend_from_slice(&8u16.to_ne_bytes());
    b.extend_from_slice(&NDA_DST.to_ne_bytes());
    b.extend_from_slice(&addr.octets());
    // NDA_FLAGS_EXT
    b.extend_from_slice(&8u16.to_ne_bytes());
    b.extend_from_slice(&NDA_FLAGS_EXT.to_ne_bytes());
    b.extend_from_slice(&NTF_EXT_MANAGED.to_ne_bytes());
    b
}

/// Asks the kernel to resolve `addr` on `ifindex` and keep it resolved.
pub fn resolve_managed(ifindex: u32, addr: Ipv4Addr) -> io::Result<()> {
    // SAFETY: plain socket calls on a descriptor owned here and closed on every path.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let close = |r: io::Result<()>| {
            libc::close(fd);
            r
        };
        let msg = request(ifindex, addr, 1);
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        if sent < 0 {
            return close(Err(io::Error::last_os_error()));
        }
        let mut buf = [0u8; 256];
        let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
        if n < 0 {
            return close(Err(io::Error::last_os_error()));
        }
        // The ACK is an NLMSG_ERROR whose error field is 0 on success, -errno otherwise.
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return close(Err(io::Error::from_raw_os_error(-err)));
            }
        }
        close(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_laid_out_as_rtnetlink_expects() {
        let m = request(7, Ipv4Addr::new(10, 1, 2, 3), 9);
        assert_eq!(m.len(), 44);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 44);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWNEIGH);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(&m[32..36], &[10, 1, 2, 3]);
        assert_eq!(
            u32::from_ne_bytes(m[40..44].try_into().unwrap()),
            NTF_EXT_MANAGED
        );
    }
}
