//! One connection to the agent, with the host's own deadlines.
//!
//! [`TimedStream`] wraps the vsock [`UnixStream`]: before every read and
//! write it sets the socket timeout to what is left of the current
//! [`Deadline`] (an absolute deadline, an idle timeout per operation, or
//! both), so a guest that stops answering cannot hold the caller past it.
//! When it fires, the stream reports [`std::io::ErrorKind::TimedOut`] and
//! records that it did ([`Deadline::expired`]), which the sandbox turns into
//! killing the VM. The protocol client ([`AgentClient`]) needs no knowledge
//! of any of it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embervm_protocol::AgentClient;

/// The current limits of one connection.
#[derive(Default)]
pub struct Deadline {
    limits: Mutex<(Option<Instant>, Option<Duration>)>,
    expired: AtomicBool,
}

impl Deadline {
    /// Set an absolute deadline and/or an idle timeout per read or write.
    pub fn set(&self, at: Option<Instant>, idle: Option<Duration>) {
        if let Ok(mut l) = self.limits.lock() {
            *l = (at, idle);
        }
    }

    /// Whether a read or write gave up because a limit passed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// The socket timeout for the next operation, or `TimedOut` if none is
    /// left.
    fn next(&self) -> io::Result<Option<Duration>> {
        let (at, idle) = self.limits.lock().map(|l| *l).unwrap_or((None, None));
        let left = match at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.fire());
                }
                Some(idle.map_or(left, |i| i.min(left)))
            }
            None => idle,
        };
        Ok(left)
    }

    fn fire(&self) -> io::Error {
        self.expired.store(true, Ordering::Release);
        io::Error::new(io::ErrorKind::TimedOut, "host deadline passed")
    }
}

/// A vsock stream whose reads and writes obey a [`Deadline`].
pub struct TimedStream {
    stream: UnixStream,
    deadline: Arc<Deadline>,
}

impl TimedStream {
    /// Wrap `stream`.
    pub fn new(stream: UnixStream, deadline: Arc<Deadline>) -> Self {
        Self { stream, deadline }
    }

    fn check<T>(&self, r: io::Result<T>) -> io::Result<T> {
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.deadline.fire())
            }
            other => other,
        }
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.deadline.next()?;
        self.stream.set_read_timeout(t)?;
        let r = self.stream.read(buf);
        self.check(r)
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self.deadline.next()?;
        self.stream.set_write_timeout(t)?;
        let r = self.stream.write(buf);
        self.check(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// An agent connection after its hello.
pub struct Conn {
    /// The protocol client.
    pub client: AgentClient<TimedStream>,
    /// Its deadline.
    pub deadline: Arc<Deadline>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_fires_on_a_silent_peer() {
        let (a, _b) = UnixStream::pair().unwrap();
        let d = Arc::new(Deadline::default());
        d.set(Some(Instant::now() + Duration::from_millis(50)), None);
        let mut s = TimedStream::new(a, d.clone());
        let t = Instant::now();
        let e = s.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(d.expired());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn idle_timeout_and_data() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let d = Arc::new(Deadline::default());
        d.set(None, Some(Duration::from_millis(50)));
        let mut s = TimedStream::new(a, d.clone());
        b.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        assert!(!d.expired());
        assert!(s.read(&mut buf).is_err());
        assert!(d.expired());
    }
}
