//! Restoring a VM from a snapshot directory.
//!
//! Order: read and check the state file (magic, version, checksum, host
//! facts) before anything else; map the memory file `MAP_PRIVATE`; create
//! the VM, its memory slots, irqchip and PIT, and load their state; create
//! the vCPUs and load theirs; then rebuild the devices from their state (the
//! vsock device sends the guest a transport reset), last, so that any
//! interrupt they raise reaches a loaded LAPIC. None of this
//! touches guest memory page by page, so its cost does not grow with the
//! guest's memory size (the memory slot setup in KVM is the one part that
//! scales, with the number of 2 MiB regions, not of pages).

use std::path::Path;
use std::time::Instant;

use super::error::SnapshotError;
use super::format::{self, HostFacts};
use super::{memfile, SnapshotState, MEMORY_FILE, STATE_FILE};
use crate::error::VmError;
use crate::memory;
use crate::vm::{validate_vcpus, RestoreConfig, RestoredParts, SetupTimings};
use crate::vstate::control::install_kick_handler;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::KvmVm;

/// Read `dir`'s state file and check it against this host's `facts`,
/// without building anything.
pub fn read_checked(facts: &HostFacts, dir: &Path) -> Result<SnapshotState, SnapshotError> {
    let state: SnapshotState = format::read_state(&dir.join(STATE_FILE), facts)?;
    check_shape(&state, &dir.join(STATE_FILE))?;
    Ok(state)
}

/// Check what the state says about layout and vCPUs before it is used.
fn check_shape(state: &SnapshotState, path: &Path) -> Result<(), SnapshotError> {
    let corrupt = |detail: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    memory::validate_memory_mib(state.memory_mib).map_err(|e| corrupt(e.to_string()))?;
    let expected: Vec<(u64, u64)> = memory::ram_ranges(state.memory_mib)
        .into_iter()
        .map(|(a, l)| (a.0, l))
        .collect();
    if state.ranges != expected {
        return Err(corrupt(format!(
            "memory ranges {:x?} do not match a {} MiB guest",
            state.ranges, state.memory_mib
        )));
    }
    let n = u32::try_from(state.vcpus.len()).unwrap_or(u32::MAX);
    validate_vcpus(n, None).map_err(|e| corrupt(e.to_string()))?;
    for (i, v) in state.vcpus.iter().enumerate() {
        if v.index as usize != i {
            return Err(corrupt(format!("vCPU {i} is saved as index {}", v.index)));
        }
    }
    Ok(())
}

/// Build a VM from the snapshot in `dir`; no vCPU has run when it returns.
pub(crate) fn restore(dir: &Path, config: RestoreConfig) -> Result<RestoredParts, VmError> {
    let mut timings = SetupTimings::default();
    let mut t = Instant::now();
    let kvm = crate::kvm::open_kvm()?;
    install_kick_handler()?;
    timings.mark("open /dev/kvm", &mut t);
    let (facts, save) = super::host_info(&kvm)?;
    let state = read_checked(&facts, dir)?;
    let kvm_max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
    validate_vcpus(state.vcpus.len() as u32, Some(kvm_max))?;
    timings.mark("read and check state", &mut t);

    let ranges: Vec<_> = memory::ram_ranges(state.memory_mib);
    let mem = memfile::map_memory(&dir.join(MEMORY_FILE), &ranges)?;
    timings.mark("map memory file", &mut t);
    let vm = KvmVm::new(&kvm)?;
    timings.mark("create VM", &mut t);
    vm.register_memory(&mem)?;
    timings.mark("register memory (KVM memslots)", &mut t);
    vm.setup_irqchip()?;
    state.vm.restore(vm.fd())?;
    timings.mark("irqchip, PIT, clock", &mut t);

    let mut vcpus = Vec::with_capacity(state.vcpus.len());
    for (i, vs) in state.vcpus.iter().enumerate() {
        let v = Vcpu::new(i as u32, vm.create_vcpu(i as u32)?);
        v.restore_state(vs)?;
        vcpus.push(v);
    }
    timings.mark("create vCPUs, load state", &mut t);

    // Devices last: restoring them may raise interrupts (a pending UART
    // interrupt, the virtio interrupt status, the vsock transport reset),
    // which KVM delivers only to vCPUs that exist with their LAPICs loaded.
    let devices = crate::vm::restore_devices(&vm, &mem, &state, config)?;
    timings.mark("devices", &mut t);
    Ok(RestoredParts {
        kvm,
        vm,
        memory: mem,
        memory_mib: state.memory_mib,
        vcpus,
        devices,
        save,
        facts,
        timings,
    })
}
