//! Fuzz the snapshot state file reader.
//!
//! The input is used twice: as a whole state file (header checks: magic,
//! version, length, CRC), and as the body of a file with a valid header and
//! CRC around it, so the fuzzer reaches the postcard decoder of the host
//! facts and the VM state. Properties: nothing panics, and every failure is
//! one of the snapshot errors.
#![no_main]

use std::io::Write;

use embervm_core::snapshot::format::{read_state_unchecked_facts, FORMAT_VERSION, MAGIC};
use embervm_core::snapshot::SnapshotState;
use libfuzzer_sys::fuzz_target;

fn read(bytes: &[u8]) {
    let path = std::env::temp_dir().join(format!("embervm-fuzz-state-{}", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else {
        return;
    };
    if f.write_all(bytes).is_err() {
        return;
    }
    drop(f);
    let _ = read_state_unchecked_facts::<SnapshotState>(&path);
    let _ = std::fs::remove_file(&path);
}

fuzz_target!(|data: &[u8]| {
    read(data);
    let mut file = Vec::with_capacity(24 + data.len());
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    file.extend_from_slice(data);
    read(&file);
});
