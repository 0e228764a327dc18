//! The device's queue processing against a hand-written driver: split
//! rings in real guest memory, descriptor chains built by hand, including
//! malformed ones.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::vsock::defs::*;
use crate::devices::virtio::vsock::testutil::{from_guest, ops, Driver, CID, MEM_SIZE};
use crate::devices::virtio::vsock::VsockError;

struct Harness {
    drv: Driver,
    active: Active,
    muxer: Muxer,
    buf: Vec<u8>,
}

impl Harness {
    fn new() -> Self {
        let drv = Driver::new();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        Self {
            active: Active {
                mem: drv.mem.clone(),
                queues: drv.queues(),
                interrupt,
            },
            drv,
            muxer: Muxer::new(CID, None).unwrap(),
            buf: Vec::new(),
        }
    }

    fn tx(&mut self, hdr: Header, payload: &[u8]) {
        self.drv.tx(hdr, payload);
    }

    fn tx_raw(&mut self, hdr: &[u8], payload: &[u8]) {
        self.drv.tx_raw(hdr, payload);
    }

    fn tx_chain(&mut self, bufs: &[(u64, u32, bool)]) {
        self.drv.tx_chain(bufs);
    }

    fn offer_rx(&mut self, n: usize, size: u32) {
        self.drv.offer_rx(n, size);
    }

    fn run(&mut self) -> bool {
        self.muxer.process_events();
        self.muxer.tick(Instant::now());
        let a = process_tx(&mut self.active, &mut self.muxer, &mut self.buf, CID);
        let b = process_rx(&mut self.active, &mut self.muxer, &mut self.buf);
        a | b
    }

    fn rx_packets(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.drv.rx_packets()
    }

    fn tx_used(&mut self) -> Vec<(u16, u32)> {
        self.drv.tx_used()
    }
}

#[test]
fn guest_connects_to_in_process_listener() {
    let mut h = Harness::new();
    let (sink, incoming) = mpsc::sync_channel(4);
    h.muxer.listen(1234, 1, sink).unwrap();
    h.offer_rx(8, 4096);
    h.tx(from_guest(op::REQUEST, 5000, 1234), &[]);
    assert!(h.run());
    let pkts = h.rx_packets();
    assert_eq!(ops(&pkts), vec![op::RESPONSE]);
    let r = pkts[0].0;
    assert_eq!(
        (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
        (2, 3, 1234, 5000)
    );
    let mut host = incoming.try_recv().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // Host → guest.
    host.write_all(b"hello guest").unwrap();
    h.run();
    let pkts = h.rx_packets();
    assert_eq!(ops(&pkts), vec![op::RW]);
    assert_eq!(pkts[0].1, b"hello guest");

    // Guest → host.
    h.tx(from_guest(op::RW, 5000, 1234), b"hello host");
    h.run();
    let mut b = [0u8; 10];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello host");
    assert_eq!(h.tx_used().len(), 2);

    // The guest closes: RST back, host sees EOF.
    let mut sd = from_guest(op::SHUTDOWN, 5000, 1234);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    h.tx(sd, &[]);
    h.run();
    assert_eq!(ops(&h.rx_packets()), vec![op::RST]);
    assert_eq!(host.read(&mut b).unwrap(), 0);
    assert_eq!(h.muxer.connection_count(), 0);
}

#[test]
fn host_connects_to_guest() {
    let mut h = Harness::new();
    h.offer_rx(16, 4096);
    let (reply, rx) = mpsc::sync_channel(1);
    h.muxer.connect(1024, Duration::from_secs(5), reply);
    h.run();
    let pkts = h.rx_packets();
    assert_eq!(ops(&pkts), vec![op::REQUEST]);
    let req = pkts[0].0;
    assert_eq!(req.dst_port, 1024);
    assert!(req.src_port >= FIRST_EPHEMERAL_PORT);
    assert!(rx.try_recv().is_err());
    h.tx(from_guest(op::RESPONSE, 1024, req.src_port), &[]);
    h.run();
    let mut s = rx.try_recv().unwrap().unwrap();
    s.write_all(b"ping").unwrap();
    h.run();
    let pkts = h.rx_packets();
    assert_eq!((pkts[0].0.op, &pkts[0].1[..]), (op::RW, &b"ping"[..]));

    // A refused one.
    let (reply, rx) = mpsc::sync_channel(1);
    h.muxer.connect(9, Duration::from_secs(5), reply);
    h.run();
    let req = h.rx_packets()[0].0;
    h.tx(from_guest(op::RST, 9, req.src_port), &[]);
    h.run();
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(VsockError::Refused(9))
    ));

    // One that times out: RST to the guest, Timeout to the caller.
    let (reply, rx) = mpsc::sync_channel(1);
    h.muxer.connect(10, Duration::from_millis(200), reply);
    h.run();
    std::thread::sleep(Duration::from_millis(250));
    h.run();
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(VsockError::Timeout { port: 10, .. })
    ));
    assert_eq!(ops(&h.rx_packets()), vec![op::REQUEST, op::RST]);
}

#[test]
fn nobody_listening_gets_rst() {
    let mut h = Harness::new();
    h.offer_rx(4, 4096);
    h.tx(from_guest(op::REQUEST, 5000, 7777), &[]);
    h.tx(from_guest(op::RW, 5000, 7777), b"data for nobody");
    h.tx(from_guest(op::RST, 5000, 7777), &[]);
    h.run();
    let pkts = h.rx_packets();
    assert_eq!(ops(&pkts), vec![op::RST, op::RST]);
    assert_eq!(pkts[0].0.dst_port, 5000);
}

#[test]
fn malformed_packets_are_rejected_without_panic() {
    let mut h = Harness::new();
    h.offer_rx(64, 4096);
    let good = from_guest(op::REQUEST, 1, 2);
    // Wrong source CID: dropped silently.
    let mut bad = good;
    bad.src_cid = 99;
    h.tx(bad, &[]);
    // Wrong destination CID, wrong type, unknown op: RST each.
    let mut bad = good;
    bad.dst_cid = 7;
    h.tx(bad, &[]);
    let mut bad = good;
    bad.type_ = 2;
    h.tx(bad, &[]);
    let mut bad = good;
    bad.op = 0x77;
    h.tx(bad, &[]);
    let mut bad = good;
    bad.op = 0;
    h.tx(bad, &[]);
    // len beyond the chain, and beyond 64 KiB.
    let mut bad = good;
    bad.len = 100;
    h.tx_raw(&bad.to_bytes(), b"short");
    let mut bad = good;
    bad.len = MAX_PKT_PAYLOAD + 1;
    h.tx_raw(&bad.to_bytes(), &vec![0u8; MAX_PKT_PAYLOAD as usize + 1]);
    // A header shorter than 44 bytes.
    h.tx_raw(&good.to_bytes()[..20], &[]);
    // Descriptors outside guest memory, overflowing, zero-length, write-only.
    h.tx_chain(&[(MEM_SIZE - 10, 44, false)]);
    h.tx_chain(&[(u64::MAX - 8, 44, false)]);
    h.tx_chain(&[(0x20_0000, u32::MAX, false)]);
    h.tx_chain(&[(0x20_0000, 0, false)]);
    h.tx_chain(&[(0x20_0000, 44, true)]);
    h.tx_chain(&[(0x20_0000, 44, false), (0x1_0000_0000, 4096, false)]);
    h.run();
    // Every chain came back, none was kept.
    assert_eq!(h.tx_used().len(), 14);
    assert!(h.tx_used().is_empty());
    let pkts = h.rx_packets();
    assert_eq!(ops(&pkts), vec![op::RST; 4]);
    for (p, _) in &pkts {
        assert_eq!((p.dst_cid, p.dst_port, p.src_port), (CID, 1, 2));
    }
    assert_eq!(h.muxer.connection_count(), 0);
}

#[test]
fn bad_rx_buffers_are_skipped() {
    let mut h = Harness::new();
    let mem = h.active.mem.clone();
    h.drv.rings[RXQ].add(&mem, &[(0x20_0000, 10, true)]);
    h.drv.rings[RXQ].add(&mem, &[(MEM_SIZE + 0x1000, 4096, true)]);
    h.drv.rings[RXQ].add(&mem, &[(0x20_0000, 4096, false)]);
    h.offer_rx(1, 4096);
    h.tx(from_guest(op::RW, 5, 6), b"nobody");
    h.run();
    let used = h.drv.rings[RXQ].used(&mem);
    assert_eq!(
        used.iter().map(|u| u.1).collect::<Vec<_>>(),
        vec![0, 0, 0, 44]
    );
}

#[test]
fn random_chains_never_panic() {
    let mut h = Harness::new();
    let (sink, _incoming) = mpsc::sync_channel(128);
    h.muxer.listen(2, 1, sink).unwrap();
    let mut seed = 0xdead_beef_cafe_f00du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        h.offer_rx(2, [8u32, 44, 100, 4096][round % 4]);
        for _ in 0..4 {
            let r = next();
            let mut hdr = from_guest((r % 9) as u16, (r >> 8) as u32 % 4, 2);
            if r & 0x100 != 0 {
                hdr.src_cid = r >> 40;
            }
            hdr.flags = (r >> 16) as u32 % 4;
            hdr.buf_alloc = (r >> 20) as u32;
            hdr.fwd_cnt = (r >> 24) as u32;
            let mut bytes = hdr.to_bytes();
            if r & 0x200 != 0 {
                bytes[24..28].copy_from_slice(&((r >> 32) as u32).to_le_bytes());
            }
            let payload = vec![0x5a; (r >> 50) as usize % 300];
            if r & 0x400 != 0 {
                h.tx_raw(&bytes, &payload);
            } else {
                let n = 1 + (r >> 60) as usize % 3;
                let bufs: Vec<(u64, u32, bool)> = (0..n)
                    .map(|_| {
                        let x = next();
                        (
                            x % (MEM_SIZE + 0x1000),
                            (x >> 40) as u32 % 70_000,
                            x & 1 == 1,
                        )
                    })
                    .collect();
                h.tx_chain(&bufs);
            }
        }
        h.run();
        h.rx_packets();
    }
}

#[test]
fn transport_reset_event() {
    let mut h = Harness::new();
    let mem = h.active.mem.clone();
    assert!(!write_event(&mut h.active, EVENT_TRANSPORT_RESET));
    h.drv.rings[EVQ].add(&mem, &[(0x30_0000, 8, true)]);
    mem.write_obj(0xffff_ffffu32, GuestAddress(0x30_0000))
        .unwrap();
    assert!(write_event(&mut h.active, EVENT_TRANSPORT_RESET));
    assert_eq!(h.drv.rings[EVQ].used(&mem), vec![(0, 4)]);
    assert_eq!(mem.read_obj::<u32>(GuestAddress(0x30_0000)).unwrap(), 0);
}

#[test]
fn check_tx_rules() {
    let g = from_guest(op::RW, 1, 2);
    assert_eq!(check_tx(&g, CID), Verdict::Accept);
    let mut b = g;
    b.src_cid = 4;
    assert_eq!(check_tx(&b, CID), Verdict::Drop);
    let mut b = g;
    b.dst_cid = 3;
    assert_eq!(check_tx(&b, CID), Verdict::Rst);
    b.op = op::RST;
    assert_eq!(check_tx(&b, CID), Verdict::Drop);
    let mut b = g;
    b.op = op::CREDIT_REQUEST + 1;
    assert_eq!(check_tx(&b, CID), Verdict::Rst);
}
