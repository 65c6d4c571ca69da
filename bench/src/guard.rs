//! A run that panics (a server thread's panic, which the runtime passes on when it joins the
//! thread) fails that run only: the benchmark records it with its point and goes on, instead of
//! losing every result measured so far.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// `run`'s value, or what it panicked with.
pub fn catch<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    // A run's panic leaves nothing of the caller's half-changed: the caller only reads the
    // point and configuration a run borrows.
    catch_unwind(AssertUnwindSafe(run)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        format!("the run panicked: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_the_run_failing() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> u8 { panic!("a server thread panicked") }),
            Err("the run panicked: a server thread panicked".to_string())
        );
        let n = 3;
        assert_eq!(
            catch(|| -> u8 { panic!("lane {n} stuck") }),
            Err("the run panicked: lane 3 stuck".to_string())
        );
    }
}
