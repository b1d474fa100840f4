//! The durable table: every acknowledged change is on disk before xvsadm hears "ok", so the
//! next xvsd (after a stop, a crash or a SIGKILL) starts from exactly the last acknowledged
//! table, timeouts included, and can take the pinned maps over from it.
//!
//! Two files in `<state-dir>/durable/`:
//! * `snapshot.json`: the whole state (table, the engine's per-service states, timeouts, map
//!   limits) at sequence number `seq`. Replaced atomically: written to a temporary file,
//!   fsynced, renamed over the old one, and the directory fsynced.
//! * `journal`: records appended after the snapshot, one per acknowledged change, each the
//!   new state of only the services it touched (so one change at 50,000 services writes one
//!   service, not the table). Framed `[len u32][checksum u64][JSON]` and fdatasync'ed before
//!   the reply. A record torn by a crash fails its checksum and, never acknowledged, is
//!   dropped with everything after it. Records at or below the snapshot's `seq` (a crash
//!   between a compaction's rename and the journal's reset) are skipped.
//!
//! Records hold whole service states, not operations, so replaying one twice is harmless.
//! When the journal outgrows the snapshot (or a change touches much of the table, like a
//! large `-R`), the next persist writes a snapshot instead and starts an empty journal.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fastpath::{EngineService, Limits};
use crate::model::{Service, ServiceKey, Table};

const VERSION: u32 = 1;
/// The journal is compacted into a snapshot once it is larger than this and than the snapshot.
const JOURNAL_MIN_COMPACT: u64 = 8 << 20;

/// (tcp, tcpfin, udp) in seconds, as `ipvsadm --set` takes them.
pub type Timeouts = (u32, u32, u32);

/// Everything the durable store holds, as the next daemon reads it.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    pub limits: Option<Limits>,
    pub timeouts: Option<Timeouts>,
    pub table: Table,
    pub engine: BTreeMap<ServiceKey, EngineService>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    seq: u64,
    limits: Option<Limits>,
    timeouts: Option<Timeouts>,
    table: Table,
    engine: Vec<(ServiceKey, EngineService)>,
}

/// One acknowledged change: the new state of each service it touched (None: removed).
#[derive(Serialize, Deserialize, Default)]
pub struct Record {
    /// Set by `Durable::append`.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default)]
    pub services: Vec<(ServiceKey, Option<Service>)>,
    #[serde(default)]
    pub engine: Vec<(ServiceKey, Option<EngineService>)>,
}

pub struct Durable {
    dir: PathBuf,
    journal: File,
    journal_bytes: u64,
    snapshot_bytes: u64,
    seq: u64,
    /// A write failed: the next persist writes a whole snapshot.
    broken: bool,
}

/// 64-bit FNV-1a: enough to tell a torn or partly written record from a whole one.
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

impl DurableState {
    fn apply(&mut self, r: Record) {
        if r.timeouts.is_some() {
            self.timeouts = r.timeouts;
        }
        for (k, s) in r.services {
            self.table.restore_service(&k, s);
        }
        for (k, e) in r.engine {
            match e {
                Some(e) => {
                    self.engine.insert(k, e);
                }
                None => {
                    self.engine.remove(&k);
                }
            }
        }
    }
}

impl Durable {
    pub fn dir(state_dir: &Path) -> PathBuf {
        state_dir.join("durable")
    }

    /// Removes the durable store (`xvsd teardown`).
    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_dir_all(Self::dir(state_dir));
    }

    /// Opens (creating) the store under `state_dir` and reads what it holds: None when it
    /// holds nothing yet (a first start, or after a teardown).
    pub fn open(state_dir: &Path) -> Result<(Durable, Option<DurableState>), String> {
        let dir = Self::dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let snap_path = dir.join("snapshot.json");
        let mut state: Option<DurableState> = None;
        let mut seq = 0u64;
        let mut snapshot_bytes = 0u64;
        match std::fs::read(&snap_path) {
            Ok(b) => {
                snapshot_bytes = b.len() as u64;
                let s: SnapshotFile = serde_json::from_slice(&b).map_err(|e| {
                    format!(
                        "{}: {e} (the durable table is damaged; move it away to start from \
                         --rules or an empty table)",
                        snap_path.display()
                    )
                })?;
                if s.version != VERSION {
                    return Err(format!(
                        "{}: version {} (this xvsd reads {VERSION})",
                        snap_path.display(),
                        s.version
                    ));
                }
                seq = s.seq;
                state = Some(DurableState {
                    limits: s.limits,
                    timeouts: s.timeouts,
                    table: s.table,
                    engine: s.engine.into_iter().collect(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", snap_path.display())),
        }
        let jpath = dir.join("journal");
        let mut journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&jpath)
            .map_err(|e| format!("{}: {e}", jpath.display()))?;
        let mut bytes = Vec::new();
        journal
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", jpath.display()))?;
        let mut pos = 0usize;
        let mut replayed = 0usize;
        while pos + 12 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let sum = u64::from_le_bytes(bytes[pos + 4..pos + 12].try_into().unwrap());
            let Some(body) = bytes.get(pos + 12..pos + 12 + len) else {
                break;
            };
            if checksum(body) != sum {
                break;
            }
            let Ok(r) = serde_json::from_slice::<Record>(body) else {
                break;
            };
            pos += 12 + len;
            if r.seq <= seq {
                continue;
            }
            seq = r.seq;
            state.get_or_insert_with(DurableState::default).apply(r);
            replayed += 1;
        }
        if pos < bytes.len() {
            // A record torn by a crash: never acknowledged. Later appends follow the last
            // whole one.
            tracing::warn!(
                dropped_bytes = bytes.len() - pos,
                "durable journal: dropping an incomplete record (a change that was never acknowledged)"
            );
            journal
                .set_len(pos as u64)
                .and_then(|_| journal.sync_all())
                .map_err(|e| format!("{}: {e}", jpath.display()))?;
        }
        if replayed > 0 {
            tracing::debug!(records = replayed, "durable journal replayed");
        }
        Ok((
            Durable {
                dir,
                journal,
                journal_bytes: pos as u64,
                snapshot_bytes,
                seq,
                broken: false,
            },
            state,
        ))
    }

    /// Whether the next persist should be a snapshot: the journal outgrew it, or a write failed.
    pub fn wants_snapshot(&self, touched: usize, services: usize) -> bool {
        self.broken
            || (self.journal_bytes > JOURNAL_MIN_COMPACT
                && self.journal_bytes > self.snapshot_bytes)
            || (touched >= 256 && touched * 4 >= services)
    }

    /// Appends one record and syncs it to disk.
    pub fn append(&mut self, mut r: Record) -> io::Result<()> {
        r.seq = self.seq + 1;
        let body = serde_json::to_vec(&r).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(body.len() + 12);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let res = self
            .journal
            .write_all(&frame)
            .and_then(|_| self.journal.sync_data());
        match res {
            Ok(()) => {
                self.seq += 1;
                self.journal_bytes += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                // What may have reached the file is cut off at the next open (checksum); the
                // next persist writes a whole snapshot.
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Replaces the store by a snapshot of the whole state and an empty journal. Without
    /// `limits` (and engine states) the snapshot holds the table only: no daemon takes maps
    /// over from it (written before a table is programmed into new maps, so a daemon killed
    /// meanwhile is followed by one that programs it again).
    pub fn snapshot(
        &mut self,
        limits: Option<&Limits>,
        timeouts: Timeouts,
        table: &Table,
        engine: Vec<(ServiceKey, EngineService)>,
    ) -> io::Result<()> {
        let r = self.snapshot_inner(limits, timeouts, table, engine);
        self.broken = r.is_err();
        r
    }

    fn snapshot_inner(
        &mut self,
        limits: Option<&Limits>,
        timeouts: Timeouts,
        table: &Table,
        engine: Vec<(ServiceKey, EngineService)>,
    ) -> io::Result<()> {
        let seq = self.seq + 1;
        let s = SnapshotFile {
            version: VERSION,
            seq,
            limits: limits.cloned(),
            timeouts: Some(timeouts),
            table: table.clone(),
            engine,
        };
        let bytes = serde_json::to_vec(&s).map_err(io::Error::other)?;
        drop(s);
        write_atomic(&self.dir.join("snapshot.json"), &bytes)?;
        self.seq = seq;
        self.snapshot_bytes = bytes.len() as u64;
        // The journal's records are all at or below seq now: start an empty one. (A crash
        // before this leaves them, and the next open skips them by their seq.)
        let jpath = self.dir.join("journal");
        write_atomic(&jpath, &[])?;
        self.journal = OpenOptions::new().read(true).append(true).open(&jpath)?;
        self.journal_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Destination, Op, ServiceConfig};
    use std::net::Ipv4Addr;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xvs-durable-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn svc(i: u8) -> (ServiceKey, Service) {
        let k = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, i), 80);
        let mut t = Table::new();
        t.apply_op(&Op::AddService(k, ServiceConfig::with_scheduler("rr")))
            .unwrap();
        t.apply_op(&Op::AddDest(
            k,
            Destination::masq(Ipv4Addr::new(10, 1, 0, i), 8080, 1),
        ))
        .unwrap();
        (k, t.service(&k).unwrap().clone())
    }

    fn limits() -> Limits {
        Limits {
            max_services: 16,
            max_dests: 16,
            sched_slots: 64,
            max_period: 16,
        }
    }

    #[test]
    fn records_replay_over_the_snapshot_and_a_torn_tail_is_dropped() {
        let d = dir("replay");
        let (mut s, st) = Durable::open(&d).unwrap();
        assert!(st.is_none());
        let (k1, s1) = svc(1);
        let (k2, s2) = svc(2);
        let mut t = Table::new();
        t.restore_service(&k1, Some(s1.clone()));
        s.snapshot(Some(&limits()), (900, 120, 300), &t, Vec::new())
            .unwrap();
        s.append(Record {
            services: vec![(k2, Some(s2.clone()))],
            ..Default::default()
        })
        .unwrap();
        s.append(Record {
            timeouts: Some((10, 20, 30)),
            services: vec![(k1, None)],
            ..Default::default()
        })
        .unwrap();
        drop(s);
        // A torn record at the end: a crash in the middle of a write.
        let j = Durable::dir(&d).join("journal");
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut s, st) = Durable::open(&d).unwrap();
        let st = st.unwrap();
        assert_eq!(st.timeouts, Some((10, 20, 30)));
        assert_eq!(st.table.services(), std::slice::from_ref(&s2));
        assert_eq!(st.limits, Some(limits()));
        // Appends go on after the last whole record.
        s.append(Record {
            services: vec![(k1, Some(s1.clone()))],
            ..Default::default()
        })
        .unwrap();
        drop(s);
        let (_, st) = Durable::open(&d).unwrap();
        assert_eq!(st.unwrap().table.services().len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn records_a_snapshot_already_holds_are_skipped() {
        let d = dir("skip");
        let (mut s, _) = Durable::open(&d).unwrap();
        let (k1, s1) = svc(1);
        s.append(Record {
            services: vec![(k1, Some(s1.clone()))],
            ..Default::default()
        })
        .unwrap();
        let journal = std::fs::read(Durable::dir(&d).join("journal")).unwrap();
        // A snapshot without k1 at a later seq, then the old journal back (a crash between
        // the snapshot's rename and the journal's reset).
        s.snapshot(Some(&limits()), (1, 2, 3), &Table::new(), Vec::new())
            .unwrap();
        std::fs::write(Durable::dir(&d).join("journal"), journal).unwrap();
        drop(s);
        let (_, st) = Durable::open(&d).unwrap();
        assert!(st.unwrap().table.services().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
