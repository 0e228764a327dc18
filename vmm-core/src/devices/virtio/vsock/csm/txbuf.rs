//! The bounded buffer of one connection's guest → host bytes that the host
//! stream has not taken yet.
//!
//! It only fills when the host reader is slower than the guest writer; its
//! bound is the credit we advertise, so a guest that respects credit never
//! overflows it and one that does not gets its connection reset. Storage is
//! allocated on demand and released when the buffer drains, so an idle
//! connection costs no buffer memory.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};

/// The buffer is full: the guest sent beyond its credit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("tx buffer full: {len} bytes buffered, {incoming} more do not fit in {cap}")]
pub struct TxBufFull {
    /// Bytes already buffered.
    pub len: usize,
    /// Bytes offered.
    pub incoming: usize,
    /// Capacity.
    pub cap: usize,
}

/// A bounded FIFO of bytes.
#[derive(Debug)]
pub struct TxBuf {
    data: VecDeque<u8>,
    cap: usize,
}

impl TxBuf {
    /// An empty buffer holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            data: VecDeque::new(),
            cap,
        }
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Room left.
    pub fn free(&self) -> usize {
        self.cap - self.data.len()
    }

    /// Append `bytes`, all or nothing.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), TxBufFull> {
        if bytes.len() > self.free() {
            return Err(TxBufFull {
                len: self.len(),
                incoming: bytes.len(),
                cap: self.cap,
            });
        }
        self.data.extend(bytes);
        Ok(())
    }

    /// Write as much as `w` takes without blocking; returns the bytes
    /// written. `WouldBlock` ends the flush quietly; other errors are returned.
    pub fn flush_to(&mut self, w: &mut impl Write) -> std::io::Result<usize> {
        let mut total = 0;
        while !self.data.is_empty() {
            let (front, _) = self.data.as_slices();
            match w.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.data.drain(..n);
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.data.is_empty() {
            // Give the memory back once a burst is over.
            self.data = VecDeque::new();
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes, then blocks.
    struct Slow {
        got: Vec<u8>,
        room: usize,
    }
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room).min(3);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bounded_fifo() {
        let mut t = TxBuf::new(10);
        t.push(b"hello").unwrap();
        t.push(b"world").unwrap();
        assert_eq!(t.free(), 0);
        assert_eq!(
            t.push(b"!"),
            Err(TxBufFull {
                len: 10,
                incoming: 1,
                cap: 10
            })
        );
        let mut w = Slow {
            got: vec![],
            room: 7,
        };
        assert_eq!(t.flush_to(&mut w).unwrap(), 7);
        assert_eq!(t.len(), 3);
        t.push(b"1234567").unwrap();
        w.room = 100;
        assert_eq!(t.flush_to(&mut w).unwrap(), 10);
        assert!(t.is_empty());
        assert_eq!(w.got, b"helloworld1234567");
    }
}
