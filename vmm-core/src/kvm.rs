//! Opening `/dev/kvm` with errors that tell the user what to do.

use std::path::{Path, PathBuf};

/// The KVM device node embervm opens unless `EMBERVM_DEV_KVM` names another.
pub const DEFAULT_KVM_PATH: &str = "/dev/kvm";

/// Why KVM could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum KvmOpenError {
    /// The device node does not exist.
    #[error(
        "{path} does not exist: this host has no KVM. Enable virtualization (VT-x/AMD-V) in \
         the firmware and load the module (`modprobe kvm_intel` or `modprobe kvm_amd`), or run \
         through the emulated test host: `tests/kvm-host/run CMD`"
    )]
    Missing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The device exists but this user may not open it.
    #[error(
        "{path}: permission denied. Add your user to the group that owns it \
         (`sudo usermod -aG kvm $USER`, then log in again) or grant access with \
         `sudo setfacl -m u:$USER:rw {path}`"
    )]
    PermissionDenied {
        /// The path that was tried.
        path: PathBuf,
    },
    /// Any other failure to open or query the device.
    #[error("cannot open {path}: {source}")]
    Other {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The KVM device path: `$EMBERVM_DEV_KVM` or [`DEFAULT_KVM_PATH`].
pub fn kvm_path() -> PathBuf {
    std::env::var_os("EMBERVM_DEV_KVM")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KVM_PATH))
}

/// Open KVM at `path`, mapping the common failures to errors naming the fix.
pub fn open_kvm_at(path: &Path) -> Result<kvm_ioctls::Kvm, KvmOpenError> {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| classify(path, e))?;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just obtained from a successfully opened file and its
    // ownership is transferred to the returned `Kvm`, which closes it on drop.
    let kvm = unsafe { kvm_ioctls::Kvm::from_raw_fd(fd) };
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(KvmOpenError::Other {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "KVM API version {version}, expected {}",
                kvm_bindings::KVM_API_VERSION
            )),
        });
    }
    Ok(kvm)
}

/// Open KVM at [`kvm_path`].
pub fn open_kvm() -> Result<kvm_ioctls::Kvm, KvmOpenError> {
    open_kvm_at(&kvm_path())
}

fn classify(path: &Path, e: std::io::Error) -> KvmOpenError {
    let path = path.to_path_buf();
    match e.kind() {
        std::io::ErrorKind::NotFound => KvmOpenError::Missing { path },
        std::io::ErrorKind::PermissionDenied => KvmOpenError::PermissionDenied { path },
        _ => KvmOpenError::Other { path, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_names_the_fix() {
        let err = open_kvm_at(Path::new("/nonexistent/kvm")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, KvmOpenError::Missing { .. }));
        assert!(msg.contains("modprobe kvm_intel"), "{msg}");
        assert!(msg.contains("tests/kvm-host/run"), "{msg}");
    }
}
