//! Writing a snapshot: quiesce the devices, capture every piece of state,
//! write the sparse memory file, then the state file (last, so a directory
//! with a valid state file always has its memory file complete).

use std::path::Path;
use std::time::Instant;

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::error::SnapshotError;
use super::{format, memfile, SnapshotInfo, SnapshotState, VsockSnapshot, MEMORY_FILE, STATE_FILE};
use crate::devices::virtio::vsock::VsockState;
use crate::vm::VmShared;
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm_state::VmState;

/// Snapshot the VM behind `shared` into `dir`; `capture_vcpus` returns
/// every vCPU's state (the vCPUs must be out of the guest).
pub(crate) fn snapshot(
    shared: &VmShared,
    dir: &Path,
    capture_vcpus: impl FnOnce() -> Result<Vec<VcpuState>, SnapshotError>,
) -> Result<SnapshotInfo, SnapshotError> {
    let start = Instant::now();
    std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
        what: "cannot create the snapshot directory".into(),
        path: dir.to_path_buf(),
        source,
    })?;
    // Hold the transport for the whole snapshot: the device's worker stops
    // touching guest memory and queues until `unquiesce`.
    let mut transport = match &shared.vsock_transport {
        Some(t) => Some(t.lock().map_err(|_| SnapshotError::Device {
            device: "virtio-vsock",
            detail: "the transport lock is poisoned".into(),
        })?),
        None => None,
    };
    let quiesced = match transport.as_mut() {
        Some(t) => t.quiesce().map_err(|e| SnapshotError::Device {
            device: "virtio-vsock",
            detail: format!("cannot quiesce: {e}"),
        }),
        None => Ok(()),
    };
    let result = quiesced.and_then(|()| {
        let mut vcpus = capture_vcpus()?;
        vcpus.sort_by_key(|v| v.index);
        let vm = VmState::capture(shared.vm.fd())?;
        let serial = shared
            .serial
            .lock()
            .map_err(|_| SnapshotError::Device {
                device: "serial",
                detail: "the serial lock is poisoned".into(),
            })?
            .state();
        let i8042 = shared
            .i8042
            .lock()
            .map_err(|_| SnapshotError::Device {
                device: "i8042",
                detail: "the i8042 lock is poisoned".into(),
            })?
            .state();
        let vsock = match transport.as_ref() {
            Some(t) => {
                let device = t
                    .device()
                    .device_state()
                    .and_then(|b| VsockState::from_bytes(&b))
                    .map_err(|e| SnapshotError::Device {
                        device: "virtio-vsock",
                        detail: e.to_string(),
                    })?;
                Some(VsockSnapshot {
                    transport: t.state(),
                    device,
                })
            }
            None => None,
        };
        let capture = start.elapsed();
        let t = Instant::now();
        let mem = memfile::write_memory(&shared.memory, &dir.join(MEMORY_FILE))?;
        let write_memory = t.elapsed();
        let state = SnapshotState {
            memory_mib: shared.memory_mib,
            ranges: shared
                .memory
                .iter()
                .map(|r| (r.start_addr().0, r.len()))
                .collect(),
            vcpus,
            vm,
            serial,
            i8042,
            vsock,
        };
        let state_bytes = format::write_state(&dir.join(STATE_FILE), &shared.facts, &state)?;
        Ok(SnapshotInfo {
            state_bytes,
            memory_bytes: mem.bytes,
            memory_data_bytes: mem.data_bytes,
            capture,
            write_memory,
            total: start.elapsed(),
        })
    });
    if let Some(t) = transport.as_mut() {
        t.unquiesce();
    }
    result
}
