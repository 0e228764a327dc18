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

/// True (after saying so) when `EMBERVM_SKIP_GUEST_TESTS=1` asks to skip
/// the tests that boot a real guest.
pub fn skip_guest_tests(test: &str) -> bool {
    if std::env::var_os("EMBERVM_SKIP_GUEST_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {test}: EMBERVM_SKIP_GUEST_TESTS=1");
        return true;
    }
    false
}

/// Serialises guest boots within one test binary (the test host is small
/// and the leak test counts process resources).
pub fn one_guest_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
