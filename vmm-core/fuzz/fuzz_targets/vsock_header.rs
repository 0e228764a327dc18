//! Fuzz the vsock packet header parser and the device's checks on it.
//!
//! Properties: nothing panics; any input of at least 44 bytes parses, and
//! re-encoding the header gives back exactly those 44 bytes; the device's
//! verdict on a header is total. The hybrid socket's `CONNECT` line parser
//! gets the same bytes.
#![no_main]

use embervm_core::devices::virtio::vsock::defs::HDR_SIZE;
use embervm_core::devices::virtio::vsock::packet::Header;
use embervm_core::devices::virtio::vsock::unix::parse_connect_line;
use embervm_core::devices::virtio::vsock::worker::check_tx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Header::parse(data) {
        Some(h) => {
            assert_eq!(&h.to_bytes()[..], &data[..HDR_SIZE]);
            let _ = check_tx(&h, 3);
        }
        None => assert!(data.len() < HDR_SIZE),
    }
    let _ = parse_connect_line(data);
});
