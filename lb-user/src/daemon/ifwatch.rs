//! `xvsd --iface-match PATTERN`: the fast path follows the interfaces whose names match (pods'
//! veths, `veth*`, `cali*`, ...) as they appear, are renamed and go away, by listening to the
//! kernel's link notifications (rtnetlink, RTM_NEWLINK / RTM_DELLINK on the RTNLGRP_LINK
//! multicast group) in the daemon's network namespace.
//!
//! Three parts: `parse` turns the notifications' bytes into `LinkEvent`s, `Tracker` decides what
//! each event means for the attachments (pure, unit-tested), and `Watcher` runs it against the
//! node through `ifaces::attach_iface` / `detach_iface`.
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use neli::consts::rtnl::{Ifla, RtAddrFamily, Rtm};
use neli::consts::socket::{Msg, NlFamily};
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::Ifinfomsg;
use neli::socket::NlSocket;
use neli::utils::Groups;
use neli::FromBytes;

use super::ifaces::{self, AttachOpts};
use super::Node;
use crate::fastpath::AttachMode;

/// RTNLGRP_LINK: the link notifications' multicast group (a group number, not a mask).
const RTNLGRP_LINK: u32 = 1;

/// Interface name patterns, shell-glob style (`veth*`, `cali?????`, `eth[0-3]`), each with the
/// hook for the interfaces it matches (None: auto, per device).
#[derive(Clone, Debug, Default)]
pub struct Patterns(Vec<(glob::Pattern, Option<AttachMode>)>);

impl Patterns {
    pub fn new(pats: &[(String, Option<AttachMode>)]) -> Result<Patterns, String> {
        pats.iter()
            .map(|(p, hook)| {
                glob::Pattern::new(p)
                    .map(|g| (g, *hook))
                    .map_err(|e| format!("--iface-match {p:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns)
    }

    pub fn matches(&self, name: &str) -> bool {
        self.hook(name).is_some()
    }

    /// The hook of the first pattern that matches `name`; None if none does.
    pub fn hook(&self, name: &str) -> Option<Option<AttachMode>> {
        self.0
            .iter()
            .find(|(p, _)| p.matches(name))
            .map(|(_, h)| *h)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A link notification, as far as attachments care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link exists (created, renamed, moved in, or any change of its state).
    New { index: u32, name: String },
    /// The link is gone from this namespace (deleted, or moved to another).
    Del { index: u32, name: String },
}

/// The link events in one datagram from the socket. Other messages, and link messages of other
/// families (a bridge's per-port RTM_NEWLINK/RTM_DELLINK, which come and go with bridge
/// membership, not with the device), are skipped; so is a message that does not parse.
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    let mut off = 0usize;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let msg = &buf[off..off + len];
        off += (len + 3) & !3;
        let Ok(m) = Nlmsghdr::<Rtm, Ifinfomsg>::from_bytes(&mut Cursor::new(msg)) else {
            continue;
        };
        let del = match m.nl_type() {
            Rtm::Newlink => false,
            Rtm::Dellink => true,
            _ => continue,
        };
        let NlPayload::Payload(info) = m.nl_payload() else {
            continue;
        };
        if *info.ifi_family() != RtAddrFamily::Unspecified || *info.ifi_index() <= 0 {
            continue;
        }
        let Ok(name) = info
            .rtattrs()
            .get_attr_handle()
            .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
        else {
            continue;
        };
        let index = *info.ifi_index() as u32;
        events.push(if del {
            LinkEvent::Del { index, name }
        } else {
            LinkEvent::New { index, name }
        });
    }
    events
}

/// What an event asks of the fast path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Attach {
        index: u32,
        name: String,
    },
    Detach {
        index: u32,
        name: String,
    },
    /// An attached interface was renamed to a name that still matches: its pin follows.
    Rename {
        index: u32,
        from: String,
        to: String,
    },
}

/// The attachments the watcher made, and what each event changes about them. Interfaces named
/// with `--iface` are not its business: it never touches them (by index, as when they were
/// attached).
#[derive(Debug, Default)]
pub struct Tracker {
    patterns: Patterns,
    fixed: HashSet<u32>,
    attached: HashMap<u32, String>,
    /// Attaching failed while the interface stayed: not retried on its every state change
    /// (no error storm), only once it is renamed or comes back.
    failed: HashMap<u32, String>,
}

impl Tracker {
    pub fn new(patterns: Patterns, fixed: impl IntoIterator<Item = u32>) -> Tracker {
        Tracker {
            patterns,
            fixed: fixed.into_iter().collect(),
            ..Default::default()
        }
    }

    pub fn event(&mut self, ev: &LinkEvent) -> Option<Action> {
        match ev {
            LinkEvent::New { index, name } => {
                if self.fixed.contains(index) {
                    return None;
                }
                if let Some(old) = self.attached.get(index) {
                    if old == name {
                        return None;
                    }
                    let from = old.clone();
                    if self.patterns.matches(name) {
                        self.attached.insert(*index, name.clone());
                        return Some(Action::Rename {
                            index: *index,
                            from,
                            to: name.clone(),
                        });
                    }
                    self.attached.remove(index);
                    return Some(Action::Detach {
                        index: *index,
                        name: from,
                    });
                }
                if self.failed.get(index) == Some(name) {
                    return None;
                }
                self.failed.remove(index);
                if !self.patterns.matches(name) {
                    return None;
                }
                self.attached.insert(*index, name.clone());
                Some(Action::Attach {
                    index: *index,
                    name: name.clone(),
                })
            }
            LinkEvent::Del { index, .. } => {
                self.failed.remove(index);
                self.fixed.remove(index);
                self.attached.remove(index).map(|name| Action::Detach {
                    index: *index,
                    name,
                })
            }
        }
    }

    /// Attaching `index` failed: it is not attached, and not retried until it changes name or
    /// comes back.
    pub fn failed(&mut self, index: u32, name: &str) {
        self.attached.remove(&index);
        self.failed.insert(index, name.to_string());
    }

    /// The actions that bring the attachments in line with the interfaces `present` now (at
    /// start, or after notifications were lost).
    pub fn resync(&mut self, present: &[(u32, String)]) -> Vec<Action> {
        let here: HashMap<u32, &String> = present.iter().map(|(i, n)| (*i, n)).collect();
        let mut gone: Vec<(u32, String)> = self
            .attached
            .iter()
            .filter(|(i, _)| !here.contains_key(i))
            .map(|(i, n)| (*i, n.clone()))
            .collect();
        gone.sort();
        let mut actions: Vec<Action> = gone
            .into_iter()
            .filter_map(|(index, name)| self.event(&LinkEvent::Del { index, name }))
            .collect();
        self.failed.retain(|i, _| here.contains_key(i));
        self.fixed.retain(|i| here.contains_key(i));
        for (index, name) in present {
            actions.extend(self.event(&LinkEvent::New {
                index: *index,
                name: name.clone(),
            }));
        }
        actions
    }

    pub fn attached(&self) -> &HashMap<u32, String> {
        &self.attached
    }

    pub fn patterns(&self) -> &Patterns {
        &self.patterns
    }
}

/// A socket subscribed to this network namespace's link notifications.
pub struct LinkSocket(NlSocket);

impl LinkSocket {
    pub fn open() -> Result<LinkSocket, String> {
        let s = NlSocket::connect(NlFamily::Route, None, Groups::new_groups(&[RTNLGRP_LINK]))
            .map_err(|e| format!("rtnetlink socket for link notifications: {e}"))?;
        // Room for a burst (many pods at once) before the kernel drops notifications; if it
        // does anyway, recv says so and the watcher rescans.
        let _ = s.set_recv_buffer_size(4 << 20);
        Ok(LinkSocket(s))
    }

    /// The next datagram's events; Err(true) when notifications were lost (ENOBUFS).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Vec<LinkEvent>, (bool, std::io::Error)> {
        match self.0.recv(&mut *buf, Msg::empty()) {
            Ok((n, _)) => Ok(parse(&buf[..n.min(buf.len())])),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Err((true, e)),
            Err(e) => Err((false, e)),
        }
    }
}

/// Runs the tracker's decisions against the node.
pub struct Watcher {
    pub node: Arc<Mutex<Node>>,
    /// `--redirect-virtual`.
    pub redirect_virtual: bool,
    pub tracker: Tracker,
}

impl Watcher {
    /// Attaches to every matching interface present now. Call with the socket already open,
    /// so nothing that appears meanwhile is missed.
    pub fn scan(&mut self) {
        let actions = self.tracker.resync(&ifaces::present_ifaces());
        self.run(actions, None);
    }

    /// Follows the notifications until the socket fails (never, in practice).
    pub fn follow(mut self, sock: LinkSocket) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match sock.recv(&mut buf) {
                Ok(events) => {
                    let t0 = Instant::now();
                    let actions: Vec<Action> = events
                        .iter()
                        .filter_map(|e| self.tracker.event(e))
                        .collect();
                    self.run(actions, Some(t0));
                }
                Err((true, _)) => {
                    tracing::warn!("link notifications were lost; rescanning the interfaces");
                    self.scan();
                }
                Err((false, e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err((false, e)) => {
                    tracing::error!(
                        "interface watcher stopped: {e}; --iface-match follows no more changes"
                    );
                    return;
                }
            }
        }
    }

    fn run(&mut self, actions: Vec<Action>, t0: Option<Instant>) {
        if actions.is_empty() {
            return;
        }
        let mut node = self.node.lock().unwrap_or_else(|p| p.into_inner());
        for a in actions {
            let us = || t0.map(|t| t.elapsed().as_micros() as u64);
            match a {
                Action::Attach { index, name } => {
                    let opts = AttachOpts {
                        hook: self.tracker.patterns().hook(&name).flatten(),
                        redirect_virtual: self.redirect_virtual,
                    };
                    match ifaces::attach_iface(node.fast_path(), &opts, &name) {
                        Ok(r) => tracing::info!(
                            iface = %name,
                            index,
                            hook = r.attached.mode.name(),
                            adopted = r.attached.adopted,
                            replaced_stale = r.replaced_stale,
                            redirect = r.redirect,
                            took_us = us(),
                            "attached (matched --iface-match)"
                        ),
                        Err(e) => {
                            self.tracker.failed(index, &name);
                            // Gone (or replaced) while being attached: nothing to report but
                            // nothing may stay behind either.
                            let _ = ifaces::detach_iface(node.fast_path(), &name, None);
                            if crate::fastpath::ifindex(&name).ok() != Some(index) {
                                tracing::debug!(iface = %name, index, "went away while being attached: {e}");
                            } else {
                                tracing::error!(iface = %name, index, "not attached: {e}");
                            }
                        }
                    }
                }
                Action::Detach { index, name } => {
                    match ifaces::detach_iface(node.fast_path(), &name, Some(index)) {
                        Ok(_) => tracing::info!(iface = %name, index, took_us = us(), "detached"),
                        Err(e) => tracing::error!(iface = %name, index, "detaching: {e}"),
                    }
                }
                Action::Rename { index, from, to } => {
                    match ifaces::rename_iface(node.fast_path(), &from, &to) {
                        Ok(()) => {
                            tracing::info!(iface = %to, from = %from, index, "renamed; still attached")
                        }
                        Err(e) => tracing::error!(iface = %to, from = %from, index, "renamed: {e}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neli::consts::nl::NlmF;
    use neli::consts::rtnl::{Arphrd, Iff};
    use neli::nl::NlmsghdrBuilder;
    use neli::rtnl::{IfinfomsgBuilder, RtattrBuilder};
    use neli::types::RtBuffer;
    use neli::ToBytes;

    /// A link notification as the kernel sends it (header, ifinfomsg, IFLA_IFNAME).
    fn msg(ty: Rtm, family: RtAddrFamily, index: i32, name: &str) -> Vec<u8> {
        let mut attrs = RtBuffer::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Ifname)
                .rta_payload(name)
                .build()
                .unwrap(),
        );
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Mtu)
                .rta_payload(1500u32)
                .build()
                .unwrap(),
        );
        let info = IfinfomsgBuilder::default()
            .ifi_family(family)
            .ifi_type(Arphrd::Ether)
            .ifi_index(index)
            .ifi_flags(Iff::UP)
            .rtattrs(attrs)
            .build()
            .unwrap();
        let m = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(NlmF::empty())
            .nl_payload(NlPayload::Payload(info))
            .build()
            .unwrap();
        let mut c = Cursor::new(Vec::new());
        m.to_bytes(&mut c).unwrap();
        c.into_inner()
    }

    fn new(index: u32, name: &str) -> LinkEvent {
        LinkEvent::New {
            index,
            name: name.into(),
        }
    }

    fn del(index: u32, name: &str) -> LinkEvent {
        LinkEvent::Del {
            index,
            name: name.into(),
        }
    }

    #[test]
    fn parses_new_and_del_link_notifications_in_one_datagram() {
        let mut buf = msg(Rtm::Newlink, RtAddrFamily::Unspecified, 7, "veth1a2b");
        buf.extend(msg(Rtm::Dellink, RtAddrFamily::Unspecified, 5, "cali0"));
        assert_eq!(parse(&buf), vec![new(7, "veth1a2b"), del(5, "cali0")]);
    }

    #[test]
    fn skips_bridge_port_messages_other_types_and_garbage() {
        // A bridge's RTM_DELLINK for a port leaving it: the device stays.
        let mut buf = msg(
            Rtm::Dellink,
            RtAddrFamily::from(libc::AF_BRIDGE as u8),
            7,
            "veth1",
        );
        buf.extend(msg(Rtm::Newaddr, RtAddrFamily::Unspecified, 7, "veth1"));
        buf.extend(msg(Rtm::Newlink, RtAddrFamily::Unspecified, 8, "veth2"));
        assert_eq!(parse(&buf), vec![new(8, "veth2")]);
        assert_eq!(parse(&[1, 2, 3]), vec![]);
        // A length past the end stops the walk instead of reading beyond it.
        let mut bad = msg(Rtm::Newlink, RtAddrFamily::Unspecified, 9, "veth3");
        bad[0] = 0xff;
        assert_eq!(parse(&bad), vec![]);
    }

    fn tracker() -> Tracker {
        let p = Patterns::new(&[("veth*".into(), None), ("cali?".into(), None)]).unwrap();
        Tracker::new(p, [2])
    }

    #[test]
    fn patterns_are_shell_globs() {
        let p = Patterns::new(&[
            ("veth*".into(), Some(AttachMode::Tc)),
            ("cali?".into(), None),
            ("eth[0-1]".into(), Some(AttachMode::Native)),
            ("eth*".into(), Some(AttachMode::Generic)),
        ])
        .unwrap();
        for yes in ["veth", "veth9f3a", "cali1", "eth0", "eth1"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in ["cali12", "xveth1", "lo"] {
            assert!(!p.matches(no), "{no}");
        }
        // The first pattern that matches gives the hook.
        assert_eq!(p.hook("veth1"), Some(Some(AttachMode::Tc)));
        assert_eq!(p.hook("cali1"), Some(None));
        assert_eq!(p.hook("eth1"), Some(Some(AttachMode::Native)));
        assert_eq!(p.hook("eth2"), Some(Some(AttachMode::Generic)));
        assert_eq!(p.hook("lo"), None);
        assert!(Patterns::new(&[("veth[".into(), None)]).is_err());
    }

    #[test]
    fn attaches_matching_links_once_and_detaches_them_when_deleted() {
        let mut t = tracker();
        assert_eq!(
            t.event(&new(7, "veth1")),
            Some(Action::Attach {
                index: 7,
                name: "veth1".into()
            })
        );
        // Later state changes of the same link (up, carrier, addresses) change nothing.
        assert_eq!(t.event(&new(7, "veth1")), None);
        assert_eq!(t.event(&new(8, "eth0")), None);
        assert_eq!(t.event(&del(8, "eth0")), None);
        assert_eq!(
            t.event(&del(7, "veth1")),
            Some(Action::Detach {
                index: 7,
                name: "veth1".into()
            })
        );
        assert_eq!(t.event(&del(7, "veth1")), None);
        assert!(t.attached().is_empty());
    }

    #[test]
    fn interfaces_named_by_iface_are_left_alone() {
        let mut t = tracker();
        assert_eq!(t.event(&new(2, "veth0")), None);
        assert_eq!(t.event(&del(2, "veth0")), None);
    }

    #[test]
    fn renames_move_the_pin_or_detach() {
        let mut t = tracker();
        t.event(&new(7, "veth1"));
        assert_eq!(
            t.event(&new(7, "veth2")),
            Some(Action::Rename {
                index: 7,
                from: "veth1".into(),
                to: "veth2".into()
            })
        );
        assert_eq!(
            t.event(&new(7, "eth5")),
            Some(Action::Detach {
                index: 7,
                name: "veth2".into()
            })
        );
        assert_eq!(t.event(&del(7, "eth5")), None);
        // A non-matching link renamed to a matching name is attached.
        assert_eq!(t.event(&new(9, "tmp0")), None);
        assert_eq!(
            t.event(&new(9, "cali1")),
            Some(Action::Attach {
                index: 9,
                name: "cali1".into()
            })
        );
    }

    #[test]
    fn a_failed_attach_is_not_retried_on_every_state_change() {
        let mut t = tracker();
        t.event(&new(7, "veth1"));
        t.failed(7, "veth1");
        assert_eq!(t.event(&new(7, "veth1")), None);
        assert_eq!(t.event(&del(7, "veth1")), None);
        // The index comes back (reused): tried again.
        assert!(matches!(
            t.event(&new(7, "veth1")),
            Some(Action::Attach { .. })
        ));
    }

    #[test]
    fn resync_detaches_what_vanished_and_attaches_what_appeared() {
        let mut t = tracker();
        t.event(&new(7, "veth1"));
        t.event(&new(8, "veth2"));
        let present = vec![
            (1, "lo".to_string()),
            (2, "veth0".to_string()),
            (8, "veth2".to_string()),
            (10, "veth3".to_string()),
        ];
        assert_eq!(
            t.resync(&present),
            vec![
                Action::Detach {
                    index: 7,
                    name: "veth1".into()
                },
                Action::Attach {
                    index: 10,
                    name: "veth3".into()
                },
            ]
        );
        assert_eq!(t.resync(&present), vec![]);
    }
}
