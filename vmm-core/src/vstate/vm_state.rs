//! The VM-wide KVM state for snapshots: the in-kernel PIC pair and IOAPIC,
//! the PIT and kvm-clock.
//!
//! Restore order: the VM, its memory slots, irqchip and PIT are created as
//! for a boot ([`super::vm::KvmVm`]); then [`VmState::restore`] loads the
//! PIT, the clock and the three irqchips, before any vCPU is created.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::{kvm_err, SetupError};

/// The in-kernel devices' state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    /// PIC master, PIC slave, IOAPIC, in that order.
    pub irqchips: Vec<kvm_irqchip>,
    /// The i8254 PIT.
    pub pit: kvm_pit_state2,
    /// kvm-clock.
    pub clock: kvm_clock_data,
}

const CHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

impl VmState {
    /// Read the state of a VM whose vCPUs are all out of `KVM_RUN`.
    pub fn capture(fd: &VmFd) -> Result<Self, SetupError> {
        let mut irqchips = Vec::with_capacity(CHIPS.len());
        for id in CHIPS {
            let mut chip = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            fd.get_irqchip(&mut chip)
                .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
            irqchips.push(chip);
        }
        let pit = fd.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?;
        let clock = fd.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?;
        Ok(Self {
            irqchips,
            pit,
            clock,
        })
    }

    /// Load into a VM created with its irqchip and PIT, before any vCPU.
    pub fn restore(&self, fd: &VmFd) -> Result<(), SetupError> {
        if self.irqchips.len() != CHIPS.len()
            || self
                .irqchips
                .iter()
                .zip(CHIPS)
                .any(|(c, id)| c.chip_id != id)
        {
            return Err(SetupError::BadState(
                "irqchip list is not PIC master, PIC slave, IOAPIC".into(),
            ));
        }
        fd.set_pit2(&self.pit).map_err(kvm_err("KVM_SET_PIT2"))?;
        fd.set_clock(&clock_for_restore(self.clock))
            .map_err(kvm_err("KVM_SET_CLOCK"))?;
        for chip in &self.irqchips {
            fd.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        Ok(())
    }
}

/// `KVM_SET_CLOCK` takes only the clock value: the flags KVM reported on
/// the way out (TSC-stable, realtime, host TSC) describe the old host's
/// clock and are refused or misread on the way in.
pub fn clock_for_restore(mut c: kvm_clock_data) -> kvm_clock_data {
    c.flags = 0;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_clock_carries_only_the_value() {
        let c = kvm_clock_data {
            clock: 123_456,
            flags: kvm_bindings::KVM_CLOCK_TSC_STABLE | 0x4,
            ..Default::default()
        };
        let r = clock_for_restore(c);
        assert_eq!((r.clock, r.flags), (123_456, 0));
    }

    #[test]
    fn state_round_trips_through_postcard() {
        let mut s = VmState {
            irqchips: CHIPS
                .iter()
                .map(|&chip_id| kvm_irqchip {
                    chip_id,
                    ..Default::default()
                })
                .collect(),
            pit: kvm_pit_state2::default(),
            clock: kvm_clock_data {
                clock: 42,
                ..Default::default()
            },
        };
        s.pit.flags = 1;
        let b = postcard::to_allocvec(&s).unwrap();
        let back: VmState = postcard::from_bytes(&b).unwrap();
        assert_eq!(back.clock.clock, 42);
        assert_eq!(back.pit.flags, 1);
        assert_eq!(back.irqchips[2].chip_id, KVM_IRQCHIP_IOAPIC);
    }
}
