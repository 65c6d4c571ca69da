//! The chain spec loader over arbitrary text: it accepts or rejects with a located error, never
//! panics, and what it accepts is a chain whose ring can be built.
#![no_main]

use ftc_chain::spec::ChainSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = ChainSpec::from_toml_str(text, "fuzz.toml") {
        assert!(spec.try_ring().is_ok());
    }
});
