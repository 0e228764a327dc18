//! A hand-written virtio-vsock driver for tests: split rings in real guest
//! memory and descriptor chains built by hand, including malformed ones.

use std::collections::HashMap;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::defs::{EVQ, HDR_SIZE, HOST_CID, RXQ, TXQ, TYPE_STREAM};
use super::packet::Header;
use crate::memory::GuestMemory;

/// Guest RAM of the test driver.
pub(crate) const MEM_SIZE: u64 = 0x40_0000;
/// The guest's CID.
pub(crate) const CID: u64 = 3;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// Where data buffers start (above the rings).
const DATA_BASE: u64 = 0x10_0000;

/// The driver side of one split queue.
pub(crate) struct Ring {
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    pub(crate) size: u16,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    pub(crate) fn new(base: u64, size: u16) -> Self {
        let avail = base + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        Self {
            desc: base,
            avail,
            used,
            size,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The device's queue for this ring.
    pub(crate) fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Add a chain of (addr, len, device-writable) buffers; returns its head.
    pub(crate) fn add(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            let at = GuestAddress(self.desc + 16 * u64::from(idx));
            mem.write_obj(addr, at).unwrap();
            mem.write_obj(len, at.unchecked_add(8)).unwrap();
            mem.write_obj(flags, at.unchecked_add(12)).unwrap();
            mem.write_obj((idx + 1) % self.size, at.unchecked_add(14))
                .unwrap();
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// The device's used index in guest memory.
    pub(crate) fn used_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// New (head, len) entries of the used ring.
    pub(crate) fn used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx = self.used_idx(mem);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// The driver: three rings (rx, tx, event) and a data buffer allocator.
pub(crate) struct Driver {
    pub(crate) mem: GuestMemory,
    pub(crate) rings: Vec<Ring>,
    next_data: u64,
    bufs: HashMap<(usize, u16), u64>,
}

impl Driver {
    /// Fresh guest memory with three 256-entry rings at 64 KiB, 128 KiB and
    /// 192 KiB.
    pub(crate) fn new() -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let rings = (0..3).map(|i| Ring::new(0x1_0000 * (i + 1), 256)).collect();
        Self {
            mem,
            rings,
            next_data: DATA_BASE,
            bufs: HashMap::new(),
        }
    }

    /// The device's queues for the three rings.
    pub(crate) fn queues(&self) -> Vec<Queue> {
        self.rings.iter().map(Ring::queue).collect()
    }

    pub(crate) fn alloc(&mut self, len: u64) -> u64 {
        if self.next_data + len > MEM_SIZE {
            self.next_data = DATA_BASE;
        }
        let at = self.next_data;
        self.next_data += (len + 15) & !15;
        at
    }

    /// The guest sends `hdr` (len set from the payload) and `payload`.
    pub(crate) fn tx(&mut self, mut hdr: Header, payload: &[u8]) {
        hdr.len = payload.len() as u32;
        self.tx_raw(&hdr.to_bytes(), payload);
    }

    pub(crate) fn tx_raw(&mut self, hdr: &[u8], payload: &[u8]) {
        let h = self.alloc(hdr.len() as u64);
        self.mem.write_slice(hdr, GuestAddress(h)).unwrap();
        let mut bufs = vec![(h, hdr.len() as u32, false)];
        if !payload.is_empty() {
            let p = self.alloc(payload.len() as u64);
            self.mem.write_slice(payload, GuestAddress(p)).unwrap();
            bufs.push((p, payload.len() as u32, false));
        }
        self.tx_chain(&bufs);
    }

    pub(crate) fn tx_chain(&mut self, bufs: &[(u64, u32, bool)]) {
        self.rings[TXQ].add(&self.mem, bufs);
    }

    /// Offer `n` device-writable buffers of `size` bytes on queue `q`.
    pub(crate) fn offer(&mut self, q: usize, n: usize, size: u32) {
        for _ in 0..n {
            let at = self.alloc(u64::from(size));
            let head = self.rings[q].add(&self.mem, &[(at, size, true)]);
            self.bufs.insert((q, head), at);
        }
    }

    pub(crate) fn offer_rx(&mut self, n: usize, size: u32) {
        self.offer(RXQ, n, size);
    }

    /// Packets the device put on the rx ring since the last call.
    pub(crate) fn rx_packets(&mut self) -> Vec<(Header, Vec<u8>)> {
        let used = self.rings[RXQ].used(&self.mem);
        used.into_iter()
            // Buffers too small for a header come back empty.
            .filter(|&(_, len)| len > 0)
            .map(|(head, len)| {
                let mut b = vec![0u8; len as usize];
                let at = self.bufs[&(RXQ, head)];
                self.mem.read_slice(&mut b, GuestAddress(at)).unwrap();
                let h = Header::parse(&b).unwrap();
                assert_eq!(h.len as usize, b.len() - HDR_SIZE);
                (h, b[HDR_SIZE..].to_vec())
            })
            .collect()
    }

    /// Event ids the device put on the event ring since the last call.
    pub(crate) fn events(&mut self) -> Vec<u32> {
        let used = self.rings[EVQ].used(&self.mem);
        used.into_iter()
            .map(|(head, len)| {
                assert_eq!(len, 4);
                let at = self.bufs[&(EVQ, head)];
                self.mem.read_obj(GuestAddress(at)).unwrap()
            })
            .collect()
    }

    pub(crate) fn tx_used(&mut self) -> Vec<(u16, u32)> {
        self.rings[TXQ].used(&self.mem)
    }
}

/// A header from the guest to the host.
pub(crate) fn from_guest(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 0,
    }
}

/// The ops of some packets.
pub(crate) fn ops(pkts: &[(Header, Vec<u8>)]) -> Vec<u16> {
    pkts.iter().map(|p| p.0.op).collect()
}
