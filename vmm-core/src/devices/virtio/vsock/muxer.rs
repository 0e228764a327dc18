//! The connection multiplexer: maps (host port, guest port) to a
//! [`Connection`] and its host stream, and decides where new connections go.
//!
//! Guest → host: the device hands every checked tx packet to
//! [`Muxer::send_pkt`]. A packet for a known connection goes to it; a REQUEST
//! for a new one is accepted if an in-process listener or a hybrid-socket
//! listener (`<uds_path>_<port>`) takes it, and answered with RST otherwise.
//!
//! Host → guest: connections with something to say sit in a round-robin
//! queue; [`Muxer::recv_pkt`] asks the first one for its next packet,
//! sized to the rx buffer the guest offered. RSTs for packets that match no
//! connection wait in a short bounded queue of their own.
//!
//! Host streams are non-blocking and registered edge-triggered in the
//! muxer's own epoll, which the device thread watches as one fd
//! ([`Muxer::epoll_fd`]); [`Muxer::process_events`] turns readiness into
//! connection calls. Host-initiated connections (in-process `connect`, or a
//! hybrid `CONNECT <port>` line) get a local port from 2^30 up and a waiter
//! that is answered when the guest accepts, refuses, or times out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::csm::connection::send_line;
use super::csm::{Addr, Connection, State};
use super::defs::{
    op, FIRST_EPHEMERAL_PORT, HOST_CID, MAX_CONNECTIONS, MAX_PENDING_RSTS, TYPE_STREAM,
};
use super::host::VsockError;
use super::packet::Header;
use super::unix::{Handshake, HybridSocket};

/// A connection's ports: host side and guest side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    local_port: u32,
    peer_port: u32,
}

/// Who waits for a host-initiated connection to be accepted.
enum Waiter {
    InProc {
        reply: SyncSender<Result<UnixStream, VsockError>>,
        theirs: UnixStream,
        deadline: Instant,
        timeout: Duration,
    },
    Hybrid {
        deadline: Instant,
    },
}

impl Waiter {
    fn deadline(&self) -> Instant {
        match self {
            Waiter::InProc { deadline, .. } | Waiter::Hybrid { deadline } => *deadline,
        }
    }

    fn fail(self, err: VsockError) {
        if let Waiter::InProc { reply, .. } = self {
            let _ = reply.try_send(Err(err));
        }
    }
}

/// The RST that answers `hdr` from the guest.
pub fn rst_reply(hdr: &Header) -> Header {
    Header {
        src_cid: hdr.dst_cid,
        dst_cid: hdr.src_cid,
        src_port: hdr.dst_port,
        dst_port: hdr.src_port,
        len: 0,
        type_: TYPE_STREAM,
        op: op::RST,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

const CONN_EVENTS: u32 =
    libc::EPOLLIN as u32 | libc::EPOLLOUT as u32 | libc::EPOLLRDHUP as u32 | libc::EPOLLET as u32;

/// The multiplexer.
pub struct Muxer {
    guest_cid: u64,
    epoll: Epoll,
    conns: HashMap<Key, Connection>,
    fds: HashMap<RawFd, Key>,
    rxq: VecDeque<Key>,
    queued: HashSet<Key>,
    rsts: VecDeque<Header>,
    listeners: HashMap<u32, (u64, SyncSender<UnixStream>)>,
    waiters: HashMap<Key, Waiter>,
    hybrid: Option<HybridSocket>,
    next_port: u32,
}

impl Muxer {
    /// A muxer for a guest with `guest_cid`, with the hybrid socket at
    /// `uds_path` if given.
    pub fn new(guest_cid: u64, uds_path: Option<&Path>) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        let hybrid = uds_path.map(HybridSocket::bind).transpose()?;
        if let Some(h) = &hybrid {
            let fd = h.listener_fd();
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, fd as u64),
            )?;
        }
        Ok(Self {
            guest_cid,
            epoll,
            conns: HashMap::new(),
            fds: HashMap::new(),
            rxq: VecDeque::new(),
            queued: HashSet::new(),
            rsts: VecDeque::new(),
            listeners: HashMap::new(),
            waiters: HashMap::new(),
            hybrid,
            next_port: FIRST_EPHEMERAL_PORT,
        })
    }

    /// The muxer's epoll fd: readable when a host socket needs attention.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether there may be a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        !self.rsts.is_empty() || !self.rxq.is_empty()
    }

    /// Queue an RST for the guest (bounded; beyond the bound it is dropped).
    pub fn push_rst(&mut self, h: Header) {
        if self.rsts.len() < MAX_PENDING_RSTS {
            self.rsts.push_back(h);
        } else {
            log::debug!("vsock: RST queue full; dropping RST to port {}", h.dst_port);
        }
    }

    fn enqueue(&mut self, key: Key) {
        if self.queued.insert(key) {
            self.rxq.push_back(key);
        }
    }

    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self
                .next_port
                .checked_add(1)
                .unwrap_or(FIRST_EPHEMERAL_PORT);
            if !self.conns.keys().any(|k| k.local_port == p) && !self.listeners.contains_key(&p) {
                return p;
            }
        }
    }

    fn register(&mut self, key: Key, conn: Connection) -> Result<(), VsockError> {
        let fd = conn.stream().as_raw_fd();
        conn.stream().set_nonblocking(true)?;
        let ev = EpollEvent::new(EventSet::from_bits_truncate(CONN_EVENTS), fd as u64);
        // A hybrid client is already registered for its handshake.
        if self.epoll.ctl(ControlOperation::Modify, fd, ev).is_err() {
            self.epoll.ctl(ControlOperation::Add, fd, ev)?;
        }
        self.fds.insert(fd, key);
        self.conns.insert(key, conn);
        self.enqueue(key);
        Ok(())
    }

    /// Open a host-initiated connection to guest `port` over `stream`.
    fn start_connect(
        &mut self,
        port: u32,
        stream: UnixStream,
        waiter: Waiter,
    ) -> Result<(), (VsockError, Waiter)> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return Err((VsockError::TooManyConnections(MAX_CONNECTIONS), waiter));
        }
        let local_port = self.alloc_local_port();
        let key = Key {
            local_port,
            peer_port: port,
        };
        let addr = Addr {
            local_cid: HOST_CID,
            local_port,
            peer_cid: self.guest_cid,
            peer_port: port,
        };
        let conn = Connection::new_local_init(addr, stream, waiter.deadline());
        if let Err(e) = self.register(key, conn) {
            self.drop_conn(key);
            return Err((e, waiter));
        }
        self.waiters.insert(key, waiter);
        Ok(())
    }

    /// In-process connect to guest `port`; `reply` gets the stream once the
    /// guest accepts, or the error.
    pub fn connect(
        &mut self,
        port: u32,
        timeout: Duration,
        reply: SyncSender<Result<UnixStream, VsockError>>,
    ) {
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.try_send(Err(e.into()));
                return;
            }
        };
        let waiter = Waiter::InProc {
            reply,
            theirs,
            deadline: Instant::now() + timeout,
            timeout,
        };
        if let Err((e, w)) = self.start_connect(port, ours, waiter) {
            w.fail(e);
        }
    }

    /// Deliver guest connections to host `port` to `sink`.
    pub fn listen(
        &mut self,
        port: u32,
        id: u64,
        sink: SyncSender<UnixStream>,
    ) -> Result<(), VsockError> {
        if self.listeners.contains_key(&port) {
            return Err(VsockError::PortInUse(port));
        }
        self.listeners.insert(port, (id, sink));
        Ok(())
    }

    /// Stop the listener `id` on `port`.
    pub fn unlisten(&mut self, port: u32, id: u64) {
        if self.listeners.get(&port).is_some_and(|l| l.0 == id) {
            self.listeners.remove(&port);
        }
    }

    /// A checked packet from the guest (CIDs and type already verified).
    pub fn send_pkt(&mut self, hdr: &Header, payload: &[u8]) {
        let key = Key {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.send_pkt(hdr, payload);
            self.settle(key);
            return;
        }
        match hdr.op {
            op::REQUEST => self.accept_guest(key, hdr),
            op::RST => {}
            _ => self.push_rst(rst_reply(hdr)),
        }
    }

    fn accept_guest(&mut self, key: Key, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!(
                "vsock: connection limit reached; refusing guest port {}",
                key.peer_port
            );
            self.push_rst(rst_reply(hdr));
            return;
        }
        let Some(stream) = self.host_stream_for(key.local_port) else {
            self.push_rst(rst_reply(hdr));
            return;
        };
        let addr = Addr {
            local_cid: HOST_CID,
            local_port: key.local_port,
            peer_cid: self.guest_cid,
            peer_port: key.peer_port,
        };
        let conn = Connection::new_peer_init(addr, stream, hdr);
        if let Err(e) = self.register(key, conn) {
            log::warn!("vsock: cannot watch host stream: {e}");
            self.drop_conn(key);
            self.push_rst(rst_reply(hdr));
        }
    }

    /// The host end for a guest connection to `port`: an in-process
    /// listener first, then `<uds_path>_<port>`.
    fn host_stream_for(&mut self, port: u32) -> Option<UnixStream> {
        if let Some((_, sink)) = self.listeners.get(&port) {
            let (ours, theirs) = UnixStream::pair().ok()?;
            match sink.try_send(theirs) {
                Ok(()) => return Some(ours),
                Err(TrySendError::Full(_)) => {
                    log::warn!("vsock: listener on port {port} has a full backlog");
                    return None;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.listeners.remove(&port);
                }
            }
        }
        match self.hybrid.as_ref()?.connect_guest_port(port) {
            Ok(s) => Some(s),
            Err(e) => {
                log::debug!("vsock: no host listener for port {port}: {e}");
                None
            }
        }
    }

    /// The next packet for the guest, with at most `capacity` payload bytes
    /// in `buf`.
    pub fn recv_pkt(&mut self, capacity: usize, buf: &mut Vec<u8>) -> Option<Header> {
        loop {
            if let Some(h) = self.rsts.pop_front() {
                buf.clear();
                return Some(h);
            }
            let key = self.rxq.pop_front()?;
            self.queued.remove(&key);
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let pkt = conn.recv_pkt(capacity, buf);
            self.settle(key);
            if pkt.is_some() {
                return pkt;
            }
        }
    }

    /// Act on a connection's state after it changed: complete or fail its
    /// waiter, remove it when closed, and queue it if it has output.
    fn settle(&mut self, key: Key) {
        let Some(state) = self.conns.get(&key).map(Connection::state) else {
            return;
        };
        match state {
            State::Closed { rst } => {
                let h = if rst {
                    self.conns.get_mut(&key).map(Connection::rst_header)
                } else {
                    None
                };
                self.drop_conn(key);
                if let Some(h) = h {
                    self.push_rst(h);
                }
                if let Some(w) = self.waiters.remove(&key) {
                    w.fail(VsockError::Refused(key.peer_port));
                }
                return;
            }
            State::Established => {
                if let Some(w) = self.waiters.remove(&key) {
                    let ok = match w {
                        Waiter::InProc { reply, theirs, .. } => reply.try_send(Ok(theirs)).is_ok(),
                        Waiter::Hybrid { .. } => {
                            let line = format!("OK {}\n", key.local_port);
                            self.conns
                                .get(&key)
                                .is_some_and(|c| send_line(c.stream(), line.as_bytes()).is_ok())
                        }
                    };
                    if !ok {
                        // The caller gave up: abort the new connection.
                        if let Some(c) = self.conns.get_mut(&key) {
                            c.kill();
                        }
                        return self.settle(key);
                    }
                }
            }
            State::Connecting { .. } => {}
        }
        if self.conns.get(&key).is_some_and(Connection::has_pending_rx) {
            self.enqueue(key);
        }
    }

    fn drop_conn(&mut self, key: Key) {
        if let Some(conn) = self.conns.remove(&key) {
            let fd = conn.stream().as_raw_fd();
            self.fds.remove(&fd);
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    /// Handle host socket readiness (never blocks).
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("vsock: muxer epoll: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let fd = ev.data() as RawFd;
            let set = ev.event_set();
            if let Some(&key) = self.fds.get(&fd) {
                self.conn_event(key, set);
            } else if self.hybrid.as_ref().is_some_and(|h| h.listener_fd() == fd) {
                self.accept_hybrid();
            } else if self.hybrid.as_ref().is_some_and(|h| h.is_pending(fd)) {
                self.hybrid_handshake(fd);
            }
        }
    }

    fn conn_event(&mut self, key: Key, set: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP) {
            conn.notify_readable();
        }
        if set.contains(EventSet::OUT) {
            conn.notify_writable();
        }
        if set.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            conn.notify_hangup();
        }
        self.settle(key);
    }

    fn accept_hybrid(&mut self) {
        let Some(h) = self.hybrid.as_mut() else {
            return;
        };
        for fd in h.accept_all() {
            let ev = EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP, fd as u64);
            if let Err(e) = self.epoll.ctl(ControlOperation::Add, fd, ev) {
                log::warn!("vsock: cannot watch hybrid client: {e}");
            }
        }
    }

    fn hybrid_handshake(&mut self, fd: RawFd) {
        let Some(h) = self.hybrid.as_mut() else {
            return;
        };
        match h.read_handshake(fd) {
            Handshake::Pending => {}
            Handshake::Failed => {}
            Handshake::Connect(stream, port) => {
                let deadline =
                    Instant::now() + Duration::from_millis(super::defs::CONNECT_TIMEOUT_MS);
                if let Err((e, _)) = self.start_connect(port, stream, Waiter::Hybrid { deadline }) {
                    log::warn!("vsock: hybrid CONNECT {port}: {e}");
                }
            }
        }
    }

    /// Time out connections the guest never answered and stale handshakes.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<Key> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline() <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(w) = self.waiters.remove(&key) {
                let timeout = match &w {
                    Waiter::InProc { timeout, .. } => *timeout,
                    Waiter::Hybrid { .. } => Duration::from_millis(super::defs::CONNECT_TIMEOUT_MS),
                };
                w.fail(VsockError::Timeout {
                    port: key.peer_port,
                    ms: timeout.as_millis() as u64,
                });
            }
            if let Some(c) = self.conns.get_mut(&key) {
                c.kill();
            }
            self.settle(key);
        }
        if let Some(h) = self.hybrid.as_mut() {
            h.expire(now);
        }
    }

    /// The next time [`Muxer::tick`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let w = self.waiters.values().map(Waiter::deadline).min();
        let h = self.hybrid.as_ref().and_then(HybridSocket::next_deadline);
        match (w, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forget every connection without telling the guest (device reset or
    /// transport reset: the guest drops its side by itself). Host streams
    /// are closed; waiting connects fail.
    pub fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.drop_conn(key);
        }
        for (key, w) in self.waiters.drain() {
            w.fail(VsockError::Refused(key.peer_port));
        }
        self.rxq.clear();
        self.queued.clear();
        self.rsts.clear();
    }
}

#[cfg(test)]
mod tests;
