//! The vsock device thread: everything that touches the queues and the host
//! sockets happens here, on one thread, so nothing in the data path takes a
//! lock.
//!
//! It sleeps in epoll on: the kill eventfd (the VM ends), the command
//! eventfd (activation, reset, connect/listen from [`super::VsockHandle`]),
//! the three queue eventfds (KVM ioeventfds on QueueNotify, so a guest notify
//! wakes this thread without a vCPU exit to user space), and the muxer's
//! epoll fd (host sockets). Each wakeup drains the tx queue into the muxer,
//! then fills rx buffers from the muxer, and raises the interrupt (an irqfd)
//! if the used rings moved.
//!
//! Guest packets are checked here before the muxer sees them: the source
//! CID must be the guest's (else dropped: there is nobody to answer), the
//! destination the host (CID 2), the type stream and the op known (else
//! answered with RST). Malformed chains (outside guest memory, too short,
//! `len` beyond the chain or above 64 KiB) are consumed and dropped.
//!
//! Transport reset (after a snapshot restore, or [`super::VsockHandle::transport_reset`]):
//! the event goes on the event queue as soon as the guest offers a buffer,
//! before any packet to the guest, and packets to the guest then wait until
//! the guest has handled it (Linux refills the event buffer only after it
//! reset its connected sockets), or [`RESET_HOLD`] at most: a connection
//! made right after the reset is not killed by it.
//!
//! Quiesce (for a snapshot): between `Quiesce` and `Unquiesce` commands the
//! thread never touches guest memory or the queues, and has handed back the
//! queue states; it still serves host sockets and commands, so nothing on
//! the host side blocks, and catches up on the queues when it continues.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::defs::{op, EVENT_TRANSPORT_RESET, EVQ, HOST_CID, RXQ, TXQ, TYPE_STREAM};
use super::host::Command;
use super::muxer::{rst_reply, Muxer};
use super::packet::{self, Header, RxBuffer};
use crate::devices::virtio::Interrupt;
use crate::memory::GuestMemory;

const TOKEN_KILL: u64 = 0;
const TOKEN_CMD: u64 = 1;
const TOKEN_MUXER: u64 = 2;
const TOKEN_QUEUE0: u64 = 10;

/// Longest time packets to the guest wait for it to handle a transport reset.
pub const RESET_HOLD: Duration = Duration::from_secs(10);

/// Where the worker is with a transport reset event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetEvent {
    /// None due.
    Idle,
    /// Due, not posted yet: the guest offered no event buffer. Packets to
    /// the guest wait until `hold_until` (set once the device is active).
    Pending { hold_until: Option<Instant> },
    /// Posted when the event queue's available index was `avail`; packets
    /// to the guest wait until it moves (the guest refilled the buffer after
    /// handling the event) or until `hold_until`.
    Posted { avail: u16, hold_until: Instant },
}

struct Active {
    mem: GuestMemory,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

/// What to do with a packet that fails the checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the muxer.
    Accept,
    /// Answer with RST.
    Rst,
    /// Drop it silently.
    Drop,
}

/// Check a guest packet's addressing, type and op.
pub fn check_tx(hdr: &Header, guest_cid: u64) -> Verdict {
    if hdr.src_cid != guest_cid {
        return Verdict::Drop;
    }
    if hdr.op == op::RST {
        // Never answer an RST with an RST.
        return if hdr.dst_cid == HOST_CID && hdr.type_ == TYPE_STREAM {
            Verdict::Accept
        } else {
            Verdict::Drop
        };
    }
    if hdr.dst_cid != HOST_CID
        || hdr.type_ != TYPE_STREAM
        || !(op::REQUEST..=op::CREDIT_REQUEST).contains(&hdr.op)
    {
        return Verdict::Rst;
    }
    Verdict::Accept
}

/// The device thread's state.
pub(crate) struct Worker {
    guest_cid: u64,
    epoll: Epoll,
    // Kept open: the epoll watches it, the device front writes its twin.
    _kill: EventFd,
    wake: Arc<EventFd>,
    queue_evts: Vec<EventFd>,
    commands: Receiver<Command>,
    muxer: Muxer,
    active: Option<Active>,
    buf: Vec<u8>,
    reset_event: ResetEvent,
    quiesced: bool,
}

impl Worker {
    pub(crate) fn new(
        guest_cid: u64,
        kill: EventFd,
        wake: Arc<EventFd>,
        queue_evts: Vec<EventFd>,
        commands: Receiver<Command>,
        muxer: Muxer,
    ) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        let add = |fd, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(kill.as_raw_fd(), TOKEN_KILL)?;
        add(wake.as_raw_fd(), TOKEN_CMD)?;
        add(muxer.epoll_fd(), TOKEN_MUXER)?;
        for (i, e) in queue_evts.iter().enumerate() {
            add(e.as_raw_fd(), TOKEN_QUEUE0 + i as u64)?;
        }
        Ok(Self {
            guest_cid,
            epoll,
            _kill: kill,
            wake,
            queue_evts,
            commands,
            muxer,
            active: None,
            buf: Vec::new(),
            reset_event: ResetEvent::Idle,
            quiesced: false,
        })
    }

    /// Post a transport reset event once the device is active and the
    /// guest offers an event buffer.
    pub(crate) fn schedule_transport_reset(&mut self) {
        self.reset_event = ResetEvent::Pending { hold_until: None };
    }

    /// When the loop must wake up even if nothing happens.
    fn next_deadline(&self) -> Option<Instant> {
        let hold = match self.reset_event {
            ResetEvent::Pending { hold_until } => hold_until,
            ResetEvent::Posted { hold_until, .. } => Some(hold_until),
            ResetEvent::Idle => None,
        };
        match (self.muxer.next_deadline(), hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Serve until the kill eventfd fires or every command sender is gone.
    pub(crate) fn run(mut self) {
        let mut events = [EpollEvent::default(); 16];
        loop {
            let timeout = self.next_deadline().map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                // Round up so we do not spin just before the deadline.
                i32::try_from(ms + 1).unwrap_or(i32::MAX)
            });
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    log::error!("vsock: device epoll failed, device stops: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => return,
                    TOKEN_CMD => {
                        let _ = self.wake.read();
                        if !self.drain_commands() {
                            return;
                        }
                    }
                    TOKEN_MUXER => self.muxer.process_events(),
                    t => {
                        if let Some(e) = self.queue_evts.get((t - TOKEN_QUEUE0) as usize) {
                            let _ = e.read();
                        }
                    }
                }
            }
            self.muxer.tick(Instant::now());
            self.process_queues();
        }
    }

    /// Returns false when the device front and all handles are gone.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Activate(a) => {
                self.active = Some(Active {
                    mem: a.mem,
                    queues: a.queues,
                    interrupt: a.interrupt,
                });
            }
            Command::Reset => {
                self.active = None;
                self.reset_event = ResetEvent::Idle;
                self.muxer.reset();
            }
            Command::Connect {
                port,
                timeout,
                reply,
            } => self.muxer.connect(port, timeout, reply),
            Command::Listen {
                port,
                id,
                sink,
                reply,
            } => {
                let _ = reply.try_send(self.muxer.listen(port, id, sink));
            }
            Command::Unlisten { port, id } => self.muxer.unlisten(port, id),
            Command::TransportReset { reply } => {
                self.muxer.reset();
                self.schedule_transport_reset();
                self.process_queues();
                let _ = reply.try_send(());
            }
            Command::Quiesce { reply } => {
                self.quiesced = true;
                let states = self
                    .active
                    .as_ref()
                    .map(|a| a.queues.iter().map(Queue::state).collect())
                    .unwrap_or_default();
                let _ = reply.try_send(states);
            }
            // The loop processes the queues after every command.
            Command::Unquiesce => self.quiesced = false,
        }
    }

    /// Deliver a due reset event, drain tx, fill rx (unless held for the
    /// reset); one interrupt at the end. Nothing while quiesced.
    pub(crate) fn process_queues(&mut self) {
        if self.quiesced {
            return;
        }
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let now = Instant::now();
        let (mut notify, hold_rx) = advance_reset_event(a, &mut self.reset_event, now);
        notify |= process_tx(a, &mut self.muxer, &mut self.buf, self.guest_cid);
        if !hold_rx {
            notify |= process_rx(a, &mut self.muxer, &mut self.buf);
        }
        if notify {
            a.interrupt.signal_used_queue();
        }
    }
}

/// The event queue's available index, as the guest last wrote it.
fn evq_avail(a: &Active) -> Option<u16> {
    a.queues[EVQ]
        .avail_idx(&a.mem, std::sync::atomic::Ordering::Acquire)
        .ok()
        .map(|w| w.0)
}

/// Post a due transport reset event and decide whether packets to the
/// guest must still wait for the guest to handle it. Returns (the event was
/// posted, hold rx).
fn advance_reset_event(a: &mut Active, state: &mut ResetEvent, now: Instant) -> (bool, bool) {
    let mut posted = false;
    if let ResetEvent::Pending { hold_until } = *state {
        let hold_until = hold_until.unwrap_or(now + RESET_HOLD);
        *state = if write_event(a, EVENT_TRANSPORT_RESET) {
            posted = true;
            match evq_avail(a) {
                Some(avail) => ResetEvent::Posted { avail, hold_until },
                None => ResetEvent::Idle,
            }
        } else {
            ResetEvent::Pending {
                hold_until: Some(hold_until),
            }
        };
    }
    if let ResetEvent::Posted { avail, hold_until } = *state {
        if now >= hold_until || evq_avail(a) != Some(avail) {
            *state = ResetEvent::Idle;
        }
    }
    let hold = match *state {
        ResetEvent::Idle => false,
        ResetEvent::Pending { hold_until } => hold_until.is_some_and(|t| now < t),
        ResetEvent::Posted { hold_until, .. } => now < hold_until,
    };
    (posted, hold)
}

fn add_used(a: &mut Active, q: usize, head: u16, len: u32) {
    if let Err(e) = a.queues[q].add_used(&a.mem, head, len) {
        log::warn!("vsock: queue {q}: add_used failed: {e}");
    }
}

fn needs_notification(a: &mut Active, q: usize) -> bool {
    a.queues[q].needs_notification(&a.mem).unwrap_or(true)
}

/// Guest → host. Returns whether the guest should be interrupted.
fn process_tx(a: &mut Active, muxer: &mut Muxer, buf: &mut Vec<u8>, guest_cid: u64) -> bool {
    let mut used = false;
    loop {
        let mem = &a.mem;
        let Some(chain) = a.queues[TXQ].pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        match packet::read_tx(mem, chain, buf) {
            Ok(hdr) => match check_tx(&hdr, guest_cid) {
                Verdict::Accept => muxer.send_pkt(&hdr, buf),
                Verdict::Rst => {
                    log::debug!("vsock: refusing guest packet {hdr:?}");
                    muxer.push_rst(rst_reply(&hdr));
                }
                Verdict::Drop => log::debug!("vsock: dropping guest packet {hdr:?}"),
            },
            Err(e) => log::warn!("vsock: bad tx packet dropped: {e}"),
        }
        add_used(a, TXQ, head, 0);
        used = true;
    }
    used && needs_notification(a, TXQ)
}

/// Host → guest. Returns whether the guest should be interrupted.
fn process_rx(a: &mut Active, muxer: &mut Muxer, buf: &mut Vec<u8>) -> bool {
    let mut used = false;
    while muxer.has_pending_rx() {
        let mem = &a.mem;
        let Some(chain) = a.queues[RXQ].pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let rx = match RxBuffer::new(mem, chain) {
            Ok(rx) => rx,
            Err(e) => {
                log::warn!("vsock: bad rx buffer skipped: {e}");
                add_used(a, RXQ, head, 0);
                used = true;
                continue;
            }
        };
        let Some(hdr) = muxer.recv_pkt(rx.payload_capacity(), buf) else {
            a.queues[RXQ].go_to_previous_position();
            break;
        };
        let len = rx.write(hdr, buf).unwrap_or_else(|e| {
            log::warn!("vsock: rx packet lost: {e}");
            0
        });
        add_used(a, RXQ, head, len);
        used = true;
    }
    used && needs_notification(a, RXQ)
}

/// Put one event on the event queue; false if the guest offered no buffer.
fn write_event(a: &mut Active, id: u32) -> bool {
    let mem = &a.mem;
    let Some(chain) = a.queues[EVQ].pop_descriptor_chain(mem) else {
        return false;
    };
    let head = chain.head_index();
    let len = match chain.writer(mem) {
        Ok(mut w) if w.available_bytes() >= 4 => match w.write_all(&id.to_le_bytes()) {
            Ok(()) => 4,
            Err(e) => {
                log::warn!("vsock: event lost: {e}");
                0
            }
        },
        _ => {
            log::warn!("vsock: event buffer unusable");
            0
        }
    };
    add_used(a, EVQ, head, len);
    true
}

#[cfg(test)]
mod tests;
