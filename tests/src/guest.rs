//! Where the integration tests find the guest kernel and initramfs.
//!
//! `EMBERVM_KERNEL`, `EMBERVM_BZIMAGE` and `EMBERVM_INITRD` override the
//! defaults published by `make guest` in the cache directory.

use std::path::PathBuf;

fn artifact(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| embervm_core::paths::default_guest_dir().join(name));
    assert!(
        path.is_file(),
        "{} not found: build the guest first with `make guest` (or set {var})",
        path.display()
    );
    path
}

/// The ELF kernel (PVH entry).
pub fn vmlinux() -> PathBuf {
    artifact("EMBERVM_KERNEL", embervm_core::paths::VMLINUX)
}

/// The compressed kernel.
pub fn bzimage() -> PathBuf {
    artifact("EMBERVM_BZIMAGE", embervm_core::paths::BZIMAGE)
}

/// The default initramfs.
pub fn initramfs() -> PathBuf {
    artifact("EMBERVM_INITRD", embervm_core::paths::INITRAMFS)
}
