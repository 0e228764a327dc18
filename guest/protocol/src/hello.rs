//! The versioned hello: the first frame each way.
//!
//! Both sides send their [`Hello`] at once, then read the peer's. The
//! frozen head ([`HelloHead`]) is decoded first, so a peer of any version
//! is refused with both version numbers in the message, even when the rest
//! of its hello has a layout we do not know.

use crate::defs::{HELLO_MAGIC, PROTOCOL_VERSION, SOFTWARE_VERSION};
use crate::error::{ProtocolError, Result};
use crate::frame::decode;
use crate::messages::{Capabilities, Hello, HelloHead, Role};

impl Hello {
    /// Our hello, for `role`, with `software` as the version string.
    pub fn new(role: Role, software: &str, capabilities: Capabilities) -> Hello {
        Hello {
            magic: HELLO_MAGIC,
            protocol: PROTOCOL_VERSION,
            software: software.to_owned(),
            role,
            capabilities,
        }
    }

    /// The host's hello.
    pub fn host() -> Hello {
        Hello::new(Role::Host, SOFTWARE_VERSION, Capabilities::default())
    }
}

/// Check a peer's hello payload against our version. `our_software` names
/// us in the error; `peer_role` is what we expect at the other end.
pub fn check_hello(payload: &[u8], our_software: &str, peer_role: Role) -> Result<Hello> {
    let (head, _) = postcard::take_from_bytes::<HelloHead>(payload)
        .map_err(|e| ProtocolError::Decode(format!("hello: {e}")))?;
    if head.magic != HELLO_MAGIC {
        return Err(ProtocolError::BadMagic(head.magic));
    }
    if head.protocol != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            our_software: our_software.to_owned(),
            theirs: head.protocol,
            their_software: head.software,
            peer_role: role_name(peer_role),
        });
    }
    let hello: Hello = decode(payload)?;
    if hello.role != peer_role {
        return Err(ProtocolError::Decode(format!(
            "hello: expected the {}, got the {}",
            role_name(peer_role),
            role_name(hello.role)
        )));
    }
    Ok(hello)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Host => "host",
        Role::Agent => "agent",
    }
}
