//! Every built-in middlebox over arbitrary customer frames, in both directions, inside real
//! packet transactions, two frames over one store: no input may panic, and a frame never grows
//! past its buffer.
#![no_main]

use std::sync::OnceLock;

use ftc_chain::middlebox::{process_packet, Ctx, Direction, Frame, Middlebox};
use ftc_chain::middleboxes;
use ftc_chain::spec::ChainSpec;
use ftc_stm::Store;
use libfuzzer_sys::fuzz_target;

const SPEC: &str = r#"
[chain]
name = "fuzz"
f = 1
partitions = 8

[[middlebox]]
kind = "firewall"
allow_established = true
rules = [{ action = "deny", proto = "udp", dport = "53" }, { action = "allow", src = "10.0.0.0/8" }]

[[middlebox]]
kind = "monitor"
counters = "per-flow"

[[middlebox]]
kind = "simple-nat"
public_ip = "203.0.113.1"
ports = "10000-10003"

[[middlebox]]
kind = "mazu-nat"
public_ip = "203.0.113.2"
ports = "20000-20003"
udp_timeout = 1

[[middlebox]]
kind = "gen"
state_size = 40

[[middlebox]]
kind = "load-balancer"
vip = "198.51.100.10"
backends = ["10.1.0.1", "10.1.0.2"]
"#;

fn middleboxes() -> &'static [Box<dyn Middlebox>] {
    static MBS: OnceLock<Vec<Box<dyn Middlebox>>> = OnceLock::new();
    MBS.get_or_init(|| {
        let spec = ChainSpec::from_toml_str(SPEC, "fuzz").expect("the fuzz spec is valid");
        spec.middlebox.iter().map(middleboxes::build).collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the time, the second where the first frame ends: two frames, each
    // through every middlebox in both directions, over one store, so that the second may meet
    // the state the first made (a reply of its connection, an ICMP error quoting it as a NAT
    // sent it out).
    let Some((&[ctl, split], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(split).min(rest.len()));
    let store = Store::new(8, 1).expect("valid store");
    let mut worker = store.worker(0).expect("worker 0");
    let mut scratch = Vec::new();
    for frame in [first, second] {
        for mb in middleboxes() {
            for dir in [Direction::Outbound, Direction::Inbound] {
                let mut buf = frame.to_vec();
                buf.resize(frame.len() + 64, 0);
                let mut f = Frame::new(&mut buf, frame.len()).expect("fits");
                let ctx = Ctx {
                    worker: 0,
                    now_ns: u64::from(ctl) * 1_000_000_000,
                    direction: dir,
                };
                let _ =
                    process_packet(&mut worker, mb.as_ref(), &mut f, &ctx, &mut scratch, |_| ());
                assert!(f.len() <= f.capacity());
            }
        }
    }
});
