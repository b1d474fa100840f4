//! The IPVS generic netlink client: one netlink socket, synchronous requests.

use std::cell::Cell;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use neli::{
    consts::{
        nl::{NlmF, Nlmsg},
        socket::NlFamily,
    },
    genl::{Genlmsghdr, GenlmsghdrBuilder, NoUserHeader},
    nl::{NlPayload, NlmsghdrBuilder},
    socket::synchronous::NlSocketHandle,
    types::Buffer,
    utils::Groups,
};

use crate::model::{fmt_addr_port, Destination, ServiceConfig, ServiceKey};

use super::attrs::{AttrList, Attrs};
use super::consts::{cmd, cmd_attr, ctrl, info_attr, FAMILY_NAME, FAMILY_VERSION};
use super::error::{Ctx, IpvsError, Op};
use super::messages;
use super::types::{DestOptions, DestState, IpvsInfo, KernelService, ServiceOptions, Timeouts};

/// How long to wait for the kernel's answer before giving up.
const RECV_TIMEOUT_SECS: libc::time_t = 10;

/// A failed exchange: the kernel's errno, or trouble below it.
enum Fail {
    Errno(i32),
    Other(IpvsError),
}

impl From<IpvsError> for Fail {
    fn from(e: IpvsError) -> Self {
        Fail::Other(e)
    }
}

fn nl_err(e: impl std::fmt::Display) -> Fail {
    Fail::Other(IpvsError::Netlink(e.to_string()))
}

/// A connection to the kernel's IPVS over generic netlink.
///
/// Every command needs CAP_NET_ADMIN in the socket's network namespace (the one the process
/// is in when it calls [`IpvsClient::new`]).
pub struct IpvsClient {
    sock: NlSocketHandle,
    family: u16,
    seq: Cell<u32>,
}

impl IpvsClient {
    /// Opens a generic netlink socket and resolves the "IPVS" family (which makes the kernel
    /// load ip_vs if it is a module and modprobe works). A kernel without IPVS gives
    /// [`IpvsError::NoIpvs`].
    pub fn new() -> Result<Self, IpvsError> {
        let sock = NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty())
            .map_err(|e| IpvsError::Netlink(format!("opening a generic netlink socket: {e}")))?;
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid fd and a timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(IpvsError::Netlink(format!(
                "setting a receive timeout: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut client = IpvsClient {
            sock,
            family: 0,
            seq: Cell::new(1),
        };
        client.family = client.resolve_family()?;
        Ok(client)
    }

    /// The generic netlink id of the IPVS family in this kernel.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn resolve_family(&self) -> Result<u16, IpvsError> {
        let ctx = Ctx::op(Op::ResolveFamily);
        let mut attrs = AttrList::new();
        attrs.string(ctrl::ATTR_FAMILY_NAME, FAMILY_NAME)?;
        let replies = self
            .exchange(
                ctrl::GENL_ID_CTRL,
                ctrl::CMD_GETFAMILY,
                ctrl::VERSION,
                false,
                attrs,
            )
            .map_err(|f| fail(&ctx, f))?;
        for r in &replies {
            let a = Attrs::parse(r)?;
            if a.has(ctrl::ATTR_FAMILY_ID) {
                return a.u16(ctrl::ATTR_FAMILY_ID, "family id");
            }
        }
        Err(IpvsError::NoIpvs)
    }

    fn next_seq(&self) -> u32 {
        let s = self.seq.get();
        self.seq.set(s.wrapping_add(1));
        s
    }

    /// Sends one request and collects the attribute area of every reply, until the ACK (a
    /// "do" request, always sent with NLM_F_ACK) or NLMSG_DONE (a dump).
    fn exchange(
        &self,
        nl_type: u16,
        command: u8,
        version: u8,
        dump: bool,
        attrs: AttrList,
    ) -> Result<Vec<Vec<u8>>, Fail> {
        let genl: Genlmsghdr<u8, u16> = GenlmsghdrBuilder::<u8, u16, NoUserHeader>::default()
            .cmd(command)
            .version(version)
            .attrs(attrs.into_genl())
            .build()
            .map_err(nl_err)?;
        let seq = self.next_seq();
        let flags = if dump {
            NlmF::REQUEST | NlmF::DUMP
        } else {
            NlmF::REQUEST | NlmF::ACK
        };
        let msg = NlmsghdrBuilder::default()
            .nl_type(nl_type)
            .nl_flags(flags)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(genl))
            .build()
            .map_err(nl_err)?;
        self.sock.send(&msg).map_err(nl_err)?;

        let done: u16 = Nlmsg::Done.into();
        let noop: u16 = Nlmsg::Noop.into();
        let overrun: u16 = Nlmsg::Overrun.into();
        let mut out = Vec::new();
        loop {
            let (iter, _) = self.sock.recv::<u16, Buffer>().map_err(|e| {
                nl_err(format!(
                    "receiving the reply to IPVS/ctrl command {command}: {e}"
                ))
            })?;
            for m in iter {
                let m = m.map_err(nl_err)?;
                if *m.nl_seq() != seq {
                    continue; // a late reply to an earlier request
                }
                let ty = *m.nl_type();
                match m.nl_payload() {
                    NlPayload::Err(e) => return Err(Fail::Errno(-*e.error())),
                    NlPayload::Ack(_) => return Ok(out),
                    NlPayload::DumpExtAck(e) => {
                        if *e.error() < 0 {
                            return Err(Fail::Errno(-*e.error()));
                        }
                        return Ok(out);
                    }
                    NlPayload::Empty if ty == done => return Ok(out),
                    NlPayload::Empty => {}
                    NlPayload::Payload(p) => {
                        let p = p.as_ref();
                        if ty == done {
                            let code = p
                                .get(..4)
                                .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                                .unwrap_or(0);
                            if code < 0 {
                                return Err(Fail::Errno(-code));
                            }
                            return Ok(out);
                        }
                        if ty == noop {
                            continue;
                        }
                        if ty == overrun {
                            return Err(nl_err("netlink overrun"));
                        }
                        // Skip the generic netlink header (cmd, version, reserved).
                        if p.len() < 4 {
                            return Err(nl_err("short generic netlink message"));
                        }
                        out.push(p[4..].to_vec());
                    }
                }
            }
        }
    }

    fn request(&self, ctx: &Ctx, command: u8, attrs: AttrList) -> Result<(), IpvsError> {
        self.exchange(self.family, command, FAMILY_VERSION, false, attrs)
            .map(|_| ())
            .map_err(|f| fail(ctx, f))
    }

    fn get(&self, ctx: &Ctx, command: u8, attrs: AttrList) -> Result<Vec<Vec<u8>>, IpvsError> {
        self.exchange(self.family, command, FAMILY_VERSION, false, attrs)
            .map_err(|f| fail(ctx, f))
    }

    fn dump(&self, ctx: &Ctx, command: u8, attrs: AttrList) -> Result<Vec<Vec<u8>>, IpvsError> {
        self.exchange(self.family, command, FAMILY_VERSION, true, attrs)
            .map_err(|f| fail(ctx, f))
    }

    /// GET_INFO.
    pub fn info(&self) -> Result<IpvsInfo, IpvsError> {
        let r = self.get(&Ctx::op(Op::GetInfo), cmd::GET_INFO, AttrList::new())?;
        let body = r
            .first()
            .ok_or_else(|| IpvsError::Decode("no reply to GET_INFO".into()))?;
        let a = Attrs::parse(body)?;
        Ok(IpvsInfo {
            version: a.u32(info_attr::VERSION, "version")?,
            conn_tab_size: a.u32(info_attr::CONN_TAB_SIZE, "connection table size")?,
        })
    }

    /// GET_CONFIG: the TCP, TCP FIN and UDP timeouts.
    pub fn timeouts(&self) -> Result<Timeouts, IpvsError> {
        let r = self.get(&Ctx::op(Op::GetConfig), cmd::GET_CONFIG, AttrList::new())?;
        let body = r
            .first()
            .ok_or_else(|| IpvsError::Decode("no reply to GET_CONFIG".into()))?;
        let a = Attrs::parse(body)?;
        let get = |ty: u16, what: &str| -> Result<u32, IpvsError> {
            if a.has(ty) {
                a.u32(ty, what)
            } else {
                Ok(0) // the protocol is not built into this kernel
            }
        };
        Ok(Timeouts {
            tcp: get(cmd_attr::TIMEOUT_TCP, "tcp timeout")?,
            tcp_fin: get(cmd_attr::TIMEOUT_TCP_FIN, "tcp fin timeout")?,
            udp: get(cmd_attr::TIMEOUT_UDP, "udp timeout")?,
        })
    }

    /// SET_CONFIG. A 0 leaves that timeout unchanged (`ipvsadm --set 0 0 0` changes nothing).
    pub fn set_timeouts(&self, t: &Timeouts) -> Result<(), IpvsError> {
        let mut a = AttrList::new();
        a.u32(cmd_attr::TIMEOUT_TCP, t.tcp)?
            .u32(cmd_attr::TIMEOUT_TCP_FIN, t.tcp_fin)?
            .u32(cmd_attr::TIMEOUT_UDP, t.udp)?;
        self.request(&Ctx::op(Op::SetConfig), cmd::SET_CONFIG, a)
    }

    /// Every service with its destinations and counters. Services come in the kernel's hash
    /// order; destinations in each service's list order (newest first).
    pub fn services(&self) -> Result<Vec<KernelService>, IpvsError> {
        let mut out = self.service_entries()?;
        for ks in &mut out {
            self.fill_dests(ks)?;
        }
        Ok(out)
    }

    /// Every service without its destinations (one dump).
    pub fn service_entries(&self) -> Result<Vec<KernelService>, IpvsError> {
        let r = self.dump(
            &Ctx::op(Op::ListServices),
            cmd::GET_SERVICE,
            AttrList::new(),
        )?;
        r.iter().map(|b| parse_service_reply(b)).collect()
    }

    /// One service with its destinations; [`IpvsError::NoSuchService`] if it does not exist.
    pub fn service(&self, key: &ServiceKey) -> Result<KernelService, IpvsError> {
        let ctx = Ctx::service(Op::GetService, key);
        let r = self.get(
            &ctx,
            cmd::GET_SERVICE,
            svc_nest(messages::service_id(key)?)?,
        )?;
        let body = r
            .first()
            .ok_or_else(|| IpvsError::Decode("no reply to GET_SERVICE".into()))?;
        let mut ks = parse_service_reply(body)?;
        self.fill_dests(&mut ks)?;
        Ok(ks)
    }

    /// The destinations of a service, in its list order. A missing service gives an empty list
    /// (the kernel's dump does not say).
    pub fn dests(&self, key: &ServiceKey) -> Result<Vec<(Destination, DestState)>, IpvsError> {
        let ctx = Ctx::service(Op::ListDests, key);
        let r = self.dump(&ctx, cmd::GET_DEST, svc_nest(messages::service_id(key)?)?)?;
        r.iter()
            .map(|b| {
                let top = Attrs::parse(b)?;
                let d = top.nested(cmd_attr::DEST, "destination")?;
                messages::decode_dest(&d, key.family())
            })
            .collect()
    }

    fn fill_dests(&self, ks: &mut KernelService) -> Result<(), IpvsError> {
        let (dests, state) = self.dests(&ks.service.key)?.into_iter().unzip();
        ks.service.dests = dests;
        ks.dest_state = state;
        Ok(())
    }

    /// NEW_SERVICE (`ipvsadm -A`).
    pub fn add_service(&self, key: &ServiceKey, config: &ServiceConfig) -> Result<(), IpvsError> {
        self.add_service_with(key, config, &ServiceOptions::default())
    }

    /// NEW_SERVICE with a persistence engine.
    pub fn add_service_with(
        &self,
        key: &ServiceKey,
        config: &ServiceConfig,
        options: &ServiceOptions,
    ) -> Result<(), IpvsError> {
        self.service_cmd(Op::AddService, cmd::NEW_SERVICE, key, config, options)
    }

    /// SET_SERVICE (`ipvsadm -E`): scheduler, flags, timeout and netmask all replaced.
    pub fn edit_service(&self, key: &ServiceKey, config: &ServiceConfig) -> Result<(), IpvsError> {
        self.edit_service_with(key, config, &ServiceOptions::default())
    }

    /// SET_SERVICE; `options.pe_name: None` removes a persistence engine.
    pub fn edit_service_with(
        &self,
        key: &ServiceKey,
        config: &ServiceConfig,
        options: &ServiceOptions,
    ) -> Result<(), IpvsError> {
        self.service_cmd(Op::EditService, cmd::SET_SERVICE, key, config, options)
    }

    fn service_cmd(
        &self,
        op: Op,
        command: u8,
        key: &ServiceKey,
        config: &ServiceConfig,
        options: &ServiceOptions,
    ) -> Result<(), IpvsError> {
        let ctx = Ctx {
            scheduler: Some(&config.scheduler),
            pe_name: options.pe_name.as_deref(),
            ..Ctx::service(op, key)
        };
        let attrs = svc_nest(messages::service_full(key, config, options)?)?;
        self.request(&ctx, command, attrs)
    }

    /// DEL_SERVICE (`ipvsadm -D`), with its destinations.
    pub fn del_service(&self, key: &ServiceKey) -> Result<(), IpvsError> {
        let ctx = Ctx::service(Op::DelService, key);
        self.request(
            &ctx,
            cmd::DEL_SERVICE,
            svc_nest(messages::service_id(key)?)?,
        )
    }

    /// NEW_DEST (`ipvsadm -a`): the kernel puts it at the head of the service's list.
    pub fn add_dest(&self, key: &ServiceKey, dest: &Destination) -> Result<(), IpvsError> {
        self.add_dest_with(key, dest, &DestOptions::default())
    }

    /// NEW_DEST with tunnel settings.
    pub fn add_dest_with(
        &self,
        key: &ServiceKey,
        dest: &Destination,
        options: &DestOptions,
    ) -> Result<(), IpvsError> {
        self.dest_cmd(Op::AddDest, cmd::NEW_DEST, key, dest, options)
    }

    /// SET_DEST (`ipvsadm -e`): the destination keeps its list position.
    pub fn edit_dest(&self, key: &ServiceKey, dest: &Destination) -> Result<(), IpvsError> {
        self.edit_dest_with(key, dest, &DestOptions::default())
    }

    /// SET_DEST with tunnel settings.
    pub fn edit_dest_with(
        &self,
        key: &ServiceKey,
        dest: &Destination,
        options: &DestOptions,
    ) -> Result<(), IpvsError> {
        self.dest_cmd(Op::EditDest, cmd::SET_DEST, key, dest, options)
    }

    fn dest_cmd(
        &self,
        op: Op,
        command: u8,
        key: &ServiceKey,
        dest: &Destination,
        options: &DestOptions,
    ) -> Result<(), IpvsError> {
        let ctx = Ctx {
            dest: Some((
                fmt_addr_port(&dest.addr, dest.port),
                dest.weight,
                dest.l_thresh,
                dest.u_thresh,
            )),
            ..Ctx::service(op, key)
        };
        let mut attrs = AttrList::new();
        attrs
            .nested(cmd_attr::SERVICE, messages::service_id(key)?)?
            .nested(cmd_attr::DEST, messages::dest(dest, options, true)?)?;
        self.request(&ctx, command, attrs)
    }

    /// DEL_DEST (`ipvsadm -d`).
    pub fn del_dest(&self, key: &ServiceKey, addr: IpAddr, port: u16) -> Result<(), IpvsError> {
        let ctx = Ctx {
            dest: Some((fmt_addr_port(&addr, port), 0, 0, 0)),
            ..Ctx::service(Op::DelDest, key)
        };
        let mut attrs = AttrList::new();
        attrs
            .nested(cmd_attr::SERVICE, messages::service_id(key)?)?
            .nested(cmd_attr::DEST, messages::dest_id(addr, port)?)?;
        self.request(&ctx, cmd::DEL_DEST, attrs)
    }

    /// ZERO (`ipvsadm -Z`): the counters and rates of every service and destination.
    pub fn zero_all(&self) -> Result<(), IpvsError> {
        self.request(&Ctx::op(Op::Zero), cmd::ZERO, AttrList::new())
    }

    /// ZERO of one service and its destinations (`ipvsadm -Z -t ...`).
    pub fn zero_service(&self, key: &ServiceKey) -> Result<(), IpvsError> {
        let ctx = Ctx::service(Op::Zero, key);
        self.request(&ctx, cmd::ZERO, svc_nest(messages::service_id(key)?)?)
    }

    /// FLUSH (`ipvsadm -C`): deletes every service.
    pub fn flush(&self) -> Result<(), IpvsError> {
        self.request(&Ctx::op(Op::Flush), cmd::FLUSH, AttrList::new())
    }
}

fn fail(ctx: &Ctx, f: Fail) -> IpvsError {
    match f {
        Fail::Errno(e) => ctx.errno(e),
        Fail::Other(e) => e,
    }
}

fn svc_nest(inner: AttrList) -> Result<AttrList, IpvsError> {
    let mut a = AttrList::new();
    a.nested(cmd_attr::SERVICE, inner)?;
    Ok(a)
}

fn parse_service_reply(body: &[u8]) -> Result<KernelService, IpvsError> {
    let top = Attrs::parse(body)?;
    messages::decode_service(&top.nested(cmd_attr::SERVICE, "service")?)
}
