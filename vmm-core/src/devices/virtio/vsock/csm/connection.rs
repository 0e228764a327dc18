//! One vsock stream connection between a guest port and a host stream.
//!
//! ```text
//!  host-initiated:  Connecting ──RESPONSE──▶ Established ──▶ Closed
//!                        └──RST / timeout──────────────────────▲
//!  guest-initiated: (REQUEST accepted) Established, RESPONSE queued
//! ```
//!
//! Data flow. Guest → host: RW payloads are written to the (non-blocking)
//! host stream; what it does not take waits in the [`TxBuf`], bounded by the
//! credit we advertise (`buf_alloc` = [`CONN_TX_BUF_SIZE`], `fwd_cnt` = bytes
//! the host stream took). Our `fwd_cnt` only moves when the host reads, so a
//! slow host reader stops the guest writer. Host → guest: we read the host
//! stream only while the guest has credit (`peer_buf_alloc - (rx_cnt -
//! peer_fwd_cnt)`) and an rx buffer is offered, so a slow guest reader leaves
//! the bytes in the host socket and blocks the host writer.
//!
//! Readiness of the host stream comes from edge-triggered epoll: the muxer
//! calls [`Connection::notify_readable`]/[`Connection::notify_writable`] and
//! the flags stay set until a read/write hits `WouldBlock`.
//!
//! Close: a guest SHUTDOWN with SEND half-closes the host stream once the
//! buffer is flushed; host EOF becomes a SHUTDOWN(SEND) to the guest. When
//! both directions are done (or the guest shut both), the connection ends
//! with an RST to the guest; a guest RST, a host I/O error or a credit
//! violation end it at once. The muxer removes a [`State::Closed`] connection
//! and drops its host stream.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::txbuf::TxBuf;
use crate::devices::virtio::vsock::defs::{
    op, CONN_CREDIT_UPDATE_THRESHOLD, CONN_TX_BUF_SIZE, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::devices::virtio::vsock::packet::Header;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// We sent (or will send) REQUEST and wait for RESPONSE until `deadline`.
    Connecting {
        /// When to give up.
        deadline: Instant,
    },
    /// Data flows.
    Established,
    /// Finished; `rst` says whether the guest must be sent an RST.
    Closed {
        /// Send RST to the guest.
        rst: bool,
    },
}

const P_REQUEST: u8 = 1;
const P_RESPONSE: u8 = 2;
const P_CREDIT_UPDATE: u8 = 4;
const P_SHUTDOWN: u8 = 8;

/// Addresses of a connection: `local` is the host side, `peer` the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    /// Host CID (2).
    pub local_cid: u64,
    /// Host port.
    pub local_port: u32,
    /// Guest CID.
    pub peer_cid: u64,
    /// Guest port.
    pub peer_port: u32,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    addr: Addr,
    state: State,
    stream: UnixStream,
    tx_buf: TxBuf,
    /// Bytes received from the guest, ever.
    recv_cnt: Wrapping<u32>,
    /// Bytes handed to the host stream, ever.
    fwd_cnt: Wrapping<u32>,
    /// The `fwd_cnt` in the last header we sent.
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Bytes sent to the guest, ever.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    pending: u8,
    host_readable: bool,
    host_eof: bool,
    host_write_shut: bool,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
    credit_requested: bool,
}

impl Connection {
    fn new(addr: Addr, stream: UnixStream, state: State, pending: u8) -> Self {
        Self {
            addr,
            state,
            stream,
            tx_buf: TxBuf::new(CONN_TX_BUF_SIZE as usize),
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            pending,
            host_readable: false,
            host_eof: false,
            host_write_shut: false,
            peer_shut_send: false,
            peer_shut_rcv: false,
            credit_requested: false,
        }
    }

    /// A host-initiated connection: REQUEST is queued for the guest.
    pub fn new_local_init(addr: Addr, stream: UnixStream, deadline: Instant) -> Self {
        Self::new(addr, stream, State::Connecting { deadline }, P_REQUEST)
    }

    /// A guest-initiated connection accepted from `req` (the guest's
    /// REQUEST): RESPONSE is queued for the guest.
    pub fn new_peer_init(addr: Addr, stream: UnixStream, req: &Header) -> Self {
        let mut c = Self::new(addr, stream, State::Established, P_RESPONSE);
        c.peer_buf_alloc = req.buf_alloc;
        c.peer_fwd_cnt = Wrapping(req.fwd_cnt);
        c
    }

    /// The connection's addresses.
    pub fn addr(&self) -> Addr {
        self.addr
    }

    /// Where it stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The host stream (for epoll registration and the hybrid handshake).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Bytes waiting for the host stream.
    pub fn tx_buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// Credit the guest gives us: bytes we may still send it.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Abort: queue an RST for the guest (VM teardown, timeout, limits).
    pub fn kill(&mut self) {
        self.state = State::Closed { rst: true };
    }

    fn wants_data_out(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.peer_shut_rcv
    }

    /// Whether the connection has something for the guest.
    pub fn has_pending_rx(&self) -> bool {
        if matches!(self.state, State::Closed { .. }) {
            return false;
        }
        self.pending != 0
            || (self.wants_data_out() && (self.peer_credit() > 0 || !self.credit_requested))
    }

    fn header(&mut self, op: u16, flags: u32, len: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: self.addr.local_cid,
            dst_cid: self.addr.peer_cid,
            src_port: self.addr.local_port,
            dst_port: self.addr.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn take(&mut self, bit: u8) -> bool {
        let set = self.pending & bit != 0;
        self.pending &= !bit;
        set
    }

    /// The next packet for the guest, with at most `capacity` payload bytes
    /// read from the host stream into `buf`.
    pub fn recv_pkt(&mut self, capacity: usize, buf: &mut Vec<u8>) -> Option<Header> {
        buf.clear();
        if matches!(self.state, State::Closed { .. }) {
            return None;
        }
        if self.take(P_REQUEST) {
            return Some(self.header(op::REQUEST, 0, 0));
        }
        if self.take(P_RESPONSE) {
            return Some(self.header(op::RESPONSE, 0, 0));
        }
        if self.take(P_CREDIT_UPDATE) {
            return Some(self.header(op::CREDIT_UPDATE, 0, 0));
        }
        if self.wants_data_out() {
            let credit = self.peer_credit() as usize;
            if credit == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    return Some(self.header(op::CREDIT_REQUEST, 0, 0));
                }
            } else if capacity > 0 {
                if let Some(h) = self.read_host(capacity.min(credit), buf) {
                    return Some(h);
                }
            }
        }
        if self.take(P_SHUTDOWN) {
            let h = self.header(op::SHUTDOWN, SHUTDOWN_SEND, 0);
            self.check_done();
            return Some(h);
        }
        None
    }

    fn read_host(&mut self, max: usize, buf: &mut Vec<u8>) -> Option<Header> {
        buf.resize(max, 0);
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    buf.clear();
                    self.host_readable = false;
                    self.host_eof = true;
                    self.pending |= P_SHUTDOWN;
                    return None;
                }
                Ok(n) => {
                    buf.truncate(n);
                    self.rx_cnt += Wrapping(n as u32);
                    return Some(self.header(op::RW, 0, n as u32));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.clear();
                    self.host_readable = false;
                    if e.kind() != ErrorKind::WouldBlock {
                        log::debug!("vsock: host read on {:?}: {e}", self.addr);
                        self.state = State::Closed { rst: true };
                    }
                    return None;
                }
            }
        }
    }

    /// A packet from the guest for this connection (addresses already
    /// matched by the muxer).
    pub fn send_pkt(&mut self, hdr: &Header, payload: &[u8]) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        match (self.state, hdr.op) {
            (State::Closed { .. }, _) => {}
            (_, op::RST) => self.state = State::Closed { rst: false },
            (State::Connecting { .. }, op::RESPONSE) => self.state = State::Established,
            (State::Connecting { .. }, _) => self.state = State::Closed { rst: true },
            (State::Established, op::RW) => self.guest_data(payload),
            (State::Established, op::CREDIT_UPDATE) => {}
            (State::Established, op::CREDIT_REQUEST) => self.pending |= P_CREDIT_UPDATE,
            (State::Established, op::SHUTDOWN) => {
                self.peer_shut_rcv |= hdr.flags & SHUTDOWN_RCV != 0;
                self.peer_shut_send |= hdr.flags & SHUTDOWN_SEND != 0;
                self.after_flush();
            }
            (State::Established, other) => {
                log::debug!("vsock: op {other} on established {:?}: reset", self.addr);
                self.state = State::Closed { rst: true };
            }
        }
    }

    fn guest_data(&mut self, payload: &[u8]) {
        if self.peer_shut_send {
            log::debug!("vsock: data after SHUTDOWN(SEND) on {:?}: reset", self.addr);
            self.state = State::Closed { rst: true };
            return;
        }
        self.recv_cnt += Wrapping(payload.len() as u32);
        if self.tx_buf.is_empty() && !self.host_write_shut {
            match write_some(&mut NoSigPipe(&self.stream), payload) {
                Ok(n) => {
                    self.fwd_cnt += Wrapping(n as u32);
                    if let Err(e) = self.tx_buf.push(&payload[n..]) {
                        log::debug!("vsock: {e} on {:?}", self.addr);
                        self.state = State::Closed { rst: true };
                    }
                }
                Err(e) => {
                    log::debug!("vsock: host write on {:?}: {e}", self.addr);
                    self.state = State::Closed { rst: true };
                }
            }
        } else if let Err(e) = self.tx_buf.push(payload) {
            log::warn!("vsock: guest ignored credit on {:?}: {e}", self.addr);
            self.state = State::Closed { rst: true };
        }
        self.maybe_credit_update();
    }

    /// The host stream has data (or EOF) to read.
    pub fn notify_readable(&mut self) {
        self.host_readable = true;
    }

    /// The host stream can take more bytes: flush the buffer.
    pub fn notify_writable(&mut self) {
        if matches!(self.state, State::Closed { .. }) || self.host_write_shut {
            return;
        }
        match self.tx_buf.flush_to(&mut NoSigPipe(&self.stream)) {
            Ok(n) => self.fwd_cnt += Wrapping(n as u32),
            Err(e) => {
                log::debug!("vsock: host write on {:?}: {e}", self.addr);
                self.state = State::Closed { rst: true };
                return;
            }
        }
        self.maybe_credit_update();
        self.after_flush();
    }

    /// The host hung up entirely (EPOLLHUP/EPOLLERR with nothing to read).
    pub fn notify_hangup(&mut self) {
        self.host_readable = true;
        if !self.tx_buf.is_empty() {
            self.state = State::Closed { rst: true };
        }
    }

    fn maybe_credit_update(&mut self) {
        // What the guest believes it may still send us.
        let guest_view =
            CONN_TX_BUF_SIZE.saturating_sub((self.recv_cnt - self.last_fwd_cnt_sent).0);
        if guest_view < CONN_CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.pending |= P_CREDIT_UPDATE;
        }
    }

    fn after_flush(&mut self) {
        if !self.tx_buf.is_empty() {
            return;
        }
        if self.peer_shut_send && !self.host_write_shut {
            self.host_write_shut = true;
            // The host side may already be gone; that is fine.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        self.check_done();
    }

    fn check_done(&mut self) {
        if self.state != State::Established || !self.tx_buf.is_empty() {
            return;
        }
        let guest_gone = self.peer_shut_send && self.peer_shut_rcv;
        let both_shut = self.peer_shut_send && self.host_eof && self.pending & P_SHUTDOWN == 0;
        if guest_gone || both_shut {
            self.state = State::Closed { rst: true };
        }
    }

    /// The RST to send the guest for this connection.
    pub fn rst_header(&mut self) -> Header {
        self.header(op::RST, 0, 0)
    }
}

/// Writes to a host stream with `MSG_NOSIGNAL`: a host peer that went away
/// must give us `EPIPE`, not kill the process (library users may not ignore
/// SIGPIPE the way Rust binaries do).
struct NoSigPipe<'a>(&'a UnixStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: `buf` is a valid, initialized slice for `buf.len()` bytes
        // and the fd belongs to a live UnixStream borrowed for the call.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write all of `buf` to a fresh non-blocking stream without SIGPIPE; a
/// partial write counts as failure (used for the short hybrid `OK` line).
pub(crate) fn send_line(stream: &UnixStream, buf: &[u8]) -> std::io::Result<()> {
    let n = NoSigPipe(stream).write(buf)?;
    if n != buf.len() {
        return Err(ErrorKind::WriteZero.into());
    }
    Ok(())
}

/// One non-blocking write; `WouldBlock` counts as 0 bytes.
fn write_some(w: &mut impl Write, b: &[u8]) -> std::io::Result<usize> {
    if b.is_empty() {
        return Ok(0);
    }
    loop {
        match w.write(b) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
