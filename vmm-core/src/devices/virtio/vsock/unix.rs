//! The Firecracker-compatible hybrid vsock Unix socket.
//!
//! A listening socket at `uds_path`. A host program connects and writes
//! `CONNECT <port>\n`; the muxer opens a connection to that guest port and,
//! once the guest accepts, writes `OK <host_port>\n` on the same stream, which
//! then carries the connection's bytes. For guest-initiated connections to
//! host port P, the muxer connects to `<uds_path>_P` (a socket some host
//! program listens on); if nobody listens the guest gets an RST.
//!
//! This module only handles the sockets and the handshake line; the muxer
//! owns the epoll registration and the connections.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::defs::{MAX_HANDSHAKE_LINE, MAX_PENDING_HANDSHAKES};

/// How long a client may take to send its `CONNECT` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parse `CONNECT <port>` (with its line end already stripped or not).
pub fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\n', '\r']);
    let mut words = text.split(' ');
    if words.next()? != "CONNECT" {
        return None;
    }
    let port = words.next()?.parse().ok()?;
    words.next().is_none().then_some(port)
}

/// Where a client's handshake stands after a read.
#[derive(Debug)]
pub enum Handshake {
    /// The line is not complete yet.
    Pending,
    /// The client asked for this guest port.
    Connect(UnixStream, u32),
    /// The client went away or sent garbage; it has been dropped.
    Failed,
}

struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
    since: Instant,
}

/// The hybrid socket backend.
pub struct HybridSocket {
    path: PathBuf,
    listener: UnixListener,
    pending: HashMap<RawFd, Pending>,
}

impl HybridSocket {
    /// Listen at `path`. A stale socket file there is replaced; any other
    /// file is left alone and reported.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            path: path.to_path_buf(),
            listener,
            pending: HashMap::new(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening fd (for epoll).
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Accept every waiting client; returns the fds of new handshakes to
    /// watch. Clients beyond [`MAX_PENDING_HANDSHAKES`] are closed at once.
    pub fn accept_all(&mut self) -> Vec<RawFd> {
        let mut fresh = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.pending.len() >= MAX_PENDING_HANDSHAKES
                        || stream.set_nonblocking(true).is_err()
                    {
                        log::warn!("vsock: too many hybrid-socket handshakes; client dropped");
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    self.pending.insert(
                        fd,
                        Pending {
                            stream,
                            line: Vec::new(),
                            since: Instant::now(),
                        },
                    );
                    fresh.push(fd);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        log::warn!("vsock: accept on {}: {e}", self.path.display());
                    }
                    return fresh;
                }
            }
        }
    }

    /// Whether `fd` is a client still in its handshake.
    pub fn is_pending(&self, fd: RawFd) -> bool {
        self.pending.contains_key(&fd)
    }

    /// Read what the client `fd` sent of its line. Reads a byte at a time so
    /// nothing after the line end is consumed.
    pub fn read_handshake(&mut self, fd: RawFd) -> Handshake {
        let Some(p) = self.pending.get_mut(&fd) else {
            return Handshake::Failed;
        };
        let mut byte = [0u8; 1];
        loop {
            match p.stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => {
                    p.line.push(byte[0]);
                    if byte[0] == b'\n' {
                        break;
                    }
                    if p.line.len() >= MAX_HANDSHAKE_LINE {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Handshake::Pending,
                Err(_) => break,
            }
        }
        let Some(p) = self.pending.remove(&fd) else {
            return Handshake::Failed;
        };
        if p.line.last() != Some(&b'\n') {
            return Handshake::Failed;
        }
        match parse_connect_line(&p.line) {
            Some(port) => Handshake::Connect(p.stream, port),
            None => {
                log::debug!(
                    "vsock: bad hybrid handshake {:?}",
                    String::from_utf8_lossy(&p.line)
                );
                Handshake::Failed
            }
        }
    }

    /// Drop handshakes older than [`HANDSHAKE_TIMEOUT`]; returns their fds
    /// (already closed) so the caller can forget them.
    pub fn expire(&mut self, now: Instant) -> Vec<RawFd> {
        let old: Vec<RawFd> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) > HANDSHAKE_TIMEOUT)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in &old {
            self.pending.remove(fd);
        }
        old
    }

    /// When the oldest handshake expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.since + HANDSHAKE_TIMEOUT)
            .min()
    }

    /// Connect to `<uds_path>_<port>` for a guest-initiated connection,
    /// without blocking (a full backlog counts as refused).
    pub fn connect_guest_port(&self, port: u32) -> std::io::Result<UnixStream> {
        let mut target = self.path.clone().into_os_string();
        target.push(format!("_{port}"));
        connect_nonblocking(Path::new(&target))
    }
}

impl Drop for HybridSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A non-blocking `connect(2)` to a Unix socket path.
pub fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; OwnedFd closes it on every path.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, initialized sockaddr_un of `len` bytes and
    // `fd` is an open socket.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 1024\n"), Some(1024));
        assert_eq!(parse_connect_line(b"CONNECT 52\r\n"), Some(52));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295\n"), Some(u32::MAX));
        for bad in [
            &b"CONNECT\n"[..],
            b"CONNECT 4294967296\n",
            b"connect 5\n",
            b"CONNECT -1\n",
            b"CONNECT 5 6\n",
            b"CONNECT  5\n",
            b"\xff\xfe\n",
            b"",
        ] {
            assert_eq!(parse_connect_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn handshake_over_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("ember-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        // A stale socket file (its listener gone) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let mut h = HybridSocket::bind(&path).unwrap();

        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"CONN").unwrap();
        let fds = h.accept_all();
        assert_eq!(fds.len(), 1);
        assert!(matches!(h.read_handshake(fds[0]), Handshake::Pending));
        c.write_all(b"ECT 77\nDATA").unwrap();
        match h.read_handshake(fds[0]) {
            Handshake::Connect(mut s, 77) => {
                // The data after the line is still in the socket.
                s.set_nonblocking(false).unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).unwrap();
                assert_eq!(&b, b"DATA");
            }
            other => panic!("{other:?}"),
        }
        let mut bad = UnixStream::connect(&path).unwrap();
        bad.write_all(b"HELLO\n").unwrap();
        let fds = h.accept_all();
        assert!(matches!(h.read_handshake(fds[0]), Handshake::Failed));

        // Guest-initiated: nobody at path_5 → refused; a listener → connected.
        assert!(h.connect_guest_port(5).is_err());
        let mut side = path.clone().into_os_string();
        side.push("_5");
        let l = UnixListener::bind(&side).unwrap();
        let s = h.connect_guest_port(5).unwrap();
        drop(s);
        drop(l);
        drop(h);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
