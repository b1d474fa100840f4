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
