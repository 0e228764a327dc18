//! What kind of KVM the tests run on.

/// True inside an emulated test host started with more than one CPU
/// (`EMBERVM_KVM_HOST_CPUS`), where nested guests with more than one vCPU
/// deadlock in their spinlocks (measured with QEMU 7.2 as both the test host
/// and the nested VMM, and with embervm). The default one-CPU test host runs
/// them; so does hardware KVM.
pub fn smp_guests_unsupported() -> bool {
    std::env::var("EMBERVM_KVM_HOST_SMP").is_ok_and(|k| k == "broken")
}

/// Print that `test` skips SMP here, and return true, when it must.
pub fn skip_smp(test: &str) -> bool {
    if smp_guests_unsupported() {
        eprintln!(
            "SKIPPED {test}: SMP guests deadlock in a multi-CPU emulated test host; \
             run with the default EMBERVM_KVM_HOST_CPUS=1 or on hardware KVM"
        );
        return true;
    }
    false
}
