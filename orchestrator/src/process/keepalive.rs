//! Control connections that notice a peer gone without a word: a host that lost power, or a
//! network that split, sends no FIN or RST, and a connection left as it is would wait for one
//! forever. The kernel probes a quiet connection (TCP keepalive), and gives up on one whose
//! data stays unacknowledged ([`USER_TIMEOUT`]); the read or write then fails as for a closed
//! connection: a node takes its orchestrator for gone and exits, as it does when the
//! orchestrator's process ends (it was cut off and replaced meanwhile: the orchestrator did not
//! hear its heartbeats either), and the orchestrator closes the connection.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How long sent data may stay unacknowledged, or a quiet connection unanswered to its probes,
/// before the connection is taken for broken.
pub const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// A quiet connection is probed after this long, then every as long.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Make `stream` fail once its peer stops answering for [`USER_TIMEOUT`].
pub fn keep_alive(stream: &TcpStream) -> io::Result<()> {
    let probes = USER_TIMEOUT.as_secs() / PROBE_EVERY.as_secs();
    let every = PROBE_EVERY.as_secs() as libc::c_int;
    set(stream, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(stream, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, every)?;
    set(stream, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, every)?;
    set(
        stream,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        probes as libc::c_int,
    )?;
    let ms = USER_TIMEOUT.as_millis() as libc::c_int;
    set(stream, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// Set an integer socket option.
fn set(
    stream: &TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a c_int option value that outlives the call, on a descriptor `stream` keeps open.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// An integer socket option's value.
    fn get(stream: &TcpStream, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a c_int and its length, both outliving the call, on an open descriptor.
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn a_kept_alive_connection_probes_and_gives_up_after_the_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(get(&stream, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        keep_alive(&stream).unwrap();
        assert_eq!(get(&stream, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(&stream, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 1);
        assert_eq!(get(&stream, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 1);
        assert_eq!(get(&stream, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 10);
        assert_eq!(
            get(&stream, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            10_000
        );
    }
}
