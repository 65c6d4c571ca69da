//! The thesis's chains (Table 4.1) as the specs in `specs/`, built into the binary and loaded
//! through the spec loader, with the knobs the experiments turn.

use ftc_chain::spec::{ChainSpec, MiddleboxKind, SpecError};

/// The text of `specs/NAME.toml` of this repository.
pub fn text(name: &str) -> &'static str {
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

/// The spec `specs/NAME.toml` of this repository.
fn builtin(name: &str) -> Result<ChainSpec, SpecError> {
    ChainSpec::from_toml_str(text(name), &format!("specs/{name}.toml"))
}

/// Spec text `text` (valid) with `f` failures tolerated: what a lab's nodes read of
/// [`with_f`]'s spec.
pub fn text_with_f(text: &str, f: u8) -> String {
    let mut table: toml::Table = text.parse().expect("a built-in spec is TOML");
    if let Some(toml::Value::Table(chain)) = table.get_mut("chain") {
        chain.insert("f".into(), toml::Value::Integer(i64::from(f)));
    }
    table.to_string()
}

/// Ch-2 … Ch-5: `n` monitors (2 to 5).
pub fn ch_n(n: usize) -> Result<ChainSpec, SpecError> {
    builtin(&format!("ch-{n}"))
}

/// Ch-Gen with every Gen writing `state_size` bytes per packet.
pub fn ch_gen(state_size: u32) -> Result<ChainSpec, SpecError> {
    let mut spec = builtin("ch-gen")?;
    for m in &mut spec.middlebox {
        if let MiddleboxKind::Gen(g) = &mut m.kind {
            g.state_size = state_size;
        }
    }
    spec.validate()?;
    Ok(spec)
}

/// Ch-Rec: Firewall → Monitor → SimpleNAT.
pub fn ch_rec() -> Result<ChainSpec, SpecError> {
    builtin("ch-rec")
}

/// A single MazuNAT.
pub fn mazu_nat(threads: u16) -> Result<ChainSpec, SpecError> {
    with_threads(builtin("mazu-nat")?, threads)
}

/// `spec` with every middlebox on `threads` worker threads.
pub fn with_threads(mut spec: ChainSpec, threads: u16) -> Result<ChainSpec, SpecError> {
    for m in &mut spec.middlebox {
        m.threads = threads;
    }
    spec.validate()?;
    Ok(spec)
}

/// A single Monitor (the first of Ch-2) on `threads` worker threads, its counters shared at
/// `sharing_level` (`None`: per-flow counters).
pub fn monitor(sharing_level: Option<u16>, threads: u16) -> Result<ChainSpec, SpecError> {
    let mut spec = ch_n(2)?;
    spec.chain.name = "monitor".to_string();
    spec.middlebox.truncate(1);
    for m in &mut spec.middlebox {
        m.threads = threads;
        if let MiddleboxKind::Monitor(c) = &mut m.kind {
            match sharing_level {
                Some(level) => c.sharing_level = level,
                None => c.counters = ftc_chain::spec::CounterMode::PerFlow,
            }
        }
    }
    spec.validate()?;
    Ok(spec)
}

/// `spec` tolerating `f` failures.
pub fn with_f(mut spec: ChainSpec, f: u8) -> Result<ChainSpec, SpecError> {
    spec.chain.f = f;
    spec.validate()?;
    Ok(spec)
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
