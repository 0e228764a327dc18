//! The project's kernel and initramfs boot to the agent's ready marker under
//! real KVM, with QEMU (-accel kvm -M microvm) as the stand-in VMM.

use std::process::Command;
use std::time::Duration;

fn boot_with_qemu(vcpus: u32, memory_mib: u32) {
    let kernel = embervm_tests::guest::vmlinux();
    let initrd = embervm_tests::guest::initramfs();
    let mut cmd = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest/boot-qemu.sh"
    ));
    cmd.arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd);
    cmd.arg("--memory").arg(memory_mib.to_string());
    cmd.arg("--vcpus").arg(vcpus.to_string());
    let w = embervm_tests::console::run_watching(cmd, "EMBERVM_READY", Duration::from_secs(180));
    let line = w
        .marker_line
        .clone()
        .unwrap_or_else(|| panic!("no ready marker; console:\n{}", w.text()));
    eprintln!(
        "ready after {:.2} s: {line}",
        w.time_to_marker.unwrap_or_default().as_secs_f64()
    );
    assert!(line.contains(&format!("cpus={vcpus}")), "{line}");
    assert!(
        !w.timed_out,
        "QEMU did not exit after the reboot; console:\n{}",
        w.text()
    );
    assert_eq!(w.exit_code, Some(0), "console:\n{}", w.text());
}

#[test]
fn guest_reaches_ready_marker_under_qemu_kvm() {
    boot_with_qemu(1, 256);
}

#[test]
fn smp_guest_reaches_ready_marker_under_qemu_kvm() {
    if embervm_tests::host::skip_smp("smp_guest_reaches_ready_marker_under_qemu_kvm") {
        return;
    }
    boot_with_qemu(2, 256);
}

#[test]
fn corrupt_kernel_is_refused_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("embervm-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("vmlinux");
    std::fs::write(&bad, b"this is not a kernel").unwrap();
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest/boot-qemu.sh"
    ))
    .arg("--kernel")
    .arg(&bad)
    .arg("--initrd")
    .arg(embervm_tests::guest::initramfs())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("corrupt") && err.contains("make guest"),
        "{err}"
    );
    let missing = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest/boot-qemu.sh"
    ))
    .arg("--kernel")
    .arg(dir.join("nope"))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        err.contains("not found") && err.contains("make guest"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
