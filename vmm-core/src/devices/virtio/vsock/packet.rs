//! vsock packets: the 44-byte little-endian header, and moving packets
//! between descriptor chains and host memory.
//!
//! A tx chain (guest → host) holds the header and then `len` payload bytes in
//! its device-readable descriptors; an rx chain (host → guest) offers
//! device-writable descriptors for a header and as much payload as fits. The
//! chain walking and the guest-memory bounds checks are virtio-queue's
//! [`Reader`]/[`Writer`]: a descriptor that points outside guest memory fails
//! the whole chain. This module checks everything else the guest controls in
//! a header (`len` against the chain and [`MAX_PKT_PAYLOAD`]); the addressing
//! checks (CIDs, type, op) belong to the device and muxer, which know what to
//! answer. We parse the header ourselves rather than with the virtio-vsock
//! crate: it is 44 bytes, and a plain parser over a byte array is trivially
//! fuzzable and keeps guest memory access in one place.

use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};

use super::defs::{HDR_SIZE, MAX_PKT_PAYLOAD};
use crate::memory::GuestMemory;

/// The vsock packet header (`struct virtio_vsock_hdr`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1 = stream).
    pub type_: u16,
    /// Operation ([`super::defs::op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN: RCV = 1, SEND = 2).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wraps).
    pub fwd_cnt: u32,
}

fn u64_at(b: &[u8; HDR_SIZE], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8; HDR_SIZE], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u16_at(b: &[u8; HDR_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    /// Decode a header from its wire form.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        Self {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            type_: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    /// Decode a header from the start of `b`, if it is long enough.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let arr: &[u8; HDR_SIZE] = b.get(..HDR_SIZE)?.try_into().ok()?;
        Some(Self::from_bytes(arr))
    }

    /// Encode the header in its wire form.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet could not be read from or written to a descriptor chain.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The chain is malformed or points outside guest memory.
    #[error("bad descriptor chain: {0}")]
    Chain(virtio_queue::Error),
    /// Fewer readable bytes than a header.
    #[error("tx chain holds {0} readable bytes, less than a {HDR_SIZE}-byte header")]
    ShortHeader(usize),
    /// `len` is bigger than any packet may be.
    #[error("header len {0} exceeds the {MAX_PKT_PAYLOAD}-byte packet limit")]
    TooLong(u32),
    /// `len` is bigger than the chain's payload.
    #[error("header len {len} exceeds the {available} payload bytes in the chain")]
    LenBeyondChain {
        /// Header's len.
        len: u32,
        /// Readable bytes after the header.
        available: usize,
    },
    /// The rx chain cannot even hold a header.
    #[error("rx chain offers {0} writable bytes, less than a header")]
    RxTooSmall(usize),
    /// Copying to or from guest memory failed.
    #[error("guest memory access failed: {0}")]
    Io(std::io::Error),
}

type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Read a guest → host packet from `chain`: returns its header, with the
/// payload (exactly `len` bytes) in `payload`.
pub fn read_tx(
    mem: &GuestMemory,
    chain: Chain<'_>,
    payload: &mut Vec<u8>,
) -> Result<Header, PacketError> {
    let mut r: Reader<'_> = chain.reader(mem).map_err(PacketError::Chain)?;
    let total = r.available_bytes();
    if total < HDR_SIZE {
        return Err(PacketError::ShortHeader(total));
    }
    let mut hb = [0u8; HDR_SIZE];
    r.read_exact(&mut hb).map_err(PacketError::Io)?;
    let hdr = Header::from_bytes(&hb);
    if hdr.len > MAX_PKT_PAYLOAD {
        return Err(PacketError::TooLong(hdr.len));
    }
    let available = total - HDR_SIZE;
    if hdr.len as usize > available {
        return Err(PacketError::LenBeyondChain {
            len: hdr.len,
            available,
        });
    }
    payload.clear();
    payload.resize(hdr.len as usize, 0);
    r.read_exact(payload).map_err(PacketError::Io)?;
    Ok(hdr)
}

/// Room in an rx chain: where a host → guest packet goes.
pub struct RxBuffer<'a> {
    w: Writer<'a>,
}

impl<'a> RxBuffer<'a> {
    /// Wrap the writable part of `chain`.
    pub fn new(mem: &'a GuestMemory, chain: Chain<'_>) -> Result<Self, PacketError> {
        let w: Writer<'a> = chain.writer(mem).map_err(PacketError::Chain)?;
        if w.available_bytes() < HDR_SIZE {
            return Err(PacketError::RxTooSmall(w.available_bytes()));
        }
        Ok(Self { w })
    }

    /// Most payload bytes that fit after the header.
    pub fn payload_capacity(&self) -> usize {
        (self.w.available_bytes() - HDR_SIZE).min(MAX_PKT_PAYLOAD as usize)
    }

    /// Write `hdr` (its `len` set to the payload length) and `payload`;
    /// returns the bytes written, for the used ring.
    pub fn write(mut self, mut hdr: Header, payload: &[u8]) -> Result<u32, PacketError> {
        let payload = &payload[..payload.len().min(self.payload_capacity())];
        hdr.len = payload.len() as u32;
        self.w.write_all(&hdr.to_bytes()).map_err(PacketError::Io)?;
        self.w.write_all(payload).map_err(PacketError::Io)?;
        Ok((HDR_SIZE + payload.len()) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 1024,
            len: 5,
            type_: 1,
            op: 5,
            flags: 0xdead_beef,
            buf_alloc: 256 * 1024,
            fwd_cnt: 77,
        }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(Header::from_bytes(&b), h);
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[16..20], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&b[24..28], &5u32.to_le_bytes());
        assert_eq!(&b[28..30], &[1, 0]);
        assert_eq!(&b[30..32], &[5, 0]);
        assert_eq!(&b[40..44], &77u32.to_le_bytes());
        assert_eq!(Header::parse(&b[..43]), None);
        let mut long = b.to_vec();
        long.extend_from_slice(b"tail");
        assert_eq!(Header::parse(&long), Some(h));
    }

    /// The parser over pseudo-random inputs of every length (the fuzz
    /// target's property without nightly): never panics, and re-encoding a
    /// parsed header gives back the same 44 bytes.
    #[test]
    fn parser_survives_random_input() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..5000 {
            let len = i % 100;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            match Header::parse(&bytes) {
                Some(h) => assert_eq!(&h.to_bytes()[..], &bytes[..HDR_SIZE]),
                None => assert!(len < HDR_SIZE),
            }
        }
    }
}
