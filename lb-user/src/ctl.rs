//! The control protocol between `xvsadm` and `xvsd`: one JSON request and one JSON response
//! per connection on a Unix socket. The daemon handles requests one at a time, so commands
//! that race (two xvsadm at once, xvsadm during a reload) each see a consistent table.
use serde::{Deserialize, Serialize};

use crate::model::{Op, ServiceKey};
use crate::snapshot::Snapshot;

/// Where xvsd listens by default.
pub const DEFAULT_SOCKET: &str = "/run/xvs/xvsd.sock";

/// An operation and the line of the file (or command) it came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberedOp {
    pub line: Option<usize>,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Apply all operations or none.
    Apply(Vec<NumberedOp>),
    /// The table with counters; with connections when `conns`.
    Snapshot { conns: bool },
    /// Zero the counters of one service or all.
    Zero(Option<ServiceKey>),
    /// ipvsadm --set (0 leaves a value as it is).
    SetTimeouts { tcp: u32, tcpfin: u32, udp: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Error(String),
    Snapshot(Box<Snapshot>),
}

/// The client side (xvsadm): sends one request and waits for the answer. xvsd may answer
/// before it has read everything (a refusal): the answer is read even when sending failed.
pub fn request(socket: &std::path::Path, req: &Request) -> Result<Response, String> {
    use std::io::{Read, Write};
    // Serialized before connecting: the daemon gives a client --client-timeout to send it all
    // (a 50,000-service restore takes seconds to serialize in a debug build).
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "permission denied: cannot connect to xvsd at {} ({e}): xvsadm needs root \
                 (or, for listings, membership of xvsd's --list-group)",
                socket.display()
            )
        } else {
            format!(
                "cannot reach xvsd at {} ({e}): is it running? Start it with `xvsd --iface IF`",
                socket.display()
            )
        }
    })?;
    let sent = s
        .write_all(&body)
        .and_then(|()| s.shutdown(std::net::Shutdown::Write));
    drop(body);
    let mut out = Vec::new();
    // A reset after the answer (xvsd closed with part of the request unread) still leaves the
    // answer in `out`.
    let read = s.read_to_end(&mut out);
    match serde_json::from_slice(&out) {
        Ok(r) => Ok(r),
        Err(e) => Err(match (sent, read) {
            (Err(w), _) => format!("sending the request to xvsd failed: {w}"),
            (_, Err(r)) => format!("reading xvsd's answer failed: {r}"),
            _ => format!("bad answer from xvsd: {e}"),
        }),
    }
}
