//! The device with its thread running, behind a real transport, against
//! the hand-written driver: restore and its transport reset, quiesce.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;
use crate::devices::virtio::mmio::{regs, MmioTransport, MmioTransportState, VirtqueueState};
use crate::devices::virtio::mmio_bus::MmioDevice;
use crate::devices::virtio::vsock::defs::{op, EVQ, RXQ, TXQ};
use crate::devices::virtio::vsock::packet::Header;
use crate::devices::virtio::vsock::testutil::{from_guest, ops, Driver, CID};
use crate::devices::virtio::vsock::worker::RESET_HOLD;
use crate::devices::virtio::{status, Interrupt, VIRTIO_INT_VRING};

const ALL: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
const GUEST_PORT: u32 = 1024;

fn config() -> VsockConfig {
    VsockConfig {
        guest_cid: CID,
        uds_path: None,
    }
}

fn snapshot_state() -> VsockState {
    VsockState {
        guest_cid: CID,
        acked_features: DEVICE_FEATURES,
    }
}

/// A transport state with the driver's rings live and untouched.
fn running_state(drv: &Driver) -> MmioTransportState {
    MmioTransportState {
        device_id: VIRTIO_ID_VSOCK,
        status: ALL,
        device_features_select: 0,
        driver_features_select: 0,
        driver_features: DEVICE_FEATURES,
        queue_select: 0,
        interrupt_status: 0,
        config_generation: 0,
        queues: drv
            .rings
            .iter()
            .map(|r| VirtqueueState::from(r.queue().state()))
            .collect(),
    }
}

/// Poll `f` every millisecond for up to 5 s past the reset hold.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + RESET_HOLD + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A device behind its transport, the guest driver, and the irqfd.
struct Rig {
    drv: Driver,
    t: MmioTransport,
    handle: VsockHandle,
    irq: EventFd,
}

impl Rig {
    fn new(drv: Driver, t: MmioTransport, irq: EventFd, handle: VsockHandle) -> Self {
        Self {
            drv,
            t,
            handle,
            irq,
        }
    }

    /// A restored device and transport over `drv`'s memory and rings.
    fn restored(drv: Driver, state: &MmioTransportState) -> Self {
        let dev = VsockDevice::restore(&config(), &snapshot_state()).unwrap();
        let handle = dev.handle();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let t = MmioTransport::restore(Box::new(dev), drv.mem.clone(), interrupt, state).unwrap();
        assert!(t.is_activated());
        Self::new(drv, t, irq, handle)
    }

    /// A new device the driver brings up through the registers.
    fn booted(drv: Driver) -> Self {
        let dev = VsockDevice::new(&config()).unwrap();
        let handle = dev.handle();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let mut t = MmioTransport::new(Box::new(dev), drv.mem.clone(), interrupt);
        let mut w = |off, v: u32| t.write(off, &v.to_le_bytes());
        w(regs::STATUS, status::ACKNOWLEDGE);
        w(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(regs::DRIVER_FEATURES_SEL, 1);
        w(regs::DRIVER_FEATURES, 1);
        w(regs::STATUS, ALL & !status::DRIVER_OK);
        for (i, r) in drv.rings.iter().enumerate() {
            w(regs::QUEUE_SEL, i as u32);
            w(regs::QUEUE_NUM, u32::from(r.size));
            w(regs::QUEUE_DESC_LOW, r.desc as u32);
            w(regs::QUEUE_AVAIL_LOW, r.avail as u32);
            w(regs::QUEUE_USED_LOW, r.used as u32);
            w(regs::QUEUE_READY, 1);
        }
        w(regs::STATUS, ALL);
        assert!(t.is_activated());
        Self::new(drv, t, irq, handle)
    }

    fn notify(&mut self, q: usize) {
        self.t.write(regs::QUEUE_NOTIFY, &(q as u32).to_le_bytes());
    }

    fn wait_rx(&mut self, what: &str) -> Vec<(Header, Vec<u8>)> {
        wait_for(what, || {
            Some(self.drv.rx_packets()).filter(|p| !p.is_empty())
        })
    }

    /// Start a host connect to the guest port.
    fn connect(&self) -> JoinHandle<Result<UnixStream, VsockError>> {
        let h = self.handle.clone();
        thread::spawn(move || h.connect_timeout(GUEST_PORT, RESET_HOLD + Duration::from_secs(5)))
    }

    /// The guest accepts a REQUEST it received.
    fn accept(&mut self, req: &Header) {
        assert_eq!((req.op, req.dst_port), (op::REQUEST, GUEST_PORT));
        self.drv
            .tx(from_guest(op::RESPONSE, GUEST_PORT, req.src_port), &[]);
        self.notify(TXQ);
    }

    /// Connect from the host and have the guest accept; returns the host
    /// stream and the host port.
    fn establish(&mut self) -> (UnixStream, u32) {
        let pending = self.connect();
        let pkts = self.wait_rx("the REQUEST");
        assert_eq!(ops(&pkts), vec![op::REQUEST]);
        self.accept(&pkts[0].0);
        let s = pending.join().unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (s, pkts[0].0.src_port)
    }

    /// The guest sends `data` on the connection to host `port`.
    fn guest_send(&mut self, port: u32, data: &[u8]) {
        self.drv.tx(from_guest(op::RW, GUEST_PORT, port), data);
        self.notify(TXQ);
    }

    /// Used-ring indexes of the three queues in guest memory.
    fn used_idxs(&self) -> Vec<u16> {
        self.drv
            .rings
            .iter()
            .map(|r| r.used_idx(&self.drv.mem))
            .collect()
    }
}

#[test]
fn state_bytes_round_trip() {
    let dev = VsockDevice::new(&config()).unwrap();
    assert_eq!(
        dev.state(),
        VsockState {
            guest_cid: CID,
            acked_features: 0
        }
    );
    let bytes = dev.device_state().unwrap();
    assert_eq!(VsockState::from_bytes(&bytes).unwrap(), dev.state());
    assert!(matches!(
        VsockState::from_bytes(&[]),
        Err(DeviceStateError::Decode(_))
    ));
    let rig = Rig::booted(Driver::new());
    assert_eq!(
        VsockState::from_bytes(&rig.t.device().device_state().unwrap()).unwrap(),
        snapshot_state()
    );
}

#[test]
fn restore_checks_cid_and_features() {
    let bad_cid = VsockState {
        guest_cid: CID + 1,
        ..snapshot_state()
    };
    assert!(matches!(
        VsockDevice::restore(&config(), &bad_cid),
        Err(VsockSetupError::CidMismatch { .. })
    ));
    let bad_features = VsockState {
        acked_features: DEVICE_FEATURES | 1,
        ..snapshot_state()
    };
    assert!(matches!(
        VsockDevice::restore(&config(), &bad_features),
        Err(VsockSetupError::Features { .. })
    ));
    let reserved = VsockConfig {
        guest_cid: 2,
        uds_path: None,
    };
    let s = VsockState {
        guest_cid: 2,
        ..snapshot_state()
    };
    assert!(matches!(
        VsockDevice::restore(&reserved, &s),
        Err(VsockSetupError::Cid(2))
    ));
}

#[test]
fn restored_device_posts_one_transport_reset_then_connects_work() {
    let mut drv = Driver::new();
    drv.offer(EVQ, 4, 4);
    drv.offer_rx(16, 4096);
    let state = running_state(&drv);
    let mut rig = Rig::restored(drv, &state);
    let events = wait_for("the reset event", || {
        Some(rig.drv.events()).filter(|e| !e.is_empty())
    });
    assert_eq!(events, vec![0]);
    // The interrupt follows the used ring update.
    wait_for("the interrupt", || rig.irq.read().ok());
    assert_ne!(rig.t.state().interrupt_status & VIRTIO_INT_VRING, 0);

    // A host connect right away: the REQUEST waits until the guest has
    // handled the event (it refills the event buffer)...
    let pending = rig.connect();
    thread::sleep(Duration::from_millis(100));
    assert!(rig.drv.rx_packets().is_empty());
    rig.drv.offer(EVQ, 1, 4);
    rig.notify(EVQ);
    // ...then goes out at once.
    let t0 = Instant::now();
    let pkts = rig.wait_rx("the REQUEST");
    assert!(t0.elapsed() < RESET_HOLD / 2, "{:?}", t0.elapsed());
    assert_eq!(ops(&pkts), vec![op::REQUEST]);
    rig.accept(&pkts[0].0);
    let mut s = pending.join().unwrap().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hi guest").unwrap();
    let pkts = rig.wait_rx("data");
    assert_eq!((pkts[0].0.op, &pkts[0].1[..]), (op::RW, &b"hi guest"[..]));
    let port = pkts[0].0.src_port;
    rig.guest_send(port, b"hi host");
    let mut b = [0u8; 7];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hi host");
    // Exactly one event.
    thread::sleep(Duration::from_millis(50));
    assert!(rig.drv.events().is_empty());
}

#[test]
fn reset_event_waits_for_an_event_buffer() {
    let mut drv = Driver::new();
    drv.offer_rx(4, 4096);
    let state = running_state(&drv);
    let mut rig = Rig::restored(drv, &state);
    thread::sleep(Duration::from_millis(50));
    assert!(rig.drv.events().is_empty());
    rig.drv.offer(EVQ, 2, 4);
    rig.notify(EVQ);
    let events = wait_for("the reset event", || {
        Some(rig.drv.events()).filter(|e| !e.is_empty())
    });
    assert_eq!(events, vec![0]);
    rig.notify(EVQ);
    thread::sleep(Duration::from_millis(50));
    assert!(rig.drv.events().is_empty());
}

#[test]
fn a_guest_that_never_acks_the_reset_gets_packets_after_the_hold() {
    let mut drv = Driver::new();
    drv.offer(EVQ, 1, 4);
    drv.offer_rx(4, 4096);
    let state = running_state(&drv);
    let mut rig = Rig::restored(drv, &state);
    wait_for("the reset event", || {
        Some(rig.drv.events()).filter(|e| !e.is_empty())
    });
    let t0 = Instant::now();
    let _pending = rig.connect();
    let pkts = rig.wait_rx("the REQUEST");
    assert_eq!(ops(&pkts), vec![op::REQUEST]);
    assert!(t0.elapsed() >= RESET_HOLD / 2, "{:?}", t0.elapsed());
}

#[test]
fn quiesce_parks_the_worker_and_unquiesce_resumes() {
    let mut drv = Driver::new();
    drv.offer(EVQ, 4, 4);
    drv.offer_rx(64, 4096);
    let mut rig = Rig::booted(drv);
    let (mut s, port) = rig.establish();
    s.write_all(b"before").unwrap();
    assert_eq!(rig.wait_rx("data")[0].1, b"before");

    rig.t.quiesce().unwrap();
    let used = rig.used_idxs();
    let state = rig.t.state();
    // The reported positions are the worker's, and final.
    let next_used: Vec<u16> = state.queues.iter().map(|q| q.next_used).collect();
    assert_eq!(next_used, used);
    assert_eq!(state.queues[RXQ].next_avail, used[RXQ]);
    // The guest sent one packet (its RESPONSE).
    assert_eq!(state.queues[TXQ].next_avail, 1);
    // Nothing moves while quiesced, from either side.
    s.write_all(b"during").unwrap();
    rig.guest_send(port, b"to host");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(rig.used_idxs(), used);
    rig.t.quiesce().unwrap();
    assert_eq!(rig.t.state(), state);

    rig.t.unquiesce();
    assert_eq!(rig.wait_rx("data after unquiesce")[0].1, b"during");
    let mut b = [0u8; 7];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"to host");
    // New connections work too.
    let (mut s2, _) = rig.establish();
    s2.write_all(b"x").unwrap();
    assert_eq!(rig.wait_rx("data on the new connection")[0].1, b"x");
}

#[test]
fn quiesce_under_traffic_never_deadlocks_or_loses_data() {
    let mut drv = Driver::new();
    drv.offer_rx(64, 4096);
    let mut rig = Rig::booted(drv);
    let (s, _) = rig.establish();
    let writer = thread::spawn(move || {
        let mut s = s;
        for i in 0..200u32 {
            s.write_all(&i.to_le_bytes()).unwrap();
            thread::sleep(Duration::from_micros(200));
        }
        s
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 800 {
        assert!(
            Instant::now() < deadline,
            "only {} bytes arrived",
            got.len()
        );
        rig.t.quiesce().unwrap();
        let used = rig.used_idxs();
        assert_eq!(rig.t.state().queues[RXQ].next_used, used[RXQ]);
        thread::sleep(Duration::from_millis(2));
        assert_eq!(rig.used_idxs(), used);
        rig.t.unquiesce();
        let pkts = rig.drv.rx_packets();
        for (h, data) in &pkts {
            assert_eq!(h.op, op::RW);
            got.extend_from_slice(data);
        }
        rig.drv.offer_rx(pkts.len(), 4096);
        thread::sleep(Duration::from_millis(1));
    }
    let _s = writer.join().unwrap();
    let want: Vec<u8> = (0..200u32).flat_map(u32::to_le_bytes).collect();
    assert_eq!(got, want);
}

#[test]
fn snapshot_restore_resumes_the_rings() {
    let mut drv = Driver::new();
    drv.offer(EVQ, 4, 4);
    drv.offer_rx(8, 4096);
    let mut rig = Rig::booted(drv);
    let (_s, port) = rig.establish();
    rig.t.quiesce().unwrap();
    // A packet the guest queues after the snapshot point is not lost: the
    // restored device finds it in the ring.
    rig.drv.tx(from_guest(op::RW, GUEST_PORT, port), b"late");
    let state = rig.t.state();
    let dev_state = VsockState::from_bytes(&rig.t.device().device_state().unwrap()).unwrap();
    assert_eq!(dev_state, snapshot_state());
    let tx_used = state.queues[TXQ].next_used;
    let Rig { drv, t, .. } = rig;
    drop(t);

    let mut rig = Rig::restored(drv, &state);
    assert_eq!(
        wait_for("the reset event", || Some(rig.drv.events())
            .filter(|e| !e.is_empty())),
        vec![0]
    );
    // The late packet was consumed, after the ones before the snapshot.
    wait_for("the late packet", || {
        (rig.used_idxs()[TXQ] == tx_used.wrapping_add(1)).then_some(())
    });
    rig.drv.tx_used();
    // The connection is gone: the guest's packet gets RST once it handled
    // the reset; then new connections work.
    rig.drv.offer(EVQ, 1, 4);
    rig.notify(EVQ);
    assert_eq!(ops(&rig.wait_rx("the RST")), vec![op::RST]);
    let (mut s, _) = rig.establish();
    s.write_all(b"new").unwrap();
    assert_eq!(rig.wait_rx("data")[0].1, b"new");
}
