//! Kernel-exact rr, wrr and sh, as tables the fast path walks.
//!
//! The BPF program runs no scheduling logic: for each service it reads a precomputed table of
//! picks. rr and wrr publish one period of the kernel's periodic pick sequence, starting with the
//! very next pick, and the BPF side takes `table[cursor % len]` with a cursor that restarts at 0
//! per published table. sh publishes its 256 buckets with the fallback probe already resolved.
//!
//! So that the tables stay exact across changes, [`ServiceSched`] carries the kernel's scheduler
//! state (the rr cursor, the wrr mark) the way the kernel carries it: [`ServiceSched::advance`]
//! replays the picks the fast path made, [`ServiceSched::on_change`] runs the kernel's per-change
//! hook, and [`ServiceSched::table`] builds the next table from there.

mod rr;
mod sh;
mod wrr;

use std::net::IpAddr;

pub use sh::sh_bucket;

/// A destination's identity in its service.
pub type DestKey = (IpAddr, u16);

/// A destination as schedulers see it; its position in the slice is its list position (newest
/// first, as the kernel keeps them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedDest {
    pub key: DestKey,
    pub weight: u32,
    /// The kernel's IP_VS_DEST_F_OVERLOAD (upper connection threshold reached).
    pub overloaded: bool,
}

impl SchedDest {
    /// What every one of these schedulers requires of a destination it returns.
    pub fn available(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }
}

/// The schedulers the fast path serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SchedKind {
    Rr,
    Wrr,
    /// `fallback`: sh-fallback (SCHED1); `port`: sh-port (SCHED2).
    Sh {
        fallback: bool,
        port: bool,
    },
}

impl SchedKind {
    /// The kind for a service's configuration: Some for rr, wrr and sh, None for the schedulers
    /// the fast path does not serve.
    pub fn from_config(c: &crate::model::ServiceConfig) -> Option<SchedKind> {
        match c.scheduler.as_str() {
            "rr" => Some(SchedKind::Rr),
            "wrr" => Some(SchedKind::Wrr),
            "sh" => Some(SchedKind::Sh {
                fallback: c.flags.sched1,
                port: c.flags.sched2,
            }),
            _ => None,
        }
    }
}

/// One precomputed pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pick {
    /// Index of the chosen destination in the list the table was built from; None: no
    /// destination, the connection is refused.
    pub dest: Option<usize>,
    /// Scheduler state after the pick (wrr: the current weight cw; rr and sh: 0).
    pub aux: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedError {
    /// The table would be longer than the space allowed for it (wrr: sum of weights / gcd).
    #[error("scheduler table needs {needed} entries, more than the limit of {max}")]
    TableTooLong { needed: u64, max: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    /// ip_vs_rr.c keeps a pointer to the last picked destination's list node; None is the head.
    Rr {
        cursor: Option<DestKey>,
    },
    Wrr(wrr::Mark),
    /// sh's bucket array is a pure function of the list: nothing to carry.
    Sh,
}

/// Per-service scheduler state, carried across table changes the way the kernel carries it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSched {
    kind: SchedKind,
    state: State,
}

impl ServiceSched {
    /// A freshly created, empty service (the kernel's init_service on an empty list).
    pub fn new(kind: SchedKind) -> Self {
        let state = match kind {
            SchedKind::Rr => State::Rr { cursor: None },
            SchedKind::Wrr => State::Wrr(wrr::Mark::new()),
            SchedKind::Sh { .. } => State::Sh,
        };
        ServiceSched { kind, state }
    }

    /// The scheduler bound to a service that already has destinations (the kernel's
    /// init_service, as run when `ipvsadm -E` switches a service to this scheduler).
    pub fn init(kind: SchedKind, list: &[SchedDest]) -> Self {
        // init_service computes exactly what the change hook computes from an empty mark:
        // rr starts at the head; wrr gets cl = head, di, mw from the list and cw = mw.
        let mut s = Self::new(kind);
        s.on_change(&[], list);
        s
    }

    pub fn kind(&self) -> SchedKind {
        self.kind
    }

    /// `picks` connections were scheduled from `table` (built from `list`): move the state to
    /// just after pick number `picks - 1` (no-op when `picks == 0`). Works when
    /// `picks > table.len()` (the fast path wraps).
    ///
    /// An empty rr/wrr table means every attempt was refused. rr keeps its cursor then, but a
    /// refused wrr pick moves the mark, so the fast path should count refused attempts too
    /// (any count > 0 gives the same state: the move is idempotent).
    pub fn advance(&mut self, list: &[SchedDest], table: &[Pick], picks: u64) {
        if picks == 0 {
            return;
        }
        let last = if table.is_empty() {
            None
        } else {
            Some(table[((picks - 1) % table.len() as u64) as usize])
        };
        match &mut self.state {
            State::Rr { cursor } => {
                if let Some(Pick { dest: Some(i), .. }) = last {
                    *cursor = Some(list[i].key);
                }
            }
            State::Wrr(mark) => match last {
                Some(Pick { dest: Some(i), aux }) => mark.picked(list[i].key, aux),
                _ => mark.refused(list),
            },
            State::Sh => {}
        }
    }

    /// The kernel's per-change hook (add_dest / upd_dest / del_dest). Call once per single
    /// change, in order, with the list as it was before and after that change.
    pub fn on_change(&mut self, before: &[SchedDest], after: &[SchedDest]) {
        match &mut self.state {
            State::Rr { cursor } => rr::on_change(cursor, before, after),
            State::Wrr(mark) => mark.dest_changed(after),
            State::Sh => {}
        }
    }

    /// The table to publish now, for `list`: rr/wrr one full period from the current state
    /// (empty if no destination is available), sh exactly 256 entries (all None for an empty
    /// list). `max_len` caps the length; a longer table is `TableTooLong`.
    ///
    /// `list` must carry the weights of the last `on_change` (wrr's mw and di come from it, as
    /// in the kernel); OVERLOAD flags may have changed since, as they do without a kernel hook:
    /// then `advance` with the old table and publish a new one, without `on_change`.
    pub fn table(&self, list: &[SchedDest], max_len: usize) -> Result<Vec<Pick>, SchedError> {
        match (&self.state, self.kind) {
            (State::Rr { cursor }, _) => rr::table(*cursor, list, max_len),
            (State::Wrr(mark), _) => mark.table(list, max_len),
            (State::Sh, SchedKind::Sh { fallback, .. }) => sh::table(list, fallback, max_len),
            (State::Sh, _) => unreachable!("sh state with a non-sh kind"),
        }
    }
}

/// Position of `key` in `list`.
fn position(list: &[SchedDest], key: DestKey) -> Option<usize> {
    list.iter().position(|d| d.key == key)
}

fn check_len(needed: u64, max: usize) -> Result<(), SchedError> {
    if needed > max as u64 {
        return Err(SchedError::TableTooLong { needed, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
