//! The host's own deadline: a guest that stops answering (here: every vCPU
//! paused) does not hold the caller. The exec returns
//! `SandboxError::Unresponsive` shortly after its timeout plus the grace
//! period, the VM is killed, later calls fail at once, and `close` returns.
//!
//! Needs a KVM that runs Linux guests; `EMBERVM_SKIP_GUEST_TESTS=1` skips.

use std::time::{Duration, Instant};

use embervm_core::{Command, Sandbox, SandboxConfig, SandboxError};
use embervm_tests::guest;

#[test]
fn wedged_guest_is_killed_at_the_host_deadline() {
    if std::env::var_os("EMBERVM_SKIP_GUEST_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: EMBERVM_SKIP_GUEST_TESTS=1");
        return;
    }
    let mut c = SandboxConfig::from_paths(guest::vmlinux(), guest::initramfs());
    c.grace = Duration::from_secs(1);
    c.boot_timeout = Duration::from_secs(600);
    let sb = Sandbox::new(c).unwrap_or_else(|e| panic!("Sandbox::new: {e}"));
    assert!(sb.exec(&Command::new(["true"])).unwrap().success());
    assert!(sb.vm_handle().pause(), "pause");
    let t = Instant::now();
    let e = sb
        .exec(&Command::new(["true"]).timeout(Duration::from_secs(1)))
        .unwrap_err();
    let waited = t.elapsed();
    assert!(matches!(e, SandboxError::Unresponsive { .. }), "{e}");
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    assert!(!sb.is_alive());
    let e = sb.exec(&Command::new(["true"])).unwrap_err();
    assert!(matches!(e, SandboxError::Closed(_)), "{e}");
    let t = Instant::now();
    sb.close();
    assert!(t.elapsed() < Duration::from_secs(30));
}
