//! Output commit across processes (DESIGN.md §10), for `ftc chaos --procs`. With `--observe DIR`
//! every `ftc node` writes a file of its own in DIR ([`Recorder`]): its stores' sequences as they
//! move, the transactions its head commits (by customer packet: the TCP sequence number the
//! chaos generator numbers packets with, [`packet_id`]), and the packets its buffer releases.
//! After the run, [`check`] reads every file and looks at each released packet against the
//! stores as they were when it left: it must have committed a transaction (a no-op, say) at
//! every middlebox's head, and every write it depends on must be in f+1 of the stores.
//!
//! Times are CLOCK_MONOTONIC's, one clock for every process of the host. A node writes a batch's
//! records before it sends that batch's frames and packets, all labelled with one time taken
//! once the batch's work is done and its stores are read. So a record that shows a write in a
//! store before a release proves the store held it then (sequences only grow; the read came
//! before the label, so a store another lane of the server moves meanwhile is not labelled
//! early), and everything a release legitimately waited for (the commit vectors of the tails,
//! which come after the stores applied the writes) was recorded no later than it: the check does
//! not blame a correct release, the releases of the batch that moved the stores included (they
//! share its label). A node killed mid-batch loses only records of what it never sent.
//!
//! Records, big-endian as control messages (read with their `Reader`):
//! `1 t:u64 mb:u8 partition:u16 seq:u64` (a store's sequence);
//! `2 t:u64 packet:u32 mb:u8 kind:u8 n:u16 n×(partition:u16 seq:u64)` (a commit);
//! `3 t:u64 packet:u32` (a release). A file may end in a record cut short by a kill.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use ftc_chain::ring::MbIndex;
use ftc_stm::{DepEntry, LogKind, Partition, Store};

use crate::control::{ControlError, Reader};

const SEQ: u8 = 1;
const COMMIT: u8 = 2;
const RELEASE: u8 = 3;

/// The id the chaos generator gives a customer packet: the TCP sequence number of an
/// Ethernet/IPv4/TCP frame.
pub fn packet_id(frame: &[u8]) -> Option<u32> {
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let at = 14 + ihl + 4;
    Some(u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Bytes a node's record holds at most (about 80 million packets' commits and releases).
pub const MAX_RECORD: u64 = 4 << 30;

/// One node's file of records.
#[derive(Debug)]
pub struct Recorder {
    out: BufWriter<File>,
    /// Bytes of records written, at most [`MAX_RECORD`].
    written: u64,
    /// The sequences last recorded, per store (by middlebox), per partition.
    seen: Vec<(MbIndex, Vec<u64>)>,
    /// The sequences that moved since the last look (middlebox, partition, sequence).
    moved: Vec<(MbIndex, u16, u64)>,
}

impl Recorder {
    /// A new file in `dir` for the node at `position` (named by position and process id: a
    /// replacement writes a file of its own).
    pub fn create(dir: &Path, position: u16) -> io::Result<Recorder> {
        let path = dir.join(format!("node-{position}-{}.obs", std::process::id()));
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Recorder {
            out: BufWriter::with_capacity(1 << 16, file),
            written: 0,
            seen: Vec::new(),
            moved: Vec::new(),
        })
    }

    /// The sequences of `stores` (by the middlebox whose state each keeps) that moved since the
    /// last look, labelled with the time `now` gives once they are all read; that time, for the
    /// batch's other records.
    pub fn stores<'s>(
        &mut self,
        stores: impl Iterator<Item = (MbIndex, &'s Store)>,
        now: impl FnOnce() -> u64,
    ) -> io::Result<u64> {
        self.moved.clear();
        for (mb, store) in stores {
            let i = match self.seen.iter().position(|(m, _)| *m == mb) {
                Some(i) => i,
                None => {
                    self.seen.push((mb, vec![0; store.partitions() as usize]));
                    self.seen.len() - 1
                }
            };
            for (p, last) in self.seen[i].1.iter_mut().enumerate() {
                let seq = store.seq(Partition(p as u16)).0;
                if seq != *last {
                    *last = seq;
                    self.moved.push((mb, p as u16, seq));
                }
            }
        }
        let t = now();
        for &(mb, p, seq) in &self.moved {
            let mut r = [0u8; 20];
            r[0] = SEQ;
            r[1..9].copy_from_slice(&t.to_be_bytes());
            r[9] = mb.0;
            r[10..12].copy_from_slice(&p.to_be_bytes());
            r[12..20].copy_from_slice(&seq.to_be_bytes());
            self.out.write_all(&r)?;
        }
        self.written += 20 * self.moved.len() as u64;
        Ok(t)
    }

    /// Customer packet `packet` committed a transaction of `mb` at `t`.
    pub fn commit(
        &mut self,
        t: u64,
        packet: u32,
        mb: MbIndex,
        kind: LogKind,
        deps: &[DepEntry],
    ) -> io::Result<()> {
        let n = u16::try_from(deps.len()).map_err(|_| io::Error::other("too many deps"))?;
        self.out.write_all(&[COMMIT])?;
        self.out.write_all(&t.to_be_bytes())?;
        self.out.write_all(&packet.to_be_bytes())?;
        self.out.write_all(&[mb.0, kind.code()])?;
        self.out.write_all(&n.to_be_bytes())?;
        for d in deps {
            self.out.write_all(&d.partition.0.to_be_bytes())?;
            self.out.write_all(&d.seq.0.to_be_bytes())?;
        }
        self.written += 17 + 10 * u64::from(n);
        Ok(())
    }

    /// Customer packet `packet` left the chain at `t`.
    pub fn release(&mut self, t: u64, packet: u32) -> io::Result<()> {
        let mut r = [0u8; 13];
        r[0] = RELEASE;
        r[1..9].copy_from_slice(&t.to_be_bytes());
        r[9..13].copy_from_slice(&packet.to_be_bytes());
        self.written += 13;
        self.out.write_all(&r)
    }

    /// Into the file: call before sending what the records are about. An error once the file
    /// holds [`MAX_RECORD`] bytes: recording is for bounded runs (`ftc chaos --procs`), and a
    /// node left running with it must not fill its disk.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.written >= MAX_RECORD {
            return Err(io::Error::other(format!(
                "the record holds {} bytes, as many as it may",
                self.written
            )));
        }
        Ok(())
    }
}

/// A transaction a packet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Commit {
    mb: u8,
    kind: LogKind,
    deps: Vec<(u16, u64)>,
}

/// One store's sequences over time, per partition: (time, sequence), in time order.
type Trace = HashMap<u16, Vec<(u64, u64)>>;

/// Everything the nodes recorded.
#[derive(Debug, Default)]
struct Records {
    /// Per middlebox, the traces of its stores (one per file that kept one).
    stores: HashMap<u8, Vec<Trace>>,
    commits: HashMap<u32, Vec<Commit>>,
    /// When each packet left (the first time, were there more).
    releases: HashMap<u32, u64>,
}

/// Reads the records of one file into `records`: its commits and releases, and the traces of
/// its stores.
fn read_records(bytes: &[u8], records: &mut Records) {
    let mut traces: HashMap<u8, Trace> = HashMap::new();
    let mut r = Reader::new(bytes, "observation record");
    // A record cut short (the node was killed while writing) ends the file.
    while let (Ok(tag), Ok(t)) = (r.u8(), r.u64()) {
        match tag {
            SEQ => {
                let (Ok(mb), Ok(p), Ok(seq)) = (r.u8(), r.u16(), r.u64()) else {
                    break;
                };
                traces
                    .entry(mb)
                    .or_default()
                    .entry(p)
                    .or_default()
                    .push((t, seq));
            }
            COMMIT => {
                let (Ok(packet), Ok(mb), Ok(kind), Ok(n)) = (r.u32(), r.u8(), r.u8(), r.u16())
                else {
                    break;
                };
                let deps: Result<Vec<_>, ControlError> =
                    (0..n).map(|_| Ok((r.u16()?, r.u64()?))).collect();
                let (Ok(deps), Some(kind)) = (deps, LogKind::from_code(kind)) else {
                    break;
                };
                records
                    .commits
                    .entry(packet)
                    .or_default()
                    .push(Commit { mb, kind, deps });
            }
            RELEASE => {
                let Ok(packet) = r.u32() else { break };
                let at = records.releases.entry(packet).or_insert(t);
                *at = (*at).min(t);
            }
            _ => break,
        }
    }
    for (mb, trace) in traces {
        records.stores.entry(mb).or_default().push(trace);
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Released packets checked (received by the sink, or recorded as released), and the
    /// transactions checked for them.
    pub packets: u64,
    pub transactions: u64,
    pub violations: Vec<String>,
}

/// The violations reported at most (the count of the rest is reported).
const MAX_REPORTED: usize = 10;

/// Checks output commit for the packets `released` (by id: those the sink received) and for
/// every release the files in `dir` recorded (one lost on the way out left the chain all the
/// same), for a chain of `middleboxes` that tolerates `f` failures.
pub fn check(
    dir: &Path,
    (middleboxes, f): (usize, usize),
    released: impl Iterator<Item = u32>,
) -> io::Result<Checked> {
    let mut records = Records::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "obs") {
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            read_records(&bytes, &mut records);
        }
    }
    Ok(check_records(&records, (middleboxes, f), released))
}

fn check_records(
    records: &Records,
    (middleboxes, f): (usize, usize),
    released: impl Iterator<Item = u32>,
) -> Checked {
    let mut checked = Checked::default();
    let mut violations = 0usize;
    let mut violation = |checked: &mut Checked, why: String| {
        violations += 1;
        if checked.violations.len() < MAX_REPORTED {
            checked.violations.push(why);
        }
    };
    let mut all: BTreeSet<u32> = records.releases.keys().copied().collect();
    all.extend(released);
    for packet in all {
        checked.packets += 1;
        let Some(&t) = records.releases.get(&packet) else {
            violation(
                &mut checked,
                format!("output commit: packet {packet} left the chain with no release recorded"),
            );
            continue;
        };
        let commits = records.commits.get(&packet).map_or(&[][..], Vec::as_slice);
        // A head records a packet's commit before it sends the packet on, killed or not: a
        // packet that left without one at some middlebox skipped its transaction there.
        if let Some(mb) =
            (0..middleboxes).find(|&mb| commits.iter().all(|c| usize::from(c.mb) != mb))
        {
            violation(
                &mut checked,
                format!("output commit: packet {packet} left the chain with no commit recorded at m{mb}'s head"),
            );
        }
        for c in commits {
            checked.transactions += 1;
            // A no-op depends on nothing (and a stateless middlebox's stores never move, so
            // none may be recorded).
            if c.deps.is_empty() {
                continue;
            }
            let traces = records.stores.get(&c.mb).map_or(&[][..], Vec::as_slice);
            let holding = traces.iter().filter(|trace| holds(trace, c, t)).count();
            if holding < f + 1 {
                violation(
                    &mut checked,
                    format!(
                        "output commit: packet {packet} left the chain when m{}'s {:?} transaction (dependencies {:?}) was in {holding} of the {} stores it needs",
                        c.mb,
                        c.kind,
                        c.deps,
                        f + 1
                    ),
                );
            }
        }
    }
    if violations > checked.violations.len() {
        checked.violations.push(format!(
            "output commit: {} more violations",
            violations - checked.violations.len()
        ));
    }
    checked
}

/// Whether the store of `trace` held the effects of `c` at `t`.
fn holds(trace: &Trace, c: &Commit, t: u64) -> bool {
    c.deps.iter().all(|&(p, s)| {
        let seq = trace.get(&p).map_or(0, |points| {
            let i = points.partition_point(|&(at, _)| at <= t);
            i.checked_sub(1).map_or(0, |i| points[i].1)
        });
        match c.kind {
            LogKind::Update => seq > s,
            LogKind::ReadOnly | LogKind::Noop => seq >= s,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(p: u16, s: u64) -> DepEntry {
        DepEntry::new(p, s)
    }

    /// A store of 4 partitions whose partition `p` is at `seq`.
    fn store_at(p: u16, seq: u64) -> Store {
        let store = Store::new(4, 1).unwrap();
        while store.seq(Partition(p)).0 < seq {
            write_once(&store, p);
        }
        store
    }

    /// One transaction on `store` that writes partition `p`.
    fn write_once(store: &Store, p: u16) {
        let mut w = store.worker(0).unwrap();
        let key = (0u32..)
            .map(u32::to_le_bytes)
            .find(|k| ftc_stm::partition_of(k, 4) == Partition(p))
            .unwrap();
        let n = store.seq(Partition(p)).0 as u8;
        let _ = w.run(|tx| tx.write(&key, &[n]));
    }

    fn file(dir: &Path, name: &str, write: impl FnOnce(&mut Recorder)) {
        let path = dir.join(name);
        let mut r = Recorder {
            out: BufWriter::new(File::create(path).unwrap()),
            written: 0,
            seen: Vec::new(),
            moved: Vec::new(),
        };
        write(&mut r);
        r.flush().unwrap();
    }

    /// A record stops at [`MAX_RECORD`] bytes: the flush that finds it full fails (the node then
    /// stops recording), and every record counts its bytes.
    #[test]
    fn a_record_holds_max_record_bytes_at_most() {
        let dir = temp_dir("cap");
        let mut r = Recorder::create(&dir, 0).unwrap();
        r.commit(1, 7, MbIndex(0), LogKind::Update, &[dep(2, 0), dep(3, 1)])
            .unwrap();
        r.release(2, 7).unwrap();
        r.stores([(MbIndex(0), &store_at(2, 1))].into_iter(), || 3)
            .unwrap();
        r.flush().unwrap();
        let on_disk = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
        assert_eq!(r.written, on_disk.metadata().unwrap().len());
        r.written = MAX_RECORD - 13;
        r.release(4, 8).unwrap();
        let e = r.flush().unwrap_err();
        assert!(e.to_string().contains("as many as it may"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ftc-observe-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_release_needs_the_write_in_f_plus_1_stores_before_it() {
        let dir = temp_dir("f1");
        let (head, replica) = (store_at(2, 1), store_at(2, 1));
        // The head commits packet 7's update of partition 2 (dependency seq 0) at 10 and holds
        // it then; its successor applies it at 20; packet 7 leaves at 30, packet 8 at 15.
        file(&dir, "node-0-1.obs", |r| {
            r.commit(10, 7, MbIndex(0), LogKind::Update, &[dep(2, 0)])
                .unwrap();
            r.commit(10, 8, MbIndex(0), LogKind::Update, &[dep(2, 0)])
                .unwrap();
            r.stores([(MbIndex(0), &head)].into_iter(), || 10).unwrap();
            // Nothing moved: nothing more recorded.
            r.stores([(MbIndex(0), &head)].into_iter(), || 12).unwrap();
        });
        file(&dir, "node-1-2.obs", |r| {
            r.stores([(MbIndex(0), &replica)].into_iter(), || 20)
                .unwrap();
            r.release(30, 7).unwrap();
            r.release(15, 8).unwrap();
            // Cut short by a kill.
            r.out.write_all(&[RELEASE, 1, 2]).unwrap();
        });
        let early = check(&dir, (1, 1), [7, 8].into_iter()).unwrap();
        assert_eq!((early.packets, early.transactions), (2, 2));
        assert_eq!(early.violations.len(), 1, "{:?}", early.violations);
        assert!(
            early.violations[0].contains("packet 8")
                && early.violations[0].contains("in 1 of the 2")
        );
        // Packet 8 left too early even if the sink never got it (lost on the way out).
        assert_eq!(check(&dir, (1, 1), [7].into_iter()).unwrap(), early);
        assert_eq!(check(&dir, (1, 1), std::iter::empty()).unwrap(), early);
        // Two failures tolerated need three stores.
        assert_eq!(
            check(&dir, (1, 2), [7].into_iter())
                .unwrap()
                .violations
                .len(),
            2
        );
        let lost = check(&dir, (1, 1), [9].into_iter()).unwrap();
        assert!(lost
            .violations
            .iter()
            .any(|v| v.contains("packet 9 left the chain with no release recorded")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Another lane of the server moves a store while the node's thread reads it: the move
    /// is labelled with the next look's time, not with this one's, so a release of this batch
    /// that needed it is caught (labelled before the read, it passed).
    #[test]
    fn a_store_moved_during_the_read_is_not_labelled_early() {
        let dir = temp_dir("lanes");
        let head = store_at(2, 1);
        let replica = store_at(2, 0);
        file(&dir, "node-0-1.obs", |r| {
            r.commit(1, 7, MbIndex(0), LogKind::Update, &[dep(2, 0)])
                .unwrap();
            r.stores([(MbIndex(0), &head)].into_iter(), || 1).unwrap();
        });
        file(&dir, "node-1-2.obs", |r| {
            let moving = || {
                write_once(&replica, 2);
                10
            };
            let t = r.stores([(MbIndex(0), &replica)].into_iter(), moving);
            assert_eq!(t.unwrap(), 10);
            r.release(10, 7).unwrap();
            r.stores([(MbIndex(0), &replica)].into_iter(), || 20)
                .unwrap();
        });
        let early = check(&dir, (1, 1), [7].into_iter()).unwrap();
        assert_eq!(early.violations.len(), 1, "{:?}", early.violations);
        assert!(early.violations[0].contains("packet 7"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_read_only_transaction_needs_the_state_it_read() {
        let dir = temp_dir("ro");
        let (a, b) = (store_at(1, 3), store_at(1, 2));
        file(&dir, "node-0-1.obs", |r| {
            r.stores([(MbIndex(1), &a)].into_iter(), || 5).unwrap();
            r.commit(4, 1, MbIndex(0), LogKind::Noop, &[]).unwrap();
            r.commit(6, 1, MbIndex(1), LogKind::ReadOnly, &[dep(1, 3)])
                .unwrap();
        });
        file(&dir, "node-1-2.obs", |r| {
            r.stores([(MbIndex(1), &b)].into_iter(), || 5).unwrap();
            r.release(9, 1).unwrap();
        });
        // The replica is at 2: it has not the state seq 3 read.
        assert_eq!(
            check(&dir, (2, 1), [1].into_iter())
                .unwrap()
                .violations
                .len(),
            1
        );
        assert!(check(&dir, (2, 0), [1].into_iter())
            .unwrap()
            .violations
            .is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every packet that leaves the chain committed a transaction at each middlebox's head
    /// (a no-op, at a stateless one), recorded before the head sent it on: one that left
    /// without a commit recorded at some head is a violation (it was checked against nothing).
    #[test]
    fn a_release_with_no_commit_recorded_at_a_head_is_a_violation() {
        let dir = temp_dir("uncommitted");
        file(&dir, "node-0-1.obs", |r| {
            for packet in [1, 2] {
                r.commit(1, packet, MbIndex(0), LogKind::Noop, &[]).unwrap();
            }
            r.commit(2, 1, MbIndex(1), LogKind::Noop, &[]).unwrap();
            for packet in [1, 2, 3] {
                r.release(3, packet).unwrap();
            }
        });
        let checked = check(&dir, (2, 1), [1, 2, 3].into_iter()).unwrap();
        assert_eq!((checked.packets, checked.transactions), (3, 3));
        assert_eq!(
            checked.violations,
            [
                "output commit: packet 2 left the chain with no commit recorded at m1's head",
                "output commit: packet 3 left the chain with no commit recorded at m0's head",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn packet_ids_are_tcp_sequence_numbers() {
        let frame = ftc_node::traffic::request(3, 123_456, 128);
        assert_eq!(packet_id(&frame), Some(123_456));
        assert_eq!(packet_id(&frame[..20]), None);
    }
}
