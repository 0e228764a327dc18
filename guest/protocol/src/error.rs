//! The errors of framing, decoding and the hello.

/// What can go wrong reading, writing or checking frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A length prefix above the limit (nothing was allocated for it).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// [`crate::MAX_FRAME_LEN`].
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// The payload holds a valid message followed by extra bytes.
    #[error("malformed message: {0} trailing bytes")]
    TrailingBytes(usize),
    /// A message could not be encoded (or exceeds the frame limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The first frame is not an embervm hello.
    #[error("peer did not send an embervm hello (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version.
    #[error(
        "protocol version mismatch: we speak version {ours} (software {our_software}), \
         the {peer_role} speaks version {theirs} (software {their_software}); \
         rebuild the guest image and the host from the same release"
    )]
    VersionMismatch {
        /// Our [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// Our software version.
        our_software: String,
        /// The peer's protocol version.
        theirs: u32,
        /// The peer's software version.
        their_software: String,
        /// "agent" or "host".
        peer_role: &'static str,
    },
}

/// Result with a [`ProtocolError`].
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
