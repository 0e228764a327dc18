//! Framing: a little-endian `u32` payload length, then the payload, a
//! postcard-encoded message.
//!
//! Reading never trusts the length prefix: a length above
//! [`MAX_FRAME_LEN`] is refused before any allocation, and the payload
//! buffer grows only as bytes really arrive, so a peer that announces 16 MiB
//! and sends nothing costs nothing. Decoding is strict: the payload must be
//! exactly one message, trailing bytes are an error. [`FrameDecoder`] is the
//! same logic over pushed bytes, for event loops and the fuzz target.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::defs::MAX_FRAME_LEN;
use crate::error::{ProtocolError, Result};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Encode `msg` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let out = postcard::to_extend(msg, vec![0u8; HEADER_LEN])
        .map_err(|e| ProtocolError::Encode(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::Encode(format!(
            "message of {len} bytes exceeds the frame limit of {MAX_FRAME_LEN}"
        )));
    }
    let mut out = out;
    // The limit is below u32::MAX, so the cast is exact.
    out[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// Encode `msg` and write it as one frame.
pub fn write_frame<W: Write + ?Sized, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let bytes = encode_frame(msg)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Decode one message from a whole payload (strict: no trailing bytes).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let (msg, rest) =
        postcard::take_from_bytes(payload).map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Check a length prefix against the limit.
fn checked_len(header: [u8; HEADER_LEN]) -> Result<usize> {
    let len = u32::from_le_bytes(header);
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge {
            len: u64::from(len),
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len_usize)
}

/// Read one frame's payload into `buf` (cleared first). Returns `false` on a
/// clean end of stream before the first byte of a frame.
pub fn read_frame_into<R: Read + ?Sized>(r: &mut R, buf: &mut Vec<u8>) -> Result<bool> {
    buf.clear();
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(ProtocolError::Truncated {
                    got,
                    want: HEADER_LEN,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = checked_len(header)?;
    // `take` + `read_to_end` grows the buffer only as data arrives.
    let got = r.take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(ProtocolError::Truncated { got, want: len });
    }
    Ok(true)
}

/// Read and decode one frame; `None` on a clean end of stream.
pub fn read_frame<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>> {
    let mut buf = Vec::new();
    if !read_frame_into(r, &mut buf)? {
        return Ok(None);
    }
    decode(&buf).map(Some)
}

/// An incremental frame splitter: push bytes as they come, pop whole
/// payloads. Holds at most one partial frame plus what was pushed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole payload, `None` if more bytes are needed, or an error
    /// for a length above the limit (the decoder is then unusable: the
    /// stream has lost its framing).
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(header);
        let len = checked_len(h)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(payload))
    }

    /// The next whole message, decoded.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.next_payload()? {
            Some(p) => decode(&p).map(Some),
            None => Ok(None),
        }
    }
}
