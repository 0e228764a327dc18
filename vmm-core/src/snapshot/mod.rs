//! Snapshot and restore of a whole VM.
//!
//! A snapshot is a directory with two files:
//!
//! - `state`: a small file ([`mod@format`]: magic, format version, the host
//!   facts it depends on, a CRC32) holding a [`SnapshotState`]: every
//!   vCPU's KVM state, the in-kernel irqchip, PIT and kvm-clock, and the
//!   devices (serial, the virtio-mmio transport and its queues, the vsock
//!   device);
//! - `memory`: guest RAM, sparse ([`memfile`]): zero pages are holes.
//!
//! `save::snapshot` writes one from a paused VM ([`crate::VmHandle::snapshot`])
//! or a VM that has not run ([`crate::Vm::snapshot`]). [`crate::Vm::restore`]
//! maps `memory` `MAP_PRIVATE` (nothing is read, copied or zeroed: pages
//! fault in on first touch and every clone shares the page cache), creates
//! the VM and vCPUs, loads the state and returns a VM ready to run. Live
//! vsock connections are not part of a snapshot: the restored vsock device
//! sends the guest a transport reset, so stale connections drop and new ones
//! work at once.

pub mod error;
pub mod format;
pub mod memfile;
pub mod restore;
pub mod save;
pub mod template;

use std::time::Duration;

use kvm_ioctls::Cap;
use serde::{Deserialize, Serialize};

use crate::devices::i8042::I8042State;
use crate::devices::serial::SerialState;
use crate::devices::virtio::mmio::MmioTransportState;
use crate::devices::virtio::vsock::VsockState;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;
use crate::vstate::SetupError;
pub use error::SnapshotError;
use format::HostFacts;

/// File name of the state file inside a snapshot directory.
pub const STATE_FILE: &str = "state";
/// File name of the memory file inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// KVM capabilities a snapshot depends on; a host that differs in any of
/// them refuses the snapshot.
pub const SNAPSHOT_CAPS: &[Cap] = &[
    Cap::Xsave,
    Cap::Xcrs,
    Cap::Debugregs,
    Cap::AdjustClock,
    Cap::VcpuEvents,
    Cap::Pit2,
    Cap::Irqchip,
    Cap::TscDeadlineTimer,
];

/// Everything besides guest memory that a restore needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotState {
    /// Guest RAM in MiB (decides the memory layout).
    pub memory_mib: u32,
    /// RAM ranges `(guest address, length)`, as laid out in the memory file.
    pub ranges: Vec<(u64, u64)>,
    /// One per vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// irqchip, PIT, kvm-clock.
    pub vm: VmState,
    /// The UART.
    pub serial: SerialState,
    /// The i8042 (reset line).
    pub i8042: I8042State,
    /// The virtio-vsock device and its transport, if the VM had one.
    pub vsock: Option<VsockSnapshot>,
}

/// The vsock device's part of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct VsockSnapshot {
    /// Transport registers and queues.
    pub transport: MmioTransportState,
    /// The device itself.
    pub device: VsockState,
}

/// What a snapshot took and wrote.
#[derive(Debug, Clone, Default)]
pub struct SnapshotInfo {
    /// Bytes of the state file.
    pub state_bytes: u64,
    /// Length of the memory file (= guest RAM).
    pub memory_bytes: u64,
    /// Bytes of guest RAM actually written (non-zero pages).
    pub memory_data_bytes: u64,
    /// Time to capture vCPU, VM and device state.
    pub capture: Duration,
    /// Time to write the memory file.
    pub write_memory: Duration,
    /// Total time.
    pub total: Duration,
}

/// This host's facts and what vCPU capture needs from KVM, read once per
/// process: neither changes while the process lives, and reading them costs
/// two KVM queries (the supported CPUID list, the MSR list) on every restore.
pub(crate) fn host_info(
    kvm: &kvm_ioctls::Kvm,
) -> Result<(HostFacts, crate::vstate::vcpu_state::SaveInfo), SnapshotError> {
    use crate::vstate::vcpu_state::SaveInfo;
    static INFO: std::sync::OnceLock<(HostFacts, SaveInfo)> = std::sync::OnceLock::new();
    if let Some(i) = INFO.get() {
        return Ok(i.clone());
    }
    let info = (
        HostFacts::collect(kvm, SNAPSHOT_CAPS)?,
        SaveInfo::probe(kvm)?,
    );
    Ok(INFO.get_or_init(|| info).clone())
}

impl From<SetupError> for SnapshotError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Kvm { what, source } => SnapshotError::Kvm { what, source },
            other => SnapshotError::Device {
                device: "vcpu",
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format::{read_state_unchecked_facts, FORMAT_VERSION, HEADER_LEN, MAGIC};
    use super::*;

    /// What the `snapshot_state` fuzz target checks, on stable: random
    /// bodies behind a valid header and CRC decode or fail with a snapshot
    /// error, never a panic, and random bytes never pass as a state.
    #[test]
    fn random_state_bodies_never_panic() {
        let dir = std::env::temp_dir().join(format!("embervm-state-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STATE_FILE);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut decoded = 0;
        for i in 0..2000 {
            let len = (next() % 4096) as usize;
            let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut file = Vec::with_capacity(HEADER_LEN as usize + len);
            file.extend_from_slice(&MAGIC);
            file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            file.extend_from_slice(&(len as u64).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            file.extend_from_slice(&body);
            if i % 2 == 1 {
                // Half the time, also damage the header.
                let at = (next() % HEADER_LEN) as usize;
                file[at] ^= 1 << (next() % 8);
            }
            std::fs::write(&path, &file).unwrap();
            match read_state_unchecked_facts::<SnapshotState>(&path) {
                Ok(_) => decoded += 1,
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        assert_eq!(decoded, 0, "random bytes decoded as a snapshot state");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
