//! Where connections come from: AF_VSOCK in the guest, a Unix socket for
//! host-side tests. Both hand out a connection as a reader and a writer
//! over the same socket (two handles), so one thread can read requests
//! while others write answers.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// One accepted connection: its read half and its write half.
pub struct Conn {
    /// Reads requests.
    pub reader: Box<dyn Read + Send>,
    /// Writes answers (shared behind a lock by the connection).
    pub writer: Box<dyn Write + Send>,
    /// The socket both halves use (owned by them), for socket options.
    pub fd: std::os::fd::RawFd,
}

/// Bound every read on socket `fd` by `timeout` (`None`: no bound). A read
/// that times out fails with `WouldBlock`.
pub fn set_read_timeout(
    fd: std::os::fd::RawFd,
    timeout: Option<std::time::Duration>,
) -> io::Result<()> {
    let tv = match timeout {
        Some(t) => libc::timeval {
            tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        },
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: `tv` is a valid timeval and the length matches it; `fd` is a
    // socket kept open by the connection's reader and writer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A listening socket.
pub enum Listener {
    /// AF_VSOCK, any CID.
    Vsock(OwnedFd),
    /// A Unix stream socket (tests on the host).
    Unix(UnixListener),
}

impl Listener {
    /// Listen on vsock `port` for any CID.
    pub fn vsock(port: u32) -> io::Result<Listener> {
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        // SAFETY: `addr` is a valid sockaddr_vm and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a bound stream socket.
        if unsafe { libc::listen(fd, 128) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Listener::Vsock(owned))
    }

    /// Listen on a Unix socket at `path`, replacing a stale socket file.
    pub fn unix(path: &Path) -> io::Result<Listener> {
        let _ = std::fs::remove_file(path);
        UnixListener::bind(path).map(Listener::Unix)
    }

    /// Wait for the next connection.
    pub fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                let w = s.try_clone()?;
                use std::os::fd::AsRawFd;
                let fd = s.as_raw_fd();
                Ok(Conn {
                    reader: Box::new(s),
                    writer: Box::new(w),
                    fd,
                })
            }
            Listener::Vsock(fd) => {
                use std::os::fd::AsRawFd;
                let c = loop {
                    // SAFETY: null address pointers are allowed by accept4;
                    // the result is checked.
                    let c = unsafe {
                        libc::accept4(
                            fd.as_raw_fd(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    if c >= 0 {
                        break c;
                    }
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                };
                // SAFETY: `c` is a fresh connected socket nobody else owns.
                // A File is only used for read(2)/write(2) on it.
                let file = File::from(unsafe { OwnedFd::from_raw_fd(c) });
                let w = file.try_clone()?;
                Ok(Conn {
                    reader: Box::new(file),
                    writer: Box::new(w),
                    fd: c,
                })
            }
        }
    }
}
