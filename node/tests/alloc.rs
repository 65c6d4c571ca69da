//! The in-process runtime's data path allocates per batch, not per packet: a customer packet's
//! bytes and its message travel the chain in buffers that come back to where they are written
//! (the generator, the forwarder's server) instead of being freed on one thread and allocated
//! again on another. Counted with a counting allocator, in both modes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ftc_node::runtime::{run_chain, RunConfig};
use ftc_node::Mode;

mod support;
use support::{assert_all_released, spec};

/// The system allocator, counting allocations of at least [`BIG`] bytes (what a packet or a
/// message buffer takes; small bookkeeping is not counted).
struct Counting;

static BIG_ALLOCS: AtomicU64 = AtomicU64::new(0);
const BIG: usize = 256;

// SAFETY: every call goes to the system allocator unchanged; the counter has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BIG {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= BIG {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn packets_and_messages_are_not_allocated_per_packet() {
    for name in ["ch-3.toml", "ch-rec.toml"] {
        for mode in [Mode::Ftc, Mode::Nf] {
            let config = RunConfig {
                mode,
                duration: Duration::from_secs(30),
                packets: Some(100_000),
                ..RunConfig::default()
            };
            let spec = spec(name);
            let before = BIG_ALLOCS.load(Ordering::Relaxed);
            let r = run_chain(&spec, &config);
            let allocs = BIG_ALLOCS.load(Ordering::Relaxed) - before;
            assert_all_released(&r, &format!("{name} in {mode:?}"));
            let per_packet = allocs as f64 / r.packets_released as f64;
            eprintln!(
                "{name} {mode:?}: {allocs} allocations of {BIG} bytes or more for {} packets",
                r.packets_released
            );
            assert!(
                per_packet < 0.5,
                "{name} in {mode:?}: {allocs} allocations of {BIG} bytes or more for {} packets",
                r.packets_released
            );
        }
    }
}
