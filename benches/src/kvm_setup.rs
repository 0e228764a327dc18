//! `kvm-setup`: the host-side KVM calls every VM start pays
//! (KVM_CREATE_VM, KVM_CREATE_VCPU) on this machine's own `/dev/kvm`.

use std::time::Instant;

use crate::stats::{ms, row};

/// Time `runs` VM and vCPU creations.
pub fn run(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let kvm = embervm_core::kvm::open_kvm()?;
    let mut create_vm = Vec::with_capacity(runs);
    let mut create_vcpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let vm = kvm.create_vm()?;
        create_vm.push(ms(t.elapsed()));
        let t = Instant::now();
        let _vcpu = vm.create_vcpu(0)?;
        create_vcpu.push(ms(t.elapsed()));
    }
    println!("| step | runs | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!("{}", row("KVM_CREATE_VM", &mut create_vm));
    println!("{}", row("KVM_CREATE_VCPU", &mut create_vcpu));
    Ok(())
}
