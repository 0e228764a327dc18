//! What kind of KVM the tests run on.

/// True inside the emulated test host (QEMU TCG with nested SVM), where
/// guests with more than one vCPU never get past their first KVM_RUN
/// (measured with QEMU 7.2 as both the test host and the nested VMM, and
/// with embervm). Tests of SMP guests print why they skip there; they run on
/// hardware KVM.
pub fn smp_guests_unsupported() -> bool {
    std::env::var("EMBERVM_KVM_HOST_KIND").is_ok_and(|k| k == "tcg-nested")
}

/// Print that `test` skips SMP here, and return true, when it must.
pub fn skip_smp(test: &str) -> bool {
    if smp_guests_unsupported() {
        eprintln!(
            "SKIPPED {test}: SMP guests do not run nested under the emulated test host; \
             this test runs on hardware KVM"
        );
        return true;
    }
    false
}
