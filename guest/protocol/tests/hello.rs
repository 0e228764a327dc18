//! The versioned hello.

use embervm_protocol::*;

fn payload(h: &Hello) -> Vec<u8> {
    encode_frame(h).expect("encode")[4..].to_vec()
}

#[test]
fn same_version_is_accepted() {
    let agent = Hello::new(Role::Agent, "0.1.0", Capabilities::default());
    let h = check_hello(&payload(&agent), "host-0.1.0", Role::Agent).expect("ok");
    assert_eq!(h, agent);
}

#[test]
fn mismatch_names_both_versions() {
    let mut agent = Hello::new(Role::Agent, "7.0.0", Capabilities::default());
    agent.protocol = PROTOCOL_VERSION + 6;
    let err = check_hello(&payload(&agent), "0.1.0", Role::Agent).expect_err("mismatch");
    let text = err.to_string();
    assert!(matches!(err, ProtocolError::VersionMismatch { .. }));
    assert!(
        text.contains(&format!("version {PROTOCOL_VERSION}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("version {}", PROTOCOL_VERSION + 6)),
        "{text}"
    );
    assert!(text.contains("7.0.0") && text.contains("0.1.0"), "{text}");
    assert!(text.contains("agent"), "{text}");
}

#[test]
fn mismatch_is_found_even_when_the_rest_differs() {
    // A future hello: same frozen head, then fields we do not know.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&HELLO_MAGIC);
    bytes.push(99); // protocol 99 as a varint
    bytes.push(5);
    bytes.extend_from_slice(b"9.0.0");
    bytes.extend_from_slice(&[0xff; 20]);
    let err = check_hello(&bytes, "0.1.0", Role::Agent).expect_err("mismatch");
    match err {
        ProtocolError::VersionMismatch {
            theirs,
            their_software,
            ..
        } => {
            assert_eq!(theirs, 99);
            assert_eq!(their_software, "9.0.0");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn wrong_magic_or_role_is_refused() {
    let mut h = Hello::host();
    h.magic = *b"HTTP";
    assert!(matches!(
        check_hello(&payload(&h), "x", Role::Host),
        Err(ProtocolError::BadMagic(_))
    ));
    let h = Hello::host();
    assert!(check_hello(&payload(&h), "x", Role::Agent).is_err());
    assert!(check_hello(&payload(&h), "x", Role::Host).is_ok());
}
