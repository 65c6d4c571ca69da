//! The thesis's chains (Table 4.1) as the specs in `specs/`, built into the binary and loaded
//! through the spec loader, with the knobs the experiments turn. Each knob edits the spec's
//! TOML, so that a lab's nodes, which read specs from files, read the chain that ran.

use ftc_chain::spec::{ChainSpec, MiddleboxKind, SpecError};
use toml::{Table, Value};

/// A chain as an experiment runs it: its spec, and the TOML it was loaded from.
#[derive(Debug, Clone)]
pub struct Chain {
    pub spec: ChainSpec,
    pub text: String,
}

/// The text of `specs/NAME.toml` of this repository.
fn text(name: &str) -> &'static str {
    match name {
        "ch-2" => include_str!("../../specs/ch-2.toml"),
        "ch-3" => include_str!("../../specs/ch-3.toml"),
        "ch-4" => include_str!("../../specs/ch-4.toml"),
        "ch-5" => include_str!("../../specs/ch-5.toml"),
        "ch-gen" => include_str!("../../specs/ch-gen.toml"),
        "ch-rec" => include_str!("../../specs/ch-rec.toml"),
        "mazu-nat" => include_str!("../../specs/mazu-nat.toml"),
        _ => unreachable!("no built-in spec {name}"),
    }
}

/// The spec `specs/NAME.toml` of this repository with `edit` made to its TOML.
fn builtin(name: &str, edit: impl FnOnce(&mut Table)) -> Result<Chain, SpecError> {
    let mut table: Table = text(name).parse().expect("a built-in spec is TOML");
    edit(&mut table);
    let text = table.to_string();
    let spec = ChainSpec::from_toml_str(&text, &format!("specs/{name}.toml, edited"))?;
    Ok(Chain { spec, text })
}

/// The `[[middlebox]]` tables of a spec.
fn middleboxes(table: &mut Table) -> impl Iterator<Item = &mut Table> {
    let list = match table.get_mut("middlebox") {
        Some(Value::Array(list)) => list.as_mut_slice(),
        _ => &mut [],
    };
    list.iter_mut().filter_map(Value::as_table_mut)
}

/// Sets `key` of the `[chain]` table.
fn set_chain(table: &mut Table, key: &str, value: Value) {
    if let Some(Value::Table(chain)) = table.get_mut("chain") {
        chain.insert(key.into(), value);
    }
}

/// Every middlebox on `threads` worker threads.
fn set_threads(table: &mut Table, threads: u16) {
    for m in middleboxes(table) {
        m.insert("threads".into(), Value::Integer(i64::from(threads)));
    }
}

/// Ch-2 … Ch-5: `n` monitors (2 to 5), tolerating `f` failures.
pub fn ch_n(n: usize, f: u8) -> Result<Chain, SpecError> {
    builtin(&format!("ch-{n}"), |t| {
        set_chain(t, "f", Value::Integer(i64::from(f)))
    })
}

/// Ch-Gen with every Gen writing `state_size` bytes per packet.
pub fn ch_gen(state_size: u32) -> Result<Chain, SpecError> {
    builtin("ch-gen", |t| {
        for m in middleboxes(t) {
            m.insert("state_size".into(), Value::Integer(i64::from(state_size)));
        }
    })
}

/// Ch-Rec: Firewall → Monitor → SimpleNAT.
pub fn ch_rec() -> Result<Chain, SpecError> {
    builtin("ch-rec", |_| {})
}

/// A single MazuNAT on `threads` worker threads.
pub fn mazu_nat(threads: u16) -> Result<Chain, SpecError> {
    builtin("mazu-nat", |t| set_threads(t, threads))
}

/// A single Monitor (the first of Ch-2) on `threads` worker threads, its counters shared at
/// `sharing_level` (`None`: per-flow counters).
pub fn monitor(sharing_level: Option<u16>, threads: u16) -> Result<Chain, SpecError> {
    builtin("ch-2", |t| {
        set_chain(t, "name", Value::String("monitor".into()));
        if let Some(Value::Array(list)) = t.get_mut("middlebox") {
            list.truncate(1);
        }
        set_threads(t, threads);
        for m in middleboxes(t) {
            match sharing_level {
                Some(level) => m.insert("sharing_level".into(), Value::Integer(i64::from(level))),
                None => m.insert("counters".into(), Value::String("per-flow".into())),
            };
        }
    })
}

/// The ring position of the first NAT of `spec` (the server that runs it).
pub fn nat_position(spec: &ChainSpec) -> Option<u16> {
    spec.middlebox
        .iter()
        .position(|m| {
            matches!(
                m.kind,
                MiddleboxKind::SimpleNat(_) | MiddleboxKind::MazuNat(_)
            )
        })
        .map(|i| i as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftc_chain::spec::CounterMode;

    #[test]
    fn the_knobs_turn_what_they_say() {
        let ch5 = ch_n(5, 4).unwrap();
        assert_eq!((ch5.spec.middlebox.len(), ch5.spec.chain.f), (5, 4));
        let gen = ch_gen(96).unwrap();
        assert!(gen.spec.middlebox.iter().all(|m| matches!(
            &m.kind,
            MiddleboxKind::Gen(g) if g.state_size == 96
        )));
        let nat = mazu_nat(4).unwrap();
        assert_eq!(nat.spec.middlebox[0].threads, 4);
        assert_eq!(nat_position(&nat.spec), Some(0));
        for (sharing, counters) in [(Some(2), CounterMode::Shared), (None, CounterMode::PerFlow)] {
            let m = monitor(sharing, 2).unwrap();
            assert_eq!(
                (m.spec.chain.name.as_str(), m.spec.middlebox.len()),
                ("monitor", 1)
            );
            let MiddleboxKind::Monitor(c) = &m.spec.middlebox[0].kind else {
                panic!("a monitor")
            };
            assert_eq!((m.spec.middlebox[0].threads, c.counters), (2, counters));
            assert_eq!(c.sharing_level, sharing.unwrap_or(1));
        }
        // What a lab's node reads is the chain that ran.
        for chain in [ch5, gen, nat, ch_rec().unwrap()] {
            assert_eq!(
                ChainSpec::from_toml_str(&chain.text, "t").unwrap(),
                chain.spec
            );
        }
    }
}
