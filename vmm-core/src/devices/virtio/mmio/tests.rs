//! The transport's register state machine, against a fake device.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueState;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::{ActivateError, VIRTIO_INT_CONFIG};

#[derive(Default)]
struct Log {
    activations: Vec<(usize, u64)>,
    resets: usize,
    /// The queues of the last activation, as a worker would move them.
    queues: Vec<QueueState>,
    quiesces: usize,
    unquiesces: usize,
}

struct Fake {
    log: Arc<Mutex<Log>>,
    evts: Vec<EventFd>,
}

impl VirtioDevice for Fake {
    fn device_id(&self) -> u32 {
        19
    }
    fn device_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256]
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.evts
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::read_config_bytes(&7u64.to_le_bytes(), offset, data);
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let mut log = self.log.lock().unwrap();
        log.activations.push((a.queues.len(), a.features));
        log.queues = a.queues.iter().map(Queue::state).collect();
        Ok(())
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().resets += 1;
    }
    fn quiesce(&mut self) -> Result<Vec<QueueState>, QuiesceError> {
        let mut log = self.log.lock().unwrap();
        log.quiesces += 1;
        Ok(log.queues.clone())
    }
    fn unquiesce(&mut self) {
        self.log.lock().unwrap().unquiesces += 1;
    }
}

fn fake() -> (Box<Fake>, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let evts = (0..2)
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .collect();
    let dev = Fake {
        log: log.clone(),
        evts,
    };
    (Box::new(dev), log)
}

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn interrupt() -> Arc<Interrupt> {
    Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()))
}

fn transport() -> (MmioTransport, Arc<Mutex<Log>>) {
    let (dev, log) = fake();
    (MmioTransport::new(dev, memory(), interrupt()), log)
}

/// A transport the driver brought up to DRIVER_OK, two queues of 16.
fn running() -> (MmioTransport, Arc<Mutex<Log>>) {
    let (mut t, log) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000);
    setup_queue(&mut t, 1, 0x2_0000);
    w(&mut t, regs::STATUS, ALL);
    assert!(t.is_activated());
    (t, log)
}

fn restore(state: &MmioTransportState) -> Result<(MmioTransport, Arc<Mutex<Log>>), RestoreError> {
    let (dev, log) = fake();
    MmioTransport::restore(dev, memory(), interrupt(), state).map(|t| (t, log))
}

fn r(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport) {
    w(t, regs::STATUS, status::ACKNOWLEDGE);
    w(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w(t, regs::DRIVER_FEATURES_SEL, 1);
    w(t, regs::DRIVER_FEATURES, 1);
    w(
        t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

fn setup_queue(t: &mut MmioTransport, index: u32, base: u32) {
    w(t, regs::QUEUE_SEL, index);
    w(t, regs::QUEUE_NUM, 16);
    w(t, regs::QUEUE_DESC_LOW, base);
    w(t, regs::QUEUE_DESC_HIGH, 0);
    w(t, regs::QUEUE_AVAIL_LOW, base + 0x1000);
    w(t, regs::QUEUE_USED_LOW, base + 0x2000);
    w(t, regs::QUEUE_READY, 1);
}

const ALL: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn identity_registers() {
    let (mut t, _) = transport();
    assert_eq!(r(&mut t, regs::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(r(&mut t, regs::VERSION), 2);
    assert_eq!(r(&mut t, regs::DEVICE_ID), 19);
    w(&mut t, regs::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&mut t, regs::DEVICE_FEATURES), 1);
    w(&mut t, regs::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&mut t, regs::DEVICE_FEATURES), 0);
    w(&mut t, regs::DEVICE_FEATURES_SEL, 7);
    assert_eq!(r(&mut t, regs::DEVICE_FEATURES), 0);
    assert_eq!(r(&mut t, regs::QUEUE_NUM_MAX), 256);
    w(&mut t, regs::QUEUE_SEL, 9);
    assert_eq!(r(&mut t, regs::QUEUE_NUM_MAX), 0);
    let mut cfg = [0u8; 8];
    t.read(regs::CONFIG, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), 7);
    let mut odd = [9u8; 2];
    t.read(regs::STATUS, &mut odd);
    assert_eq!(odd, [0, 0]);
}

#[test]
fn full_bring_up_and_reset() {
    let (mut t, log) = transport();
    negotiate(&mut t);
    assert_eq!(
        r(&mut t, regs::STATUS) & status::FEATURES_OK,
        status::FEATURES_OK
    );
    setup_queue(&mut t, 0, 0x1_0000);
    setup_queue(&mut t, 1, 0x2_0000);
    w(&mut t, regs::STATUS, ALL);
    assert_eq!(r(&mut t, regs::STATUS), ALL);
    assert!(t.is_activated());
    assert_eq!(log.lock().unwrap().activations, vec![(2, 1 << 32)]);
    // Queues cannot change while live.
    w(&mut t, regs::QUEUE_SEL, 0);
    w(&mut t, regs::QUEUE_READY, 0);
    assert_eq!(r(&mut t, regs::QUEUE_READY), 1);
    // Notify goes to the queue eventfd; bogus indexes are ignored.
    w(&mut t, regs::QUEUE_NOTIFY, 1);
    w(&mut t, regs::QUEUE_NOTIFY, 99);
    assert_eq!(t.device().queue_events()[1].read().unwrap(), 1);
    // Interrupt ack.
    t.interrupt.signal_used_queue();
    assert_eq!(r(&mut t, regs::INTERRUPT_STATUS), 1);
    w(&mut t, regs::INTERRUPT_ACK, 1);
    assert_eq!(r(&mut t, regs::INTERRUPT_STATUS), 0);
    // Reset.
    w(&mut t, regs::STATUS, 0);
    assert_eq!(r(&mut t, regs::STATUS), 0);
    assert!(!t.is_activated());
    assert_eq!(log.lock().unwrap().resets, 1);
    assert_eq!(r(&mut t, regs::QUEUE_READY), 0);
}

#[test]
fn features_must_include_version_1_and_be_offered() {
    let (mut t, _) = transport();
    w(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    w(&mut t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    // Legacy driver: no VERSION_1.
    w(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r(&mut t, regs::STATUS) & status::FEATURES_OK, 0);
    // A feature the device never offered.
    w(&mut t, regs::DRIVER_FEATURES_SEL, 1);
    w(&mut t, regs::DRIVER_FEATURES, 1 | 4);
    w(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r(&mut t, regs::STATUS) & status::FEATURES_OK, 0);
    w(&mut t, regs::DRIVER_FEATURES, 1);
    w(
        &mut t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_ne!(r(&mut t, regs::STATUS) & status::FEATURES_OK, 0);
    // Features are frozen after FEATURES_OK.
    w(&mut t, regs::DRIVER_FEATURES, 1 | 4);
    assert_eq!(t.driver_features, 1 << 32);
}

#[test]
fn status_steps_are_checked() {
    let (mut t, log) = transport();
    // Skipping steps is refused.
    w(&mut t, regs::STATUS, ALL);
    assert_eq!(r(&mut t, regs::STATUS), 0);
    w(&mut t, regs::STATUS, status::DRIVER);
    assert_eq!(r(&mut t, regs::STATUS), 0);
    negotiate(&mut t);
    // Taking a bit away is refused.
    w(&mut t, regs::STATUS, status::ACKNOWLEDGE);
    assert_eq!(
        r(&mut t, regs::STATUS) & status::FEATURES_OK,
        status::FEATURES_OK
    );
    // FAILED sticks until reset.
    w(&mut t, regs::STATUS, status::FAILED);
    assert_ne!(r(&mut t, regs::STATUS) & status::FAILED, 0);
    assert!(log.lock().unwrap().activations.is_empty());
}

#[test]
fn bad_queues_do_not_activate() {
    let (mut t, log) = transport();
    // Queue registers before FEATURES_OK are ignored.
    w(&mut t, regs::QUEUE_NUM, 8);
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000);
    // Not a power of two, too big, zero: refused, size stays.
    w(&mut t, regs::QUEUE_SEL, 1);
    for bad in [3, 512, 0, 0x1_0000] {
        w(&mut t, regs::QUEUE_NUM, bad);
    }
    assert_eq!(t.queues[1].size(), 256);
    // Misaligned ring: refused.
    w(&mut t, regs::QUEUE_DESC_LOW, 0x3_0003);
    assert_eq!(t.queues[1].desc_table(), 0);
    // Rings outside guest memory (1 MiB): activation fails, NEEDS_RESET.
    w(&mut t, regs::QUEUE_DESC_LOW, 0x3_0000);
    w(&mut t, regs::QUEUE_DESC_HIGH, 1);
    w(&mut t, regs::QUEUE_AVAIL_LOW, 0x3_1000);
    w(&mut t, regs::QUEUE_USED_LOW, 0x3_2000);
    w(&mut t, regs::QUEUE_READY, 1);
    w(&mut t, regs::STATUS, ALL);
    assert!(!t.is_activated());
    assert_ne!(r(&mut t, regs::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert!(log.lock().unwrap().activations.is_empty());
    assert_ne!(r(&mut t, regs::INTERRUPT_STATUS) & 2, 0);
    // Reset recovers.
    w(&mut t, regs::STATUS, 0);
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000);
    setup_queue(&mut t, 1, 0x2_0000);
    w(&mut t, regs::STATUS, ALL);
    assert!(t.is_activated());
}

#[test]
fn garbage_accesses_never_panic() {
    let (mut t, _) = transport();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let off = (seed >> 8) % 0x1100;
        let len = [1usize, 2, 4, 8, 3][(seed % 5) as usize];
        let v = (seed >> 20).to_le_bytes();
        if seed & 1 == 0 {
            t.write(off, &v[..len]);
        } else {
            let mut b = vec![0u8; len];
            t.read(off, &mut b);
        }
    }
    t.read(u64::MAX, &mut [0u8; 4]);
    t.write(u64::MAX - 1, &[1, 2, 3, 4]);
}

#[test]
fn cmdline_entries() {
    assert_eq!(
        cmdline_entry(0xd000_0000, 0x1000, 5),
        "virtio_mmio.device=4K@0xd0000000:5"
    );
    assert_eq!(
        cmdline_entry(0x1000, 100, 6),
        "virtio_mmio.device=100@0x1000:6"
    );
}

#[test]
fn state_round_trip_through_postcard() {
    let (mut t, _) = running();
    w(&mut t, regs::QUEUE_SEL, 1);
    w(&mut t, regs::DEVICE_FEATURES_SEL, 1);
    t.interrupt.signal_config();
    t.quiesce().unwrap();
    let state = t.state();
    assert_eq!(state.status, ALL);
    assert_eq!(state.driver_features, 1 << VIRTIO_F_VERSION_1);
    assert_eq!((state.queue_select, state.device_features_select), (1, 1));
    assert_eq!(state.interrupt_status, VIRTIO_INT_CONFIG);
    assert_eq!(state.queues.len(), 2);
    assert_eq!(state.queues[1].desc_table, 0x2_0000);
    assert_eq!(state.queues[1].used_ring, 0x2_2000);
    assert_eq!(state.queues[1].size, 16);

    let bytes = postcard::to_allocvec(&state).unwrap();
    let back: MmioTransportState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);

    let (mut rt, log) = restore(&back).unwrap();
    assert!(rt.is_activated());
    assert_eq!(log.lock().unwrap().activations, vec![(2, 1 << 32)]);
    assert_eq!(rt.state(), state);
    // The pending interrupt was raised again.
    assert_eq!(rt.interrupt.irqfd().read().unwrap(), 1);
    assert_eq!(r(&mut rt, regs::INTERRUPT_STATUS), VIRTIO_INT_CONFIG);
    // Live from here: notifies reach the device, reset works.
    w(&mut rt, regs::QUEUE_NOTIFY, 0);
    assert_eq!(rt.device().queue_events()[0].read().unwrap(), 1);
    w(&mut rt, regs::STATUS, 0);
    assert_eq!(log.lock().unwrap().resets, 1);
}

#[test]
fn restore_mid_negotiation_does_not_activate() {
    let (mut t, _) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000);
    // Half-written and outside memory, not ready: fine before DRIVER_OK.
    w(&mut t, regs::QUEUE_SEL, 1);
    w(&mut t, regs::QUEUE_DESC_HIGH, 7);
    let state = t.state();
    let (mut rt, log) = restore(&state).unwrap();
    assert!(!rt.is_activated());
    assert_eq!(rt.state(), state);
    // The driver carries on where it was.
    setup_queue(&mut rt, 1, 0x2_0000);
    w(&mut rt, regs::STATUS, ALL);
    assert!(rt.is_activated());
    assert_eq!(log.lock().unwrap().activations.len(), 1);

    // A failed activation (NEEDS_RESET) is restored as failed, not retried.
    let (mut t, _) = transport();
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000);
    setup_queue(&mut t, 1, 0xf_f000);
    w(&mut t, regs::STATUS, ALL);
    assert!(!t.is_activated());
    let (rt, log) = restore(&t.state()).unwrap();
    assert!(!rt.is_activated());
    assert_ne!(rt.status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(log.lock().unwrap().activations.is_empty());
}

#[test]
fn restore_refuses_bad_state() {
    let (t, _) = running();
    let good = t.state();
    type Edit = fn(&mut MmioTransportState);
    let cases: &[(&str, Edit)] = &[
        ("device id", |s| s.device_id = 1),
        ("queue count", |s| {
            s.queues.pop();
        }),
        ("status skips a step", |s| {
            s.status = status::ACKNOWLEDGE | status::DRIVER_OK
        }),
        ("status unknown bit", |s| s.status |= 0x10),
        ("needs reset before DRIVER_OK", |s| {
            s.status = status::ACKNOWLEDGE | status::DEVICE_NEEDS_RESET
        }),
        ("feature not offered", |s| s.driver_features |= 1 << 33),
        ("no VERSION_1", |s| s.driver_features = 0),
        ("features before DRIVER", |s| {
            s.status = status::ACKNOWLEDGE;
            s.driver_features = 1;
        }),
        ("interrupt bits", |s| s.interrupt_status = 4),
        ("max size", |s| s.queues[0].max_size = 128),
        ("size not a power of two", |s| s.queues[0].size = 24),
        ("size too big", |s| s.queues[0].size = 512),
        ("size zero", |s| s.queues[1].size = 0),
        ("misaligned ring", |s| s.queues[1].avail_ring += 1),
        ("ring outside memory", |s| s.queues[1].used_ring = 0x10_0000),
        ("ring at the end of memory", |s| {
            s.queues[1].desc_table = 0xf_ff80
        }),
        ("ring beyond 4 GiB", |s| s.queues[0].desc_table |= 1 << 32),
        ("queue not ready", |s| s.queues[0].ready = false),
        ("event index", |s| s.queues[0].event_idx_enabled = true),
    ];
    for (what, edit) in cases {
        let mut bad = good.clone();
        edit(&mut bad);
        match restore(&bad) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                let ok = match *what {
                    "device id" => matches!(
                        e,
                        RestoreError::DeviceId {
                            expected: 19,
                            found: 1
                        }
                    ),
                    "queue count" => matches!(e, RestoreError::QueueCount { .. }),
                    w if w.starts_with("status") || w.starts_with("needs") => {
                        matches!(e, RestoreError::Status(_))
                    }
                    w if w.contains("feature") || w.contains("VERSION") => {
                        matches!(e, RestoreError::Features { .. })
                    }
                    "interrupt bits" => matches!(e, RestoreError::InterruptStatus(4)),
                    "max size" => matches!(
                        e,
                        RestoreError::Queue {
                            index: 0,
                            fault: QueueFault::MaxSize { .. }
                        }
                    ),
                    "event index" => matches!(
                        e,
                        RestoreError::Queue {
                            fault: QueueFault::EventIdx,
                            ..
                        }
                    ),
                    w if w.contains("ring") && !w.contains("misaligned") || w.contains("ready") => {
                        matches!(
                            e,
                            RestoreError::Queue {
                                fault: QueueFault::Unusable,
                                ..
                            }
                        )
                    }
                    _ => matches!(
                        e,
                        RestoreError::Queue {
                            fault: QueueFault::Invalid(_),
                            ..
                        }
                    ),
                };
                assert!(ok, "{what}: wrong error {e:?} ({e})");
            }
        }
    }
    // The unchanged state is fine.
    assert!(restore(&good).is_ok());
    // FAILED is reachable from any step.
    let mut failed = good.clone();
    failed.status |= status::FAILED;
    assert!(restore(&failed).is_ok());
}

#[test]
fn quiesce_takes_the_device_queue_positions() {
    let (mut t, log) = running();
    // The "worker" moved the rings on.
    for (i, q) in log.lock().unwrap().queues.iter_mut().enumerate() {
        q.next_avail = 5 + i as u16;
        q.next_used = 3 + i as u16;
    }
    assert_eq!(t.state().queues[1].next_avail, 0);
    t.quiesce().unwrap();
    let state = t.state();
    assert_eq!(
        state
            .queues
            .iter()
            .map(|q| (q.next_avail, q.next_used))
            .collect::<Vec<_>>(),
        vec![(5, 3), (6, 4)]
    );
    t.unquiesce();
    {
        let l = log.lock().unwrap();
        assert_eq!((l.quiesces, l.unquiesces), (1, 1));
    }
    // A restore hands the device exactly those positions.
    let (_r, rlog) = restore(&state).unwrap();
    let q = rlog.lock().unwrap().queues.clone();
    assert_eq!((q[0].next_avail, q[1].next_used), (5, 4));

    // A device that reports the wrong number of queues.
    log.lock().unwrap().queues.pop();
    assert!(matches!(
        t.quiesce(),
        Err(QuiesceError::QueueCount {
            expected: 2,
            got: 1
        })
    ));
    t.unquiesce();
}
