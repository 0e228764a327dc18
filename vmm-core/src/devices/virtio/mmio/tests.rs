//! The transport's register state machine, against a fake device.

use std::sync::{Arc, Mutex};

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::virtio::ActivateError;

#[derive(Default)]
struct Log {
    activations: Vec<(usize, u64)>,
    resets: usize,
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
        self.log
            .lock()
            .unwrap()
            .activations
            .push((a.queues.len(), a.features));
        Ok(())
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().resets += 1;
    }
}

fn transport() -> (MmioTransport, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let evts = (0..2)
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .collect();
    let dev = Fake {
        log: log.clone(),
        evts,
    };
    let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    (MmioTransport::new(Box::new(dev), mem, irq), log)
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
