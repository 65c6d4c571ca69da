//! libxdp's and libbpf's messages, which they print on stderr by default, as `tracing` events
//! instead: their warnings (fallbacks such as "no bpffs, loading a single program") at info
//! level, their information at debug level, their debug output at trace level. A failure that
//! matters reaches the caller as an [`XdpError`](super::XdpError) anyway. Only on x86_64, where
//! a C `va_list` argument is a plain pointer that can be handed on to `vsnprintf`; elsewhere the
//! libraries keep printing on stderr.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

/// Route the libraries' messages to `tracing` (once per process).
pub(super) fn route() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the setters only store the pointers, to functions that live as long as the
        // program and have the signatures the libraries call them with.
        unsafe {
            libxdp_sys::libxdp_set_print(Some(libxdp_message));
            libbpf_sys::libbpf_set_print(Some(libbpf_message));
        }
    });
}

extern "C" {
    fn vsnprintf(buf: *mut c_char, size: usize, format: *const c_char, ap: *mut c_void) -> c_int;
}

unsafe extern "C" fn libxdp_message(
    level: libxdp_sys::libxdp_print_level,
    format: *const c_char,
    ap: *mut libxdp_sys::__va_list_tag,
) -> c_int {
    // SAFETY: libxdp calls with a printf format and the va_list of its arguments.
    unsafe { emit("libxdp", level, format, ap.cast()) }
}

unsafe extern "C" fn libbpf_message(
    level: libbpf_sys::libbpf_print_level,
    format: *const c_char,
    ap: *mut libbpf_sys::__va_list_tag,
) -> c_int {
    // SAFETY: libbpf calls with a printf format and the va_list of its arguments.
    unsafe { emit("libbpf", level, format, ap.cast()) }
}

/// Format one message and emit it; `level` is 0 (warning), 1 (information) or 2 (debug) in both
/// libraries.
///
/// # Safety
/// `format` is a printf format string and `ap` the va_list of its arguments.
unsafe fn emit(lib: &str, level: u32, format: *const c_char, ap: *mut c_void) -> c_int {
    let mut buf = [0 as c_char; 512];
    // SAFETY: `buf` has `buf.len()` writable bytes, and vsnprintf writes no more, the closing NUL
    // included; `format` and `ap` are as the caller promises.
    let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), format, ap) };
    if n < 0 {
        return n;
    }
    // SAFETY: vsnprintf NUL-terminated `buf`.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let text = text.trim_end();
    match level {
        0 => tracing::info!("{lib}: {text}"),
        1 => tracing::debug!("{lib}: {text}"),
        _ => tracing::trace!("{lib}: {text}"),
    }
    n
}
