//! The forwarder's sanitization and classification of frames from outside the chain: no input
//! may panic, and a frame that carries FTC's NSH context is never accepted.
#![no_main]

use ftc_chain::wire::carries_ftc_context;
use ftc_forwarder::{classify, Ingress, Port};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for port in [Port::Inside, Port::Outside] {
        let verdict = classify(data, port);
        if carries_ftc_context(data) {
            assert!(
                matches!(verdict, Ingress::Reject(_)),
                "an FTC frame from outside was accepted"
            );
        }
    }
});
