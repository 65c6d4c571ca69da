//! Tests of the piggyback message: views, writer and owned reprs together, by hand and by
//! proptest.

use ftc_stm::{DepEntry, LogKind, LogSource};
use proptest::prelude::*;

use super::*;

fn dep(p: u16, s: u64) -> DepEntry {
    DepEntry::new(p, s)
}

/// A message written out byte by byte.
#[rustfmt::skip]
const MESSAGE: &[u8] = &[
    0x02, 0x05, 0x02, 0x00, 0x01, 0x00,         // version 2, flags 5, 2 logs, 1 CV
    // log: 42 bytes, middlebox 0, update, 2 deps, 2 writes
    0x2a, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00,
    0x01, 0x00, 0x2c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     // (1, 300)
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     // (5, 0)
    0x03, 0x00, 0x02, 0x00, b'a', b'b', b'c', b'x', b'y',           // "abc" = "xy"
    0x01, 0x00, 0xff, 0xff, b'k',                                   // delete "k"
    // log: 8 bytes, middlebox 1, no-op
    0x08, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
    // CV: middlebox 1, 1 entry (3, 128)
    0x01, 0x01, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

fn message_repr() -> MessageRepr {
    MessageRepr {
        flags: 5,
        logs: vec![
            LogRepr {
                middlebox: 0,
                kind: LogKind::Update,
                deps: vec![dep(1, 300), dep(5, 0)],
                writes: vec![
                    (b"abc".to_vec(), Some(b"xy".to_vec())),
                    (b"k".to_vec(), None),
                ],
            },
            LogRepr {
                middlebox: 1,
                kind: LogKind::Noop,
                deps: vec![],
                writes: vec![],
            },
        ],
        cvs: vec![CvRepr {
            middlebox: 1,
            entries: vec![dep(3, 128)],
        }],
    }
}

#[test]
fn view_reads_hand_built_message() {
    let m = MessageView::new_checked(MESSAGE).expect("valid");
    assert_eq!((m.flags(), m.log_count(), m.cv_count()), (5, 2, 1));
    let logs: Vec<_> = m.logs().collect();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].middlebox(), 0);
    assert_eq!(logs[0].kind(), LogKind::Update);
    assert_eq!(logs[0].as_bytes(), &MESSAGE[6..48]);
    assert_eq!(logs[0].deps().collect::<Vec<_>>(), [dep(1, 300), dep(5, 0)]);
    let writes: Vec<_> = logs[0].writes().collect();
    assert_eq!(writes[0].key, b"abc");
    assert_eq!(writes[0].value, Some(&b"xy"[..]));
    assert_eq!(writes[1].key, b"k");
    assert_eq!(writes[1].value, None);
    assert_eq!(logs[1].kind(), LogKind::Noop);
    assert_eq!(logs[1].as_bytes(), &[8, 0, 1, 2, 0, 0, 0, 0]);
    // Through the trait too.
    assert_eq!(LogSource::deps(&logs[0]).count(), 2);
    assert_eq!(LogSource::writes(&logs[1]).count(), 0);
    let cvs: Vec<_> = m.commit_vectors().collect();
    assert_eq!(cvs.len(), 1);
    assert_eq!(cvs[0].middlebox(), 1);
    assert_eq!(cvs[0].entries().collect::<Vec<_>>(), [dep(3, 128)]);
    assert_eq!(cvs[0].as_bytes(), &MESSAGE[56..]);
    assert_eq!(MessageRepr::parse(&m), message_repr());
}

#[test]
fn repr_emits_hand_built_message() {
    let r = message_repr();
    assert_eq!(r.buffer_len(), MESSAGE.len());
    let mut buf = [0u8; 128];
    assert_eq!(r.emit(&mut buf), Ok(MESSAGE.len()));
    assert_eq!(&buf[..MESSAGE.len()], MESSAGE);
    assert_eq!(
        r.emit(&mut buf[..MESSAGE.len() - 1]),
        Err(WireError::NoRoom)
    );
}

#[test]
fn rejects_rule_breaks() {
    let bad = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut m = MESSAGE.to_vec();
        f(&mut m);
        MessageView::new_checked(&m).err()
    };
    let rule = |r: &'static str| Some(WireError::BadMessage(r));
    assert_eq!(bad(&|m| m[0] = 1), Some(WireError::BadVersion));
    assert_eq!(
        bad(&|m| m.push(0)),
        rule("trailing bytes after the last commit vector")
    );
    assert_eq!(bad(&|m| m[4] = 2), Some(WireError::Truncated));
    // Three logs announced: the CV's first bytes read as a log length past the end.
    assert_eq!(bad(&|m| m[2] = 3), Some(WireError::Truncated));
    assert_eq!(bad(&|m| m[9] = 3), rule("unknown log kind"));
    // Dependency partitions 1 then 1.
    assert_eq!(
        bad(&|m| m[24] = 1),
        rule("log dependency partitions not increasing")
    );
    // Commit-vector partitions must increase too: two entries (3, 128), (3, 1).
    assert_eq!(
        bad(&|m| {
            m[57] = 2;
            m.extend_from_slice(&[3, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        }),
        rule("commit vector partitions not increasing")
    );
    // Update log turned read-only (has writes), or no-op turned update (no dep).
    assert!(matches!(bad(&|m| m[9] = 1), Some(WireError::BadMessage(_))));
    assert!(matches!(
        bad(&|m| m[51] = 0),
        Some(WireError::BadMessage(_))
    ));
    // A log one byte longer than its contents, or shorter than its header.
    assert_eq!(
        bad(&|m| {
            m[6] += 1;
            m.insert(48, 0);
        }),
        rule("log longer than its contents")
    );
    assert_eq!(
        bad(&|m| m[48] = 7),
        rule("log length shorter than its header")
    );
    // A log length past the end of the message.
    assert_eq!(bad(&|m| m[7] = 1), Some(WireError::Truncated));
    // Value length claiming more bytes than the log has.
    assert_eq!(bad(&|m| m[36] = 0x7f), Some(WireError::Truncated));
    // One more dependency announced than there is room for before the writes: the writes
    // then start inside the second entry and run past the log.
    assert!(bad(&|m| m[10] = 3).is_some());
}

#[test]
fn every_truncation_is_rejected() {
    for cut in 0..MESSAGE.len() {
        assert!(
            MessageView::new_checked(&MESSAGE[..cut]).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn writer_no_room_leaves_the_message() {
    let r = message_repr();
    let mut buf = [0xeeu8; 58];
    let mut w = MessageWriter::new(&mut buf, 5).expect("header fits");
    w.push_log(0, &r.logs[0]).expect("fits");
    let before_len = w.len();
    assert_eq!(w.remaining(), 58 - 48);
    assert_eq!(w.push_log(0, &r.logs[0]), Err(WireError::NoRoom));
    assert_eq!(
        w.push_cv(1, [dep(1, 1), dep(2, 2)].into_iter()),
        Err(WireError::NoRoom)
    );
    assert_eq!(w.len(), before_len);
    w.push_log(1, &r.logs[1]).expect("a no-op log fits");
    let n = w.finish();
    assert_eq!(n, 56);
    let m = MessageView::new_checked(&buf[..n]).expect("valid");
    assert_eq!(m.log_count(), 2);
    assert_eq!(m.cv_count(), 0);

    let mut tiny = [0u8; 5];
    assert_eq!(
        MessageWriter::new(&mut tiny, 0).err(),
        Some(WireError::NoRoom)
    );
}

#[test]
fn writer_message_unchanged_after_failed_push() {
    // A push encodes into the bytes after the message as scratch; failing, it leaves the
    // message as it was.
    let r = message_repr();
    let mut buf = [0xeeu8; 47];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    assert_eq!(w.push_log(0, &r.logs[0]), Err(WireError::NoRoom));
    assert_eq!((w.len(), w.log_count()), (6, 0));
    assert_eq!(w.finish(), 6);
    assert_eq!(buf[..6], [2, 0, 0, 0, 0, 0]);
}

#[test]
fn writer_says_which_rule_a_log_breaks_even_without_room() {
    let mut log = message_repr().logs[0].clone();
    log.deps = vec![dep(5, 0), dep(1, 0)];
    let broken = WireError::BadMessage("log dependency partitions not increasing");
    for room in [6, 20, 200] {
        let mut buf = vec![0u8; room];
        let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
        assert_eq!(w.push_log(0, &log), Err(broken), "room {room}");
        let cv = [dep(2, 0), dep(2, 1)];
        assert!(matches!(
            w.push_cv(0, cv.into_iter()),
            Err(WireError::BadMessage(_))
        ));
        assert_eq!(w.finish(), 6);
    }
}

/// A log whose dependencies' iterator tells a length of `told`.
struct ToldLog {
    log: LogRepr,
    told: usize,
}

impl LogSource for ToldLog {
    fn kind(&self) -> LogKind {
        self.log.kind
    }

    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        // Counted believes the count it is given.
        Counted::new(self.log.deps.iter().copied(), self.told)
    }

    fn writes(&self) -> impl Iterator<Item = ftc_stm::Write<'_>> + '_ {
        self.log.writes()
    }
}

/// Every length of key and value round-trips: the writer copies short ones by fixed-size moves
/// picked by length, and long ones in 16-byte chunks.
#[test]
fn writer_copies_keys_and_values_of_every_length() {
    for key_len in 0..=40usize {
        for value_len in (0..=100usize).map(Some).chain([None]) {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8 ^ 0x5a).collect();
            let value = value_len.map(|n| (0..n).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
            let log = LogRepr {
                middlebox: 3,
                kind: LogKind::Update,
                deps: vec![dep(1, 2)],
                writes: vec![(key, value)],
            };
            let mut buf = vec![0xeeu8; log.buffer_len()];
            assert_eq!(log.emit(&mut buf), Ok(buf.len()));
            let view = LogView::new_checked(&buf).expect("valid");
            assert_eq!(LogRepr::parse(&view), log);
        }
    }
}

#[test]
fn writer_does_not_trust_an_iterator_about_its_length() {
    let log = message_repr().logs[0].clone();
    let mut honest = [0u8; 128];
    let mut w = MessageWriter::new(&mut honest, 0).expect("header fits");
    w.push_log(0, &log).expect("fits");
    let n = w.finish();
    for told in 0..5 {
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
        let pushed = w.push_log(
            0,
            &ToldLog {
                log: log.clone(),
                told,
            },
        );
        if told == log.deps.len() {
            assert_eq!(pushed, Ok(()));
            assert_eq!(w.finish(), n);
            assert_eq!(buf[..n], honest[..n]);
        } else {
            // A log is never sent with dependencies missing or with room it does not have.
            assert!(pushed.is_err(), "told {told}");
            assert_eq!(w.finish(), 6);
        }
    }
    // Entries of unknown number take the other path, to the same bytes.
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    w.push_cv(1, log.deps.iter().copied().filter(|_| true))
        .expect("fits");
    let m = w.finish();
    let cv = MessageView::new_checked(&buf[..m]).expect("valid");
    let cv = cv.commit_vectors().next().expect("one vector");
    assert_eq!(cv.entries().collect::<Vec<_>>(), log.deps);
}

#[test]
fn writer_rejects_rule_breaks() {
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    let mut log = message_repr().logs[0].clone();
    log.deps = vec![dep(5, 0), dep(1, 0)];
    assert!(matches!(w.push_log(0, &log), Err(WireError::BadMessage(_))));
    log.deps.clear();
    assert!(matches!(w.push_log(0, &log), Err(WireError::BadMessage(_))));
    log.deps = vec![dep(1, 1)];
    log.kind = LogKind::ReadOnly;
    assert!(matches!(w.push_log(0, &log), Err(WireError::BadMessage(_))));
    log.writes.clear();
    assert_eq!(w.push_log(0, &log), Ok(()));
    assert!(matches!(
        w.push_cv(0, [dep(2, 0), dep(2, 1)].into_iter()),
        Err(WireError::BadMessage(_))
    ));
    assert!(matches!(
        w.push_log_bytes(&[8, 0, 0, 0, 0, 0, 0, 0]),
        Err(WireError::BadMessage(_))
    ));
    assert!(w.push_cv_bytes(&[0, 1, 0]).is_err());
    assert_eq!(w.log_count(), 1);
    assert_eq!(w.cv_count(), 0);
    let n = w.finish();
    assert!(MessageView::new_checked(&buf[..n]).is_ok());
}

#[test]
fn writer_refuses_a_log_after_a_commit_vector() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    let log = message_repr().logs[0].clone();
    assert_eq!(w.push_cv(1, [dep(0, 3)].into_iter()), Ok(()));
    assert!(matches!(w.push_log(0, &log), Err(WireError::BadMessage(_))));
    assert_eq!(w.log_count(), 0);
    let written = w.finish_written();
    let view = MessageView::written(&buf[..written.len()], written).expect("valid");
    assert_eq!(view.logs().count(), 0);
    assert_eq!(view.commit_vectors().count(), 1);
}

#[test]
fn a_written_view_of_other_bytes_checks_them() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    assert_eq!(w.push_cv(1, [dep(0, 3)].into_iter()), Ok(()));
    let written = w.finish_written();
    let n = written.len();
    // Cut short, or another message of the same length: checked in full, as bytes from outside.
    assert_eq!(
        MessageView::written(&buf[..n - 1], written),
        Err(WireError::Truncated)
    );
    let mut other = buf;
    other[2] = 1;
    assert!(MessageView::written(&other[..n], written).is_err());
}

#[test]
fn a_trusted_view_of_bytes_that_do_not_add_up_checks_them() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    let log = message_repr().logs[0].clone();
    assert_eq!(w.push_log(0, &log), Ok(()));
    let n = w.finish();
    let whole = MessageView::trusted(&buf[..n]).expect("valid");
    assert_eq!(whole.logs().count(), 1);
    // The log's length runs past the bytes, or another version: checked in full.
    assert_eq!(
        MessageView::trusted(&buf[..n - 1]),
        Err(WireError::Truncated)
    );
    let mut other = buf;
    other[0] = 1;
    assert_eq!(
        MessageView::trusted(&other[..n]),
        Err(WireError::BadVersion)
    );
}

#[test]
fn limits_of_the_fixed_width_fields() {
    // A log must fit its u16 length: a 65535-byte value cannot.
    let mut log = message_repr().logs[0].clone();
    log.writes[0].1 = Some(vec![0; 65535]);
    let too_long = WireError::BadMessage("log longer than 65535 bytes");
    assert_eq!(encoded_log_len(&log), Err(too_long));
    let mut buf = vec![0u8; 70_000];
    let mut w = MessageWriter::new(&mut buf, 0).expect("header fits");
    assert_eq!(w.push_log(0, &log), Err(too_long));
    // The largest value that fits: the log is then exactly 65535 bytes.
    let rest = 8 + 2 * 10 + 4 + 3 + 5;
    log.writes[0].1 = Some(vec![7; 65535 - rest]);
    assert_eq!(encoded_log_len(&log), Ok(65535));
    w.push_log(0, &log).expect("fits");
    let n = w.finish();
    let m = MessageView::new_checked(&buf[..n]).expect("valid");
    assert_eq!(
        m.logs().map(|l| LogRepr::parse(&l)).collect::<Vec<_>>(),
        [log]
    );
    // A commit vector holds at most 65535 entries.
    let all = (0..=u16::MAX).map(|p| dep(p, 1));
    assert!(matches!(encoded_cv_len(all), Err(WireError::BadMessage(_))));
    assert_eq!(
        encoded_cv_len((1..=u16::MAX).map(|p| dep(p, 1))),
        Ok(3 + 65535 * 10)
    );
}

#[test]
fn forwarding_by_bytes_equals_pushing_logs() {
    let m = MessageView::new_checked(MESSAGE).expect("valid");
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, m.flags()).expect("fits");
    for log in m.logs() {
        w.push_log_bytes(log.as_bytes()).expect("fits");
    }
    for cv in m.commit_vectors() {
        w.push_cv_bytes(cv.as_bytes()).expect("fits");
    }
    let n = w.finish();
    assert_eq!(&buf[..n], MESSAGE);
}

#[test]
fn logs_that_do_not_fit_go_in_the_next_frame() {
    // The chain protocol's use: fill messages of 95 bytes (two logs of 42), carry on in the
    // next; no log lost.
    let log = message_repr().logs[0].clone();
    let mut sent = 0;
    let mut frames = 0;
    while sent < 10 {
        let mut buf = [0u8; 95];
        let mut w = MessageWriter::new(&mut buf, 0).expect("fits");
        while sent < 10 && w.push_log(0, &log).is_ok() {
            sent += 1;
        }
        let n = w.finish();
        let m = MessageView::new_checked(&buf[..n]).expect("valid");
        assert!(m.logs().all(|l| LogRepr::parse(&l) == log));
        frames += 1;
    }
    assert_eq!(frames, 5);
}

fn edge_seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..300,
        any::<u64>(),
        (0u32..64).prop_map(|s| 1u64 << s),
        Just(u64::MAX),
    ]
}

fn entries(max: usize) -> impl Strategy<Value = Vec<DepEntry>> {
    entries_in(0..max)
}

fn entries_in(size: std::ops::Range<usize>) -> impl Strategy<Value = Vec<DepEntry>> {
    proptest::collection::btree_map(any::<u16>(), edge_seq(), size)
        .prop_map(|m| m.into_iter().map(|(p, s)| dep(p, s)).collect())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn write() -> impl Strategy<Value = (Vec<u8>, Option<Vec<u8>>)> {
    (bytes(20), proptest::option::of(bytes(200)))
}

fn log_repr() -> impl Strategy<Value = LogRepr> {
    prop_oneof![
        (
            any::<u8>(),
            entries_in(1..6),
            proptest::collection::vec(write(), 1..4)
        )
            .prop_map(|(middlebox, deps, writes)| LogRepr {
                middlebox,
                kind: LogKind::Update,
                deps,
                writes
            }),
        (any::<u8>(), entries_in(1..6)).prop_map(|(middlebox, deps)| LogRepr {
            middlebox,
            kind: LogKind::ReadOnly,
            deps,
            writes: vec![]
        }),
        any::<u8>().prop_map(|middlebox| LogRepr {
            middlebox,
            kind: LogKind::Noop,
            deps: vec![],
            writes: vec![]
        }),
    ]
}

fn message_repr_strategy() -> impl Strategy<Value = MessageRepr> {
    (
        any::<u8>(),
        proptest::collection::vec(log_repr(), 0..5),
        proptest::collection::vec(
            (any::<u8>(), entries(8))
                .prop_map(|(middlebox, entries)| CvRepr { middlebox, entries }),
            0..4,
        ),
    )
        .prop_map(|(flags, logs, cvs)| MessageRepr { flags, logs, cvs })
}

fn encode(r: &MessageRepr) -> Vec<u8> {
    let mut buf = vec![0u8; r.buffer_len()];
    let n = r.emit(&mut buf).expect("valid repr fits its buffer_len");
    assert_eq!(n, buf.len());
    buf
}

proptest! {
    #[test]
    fn message_round_trip(r in message_repr_strategy()) {
        let buf = encode(&r);
        let m = MessageView::new_checked(&buf).expect("emitted message is valid");
        prop_assert_eq!(MessageRepr::parse(&m), r.clone());
        prop_assert_eq!(m.logs().len(), r.logs.len());
        for (view, log) in m.logs().zip(&r.logs) {
            prop_assert_eq!(view.as_bytes().len(), log.buffer_len());
            prop_assert_eq!(encoded_log_len(&view), Ok(log.buffer_len()));
            let mut one = vec![0u8; log.buffer_len()];
            prop_assert_eq!(log.emit(&mut one), Ok(one.len()));
            prop_assert_eq!(&one[..], view.as_bytes());
        }
        for (view, cv) in m.commit_vectors().zip(&r.cvs) {
            prop_assert_eq!(view.as_bytes().len(), cv.buffer_len());
            let mut one = vec![0u8; cv.buffer_len()];
            prop_assert_eq!(cv.emit(&mut one), Ok(one.len()));
            prop_assert_eq!(&one[..], view.as_bytes());
        }
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_rejected(r in message_repr_strategy()) {
        let buf = encode(&r);
        for cut in 0..buf.len() {
            prop_assert!(MessageView::new_checked(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn push_that_does_not_fit_leaves_the_message(r in message_repr_strategy(), room in 6usize..400) {
        let mut buf = vec![0xeeu8; room];
        let mut w = MessageWriter::new(&mut buf, r.flags).expect("header fits");
        let mut pushed = MessageRepr { flags: r.flags, ..MessageRepr::default() };
        for log in &r.logs {
            let before = w.len();
            match w.push_log(log.middlebox, log) {
                Ok(()) => pushed.logs.push(log.clone()),
                Err(e) => {
                    prop_assert_eq!(e, WireError::NoRoom);
                    prop_assert_eq!(w.len(), before);
                }
            }
        }
        let n = w.finish();
        prop_assert_eq!(&buf[..n], &encode(&pushed)[..]);
    }

    #[test]
    fn a_written_view_is_the_checked_view(r in message_repr_strategy()) {
        let mut buf = vec![0u8; r.buffer_len()];
        let mut w = MessageWriter::new(&mut buf, r.flags).expect("header fits");
        for log in &r.logs {
            prop_assert_eq!(w.push_log(log.middlebox, log), Ok(()));
        }
        for cv in &r.cvs {
            prop_assert_eq!(w.push_cv(cv.middlebox, cv.entries.iter().copied()), Ok(()));
        }
        let written = w.finish_written();
        let bytes = &buf[..written.len()];
        prop_assert_eq!(bytes, &encode(&r)[..]);
        prop_assert_eq!(MessageView::written(bytes, written), MessageView::new_checked(bytes));
        prop_assert_eq!(MessageView::trusted(bytes), MessageView::new_checked(bytes));
    }

    #[test]
    fn checked_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        walk(&bytes);
    }

    #[test]
    fn checked_never_panics_near_valid(
        r in message_repr_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut buf = encode(&r);
        for (i, v) in edits {
            let i = i.index(buf.len());
            buf[i] = v;
        }
        walk(&buf);
    }
}

/// Walks whatever parses, and checks parse → repr → emit gives back the same bytes.
fn walk(bytes: &[u8]) {
    let Ok(m) = MessageView::new_checked(bytes) else {
        return;
    };
    let mut n = 0usize;
    for log in m.logs() {
        n += log
            .deps()
            .map(|d| usize::from(d.partition.0))
            .sum::<usize>();
        n += log.writes().map(|w| w.key.len()).sum::<usize>();
    }
    for cv in m.commit_vectors() {
        n += cv.entries().count();
    }
    std::hint::black_box(n);
    assert_eq!(encode(&MessageRepr::parse(&m)), bytes);
}
