//! `Sync`: fresh entropy and the wall-clock time for a (restored) guest.
//!
//! Snapshot clones resume with the same RNG state and the clock of the
//! moment the snapshot was taken. The host's entropy is mixed in with
//! `RNDADDENTROPY` (credited) and `RNDRESEEDCRNG` forces the CRNG to
//! reseed at once; `clock_settime(CLOCK_REALTIME)` sets the clock. Only a
//! PID 1 agent does this: a test server on a host must not touch the
//! host's clock or RNG, and answers that it did nothing.

use std::ffi::CString;

use embervm_protocol::{ErrorKind, ErrorReply, Response, WallClock};

/// `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
/// Most entropy bytes accepted in one `Sync`.
pub const MAX_ENTROPY: usize = 4096;

/// Apply a `Sync` request; `allowed` is false on a test server.
pub fn apply(entropy: &[u8], clock: WallClock, allowed: bool) -> Result<Response, ErrorReply> {
    if entropy.len() > MAX_ENTROPY {
        return Err(ErrorReply::new(
            ErrorKind::TooLarge,
            format!("{} entropy bytes, at most {MAX_ENTROPY}", entropy.len()),
        ));
    }
    if clock.nanos >= 1_000_000_000 {
        return Err(ErrorReply::new(
            ErrorKind::BadRequest,
            format!("wall clock nanos {} out of range", clock.nanos),
        ));
    }
    if !allowed {
        return Ok(Response::Synced {
            entropy_added: false,
            clock_set: false,
        });
    }
    if !entropy.is_empty() {
        add_entropy(entropy)
            .map_err(|e| ErrorReply::new(ErrorKind::Io, format!("cannot add entropy: {e}")))?;
    }
    set_clock(clock)
        .map_err(|e| ErrorReply::new(ErrorKind::Io, format!("cannot set the clock: {e}")))?;
    Ok(Response::Synced {
        entropy_added: !entropy.is_empty(),
        clock_set: true,
    })
}

fn add_entropy(bytes: &[u8]) -> std::io::Result<()> {
    let path = CString::new("/dev/urandom").map_err(std::io::Error::other)?;
    // SAFETY: `path` is NUL-terminated; the fd is checked and closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // struct rand_pool_info { int entropy_count; int buf_size; u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    let bits = (bytes.len() * 8) as libc::c_int;
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as libc::c_int).to_ne_bytes());
    info.extend_from_slice(bytes);
    // SAFETY: `info` is a rand_pool_info of buf_size bytes of payload; the
    // kernel copies it in and keeps no pointer.
    let mut rc = unsafe { libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) };
    if rc == 0 {
        // SAFETY: RNDRESEEDCRNG takes no argument.
        rc = unsafe { libc::ioctl(fd, RNDRESEEDCRNG as _) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err);
    }
    Ok(())
}

fn set_clock(clock: WallClock) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: clock.secs as libc::time_t,
        tv_nsec: clock.nanos as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_values_and_does_nothing_when_not_allowed() {
        let t = WallClock { secs: 1, nanos: 0 };
        assert_eq!(
            apply(b"abc", t, false).ok(),
            Some(Response::Synced {
                entropy_added: false,
                clock_set: false
            })
        );
        let bad = WallClock {
            secs: 1,
            nanos: 1_000_000_000,
        };
        assert_eq!(
            apply(b"", bad, false).map_err(|e| e.kind),
            Err(ErrorKind::BadRequest)
        );
        let big = vec![0u8; MAX_ENTROPY + 1];
        assert_eq!(
            apply(&big, t, false).map_err(|e| e.kind),
            Err(ErrorKind::TooLarge)
        );
    }
}
