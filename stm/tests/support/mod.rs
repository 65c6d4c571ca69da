//! Test support: an owned piggyback log, what would travel on the wire.

use ftc_stm::{CommitRecord, DepEntry, LogKind, LogSource, Write};

#[derive(Debug, Clone)]
pub struct OwnedLog {
    pub kind: LogKind,
    pub deps: Vec<DepEntry>,
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl From<&CommitRecord<'_>> for OwnedLog {
    fn from(r: &CommitRecord<'_>) -> Self {
        OwnedLog {
            kind: r.kind(),
            deps: r.deps().collect(),
            writes: r
                .writes()
                .map(|w| (w.key.to_vec(), w.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

impl LogSource for OwnedLog {
    fn kind(&self) -> LogKind {
        self.kind
    }
    fn deps(&self) -> impl Iterator<Item = DepEntry> + Clone + '_ {
        self.deps.iter().copied()
    }
    fn writes(&self) -> impl Iterator<Item = Write<'_>> + '_ {
        self.writes.iter().map(|(k, v)| Write {
            key: k,
            value: v.as_deref(),
        })
    }
}
