//! The one error type of the snapshot feature.
//!
//! Every message names the file or the KVM call involved, says what is
//! wrong, and, where the user can act, what to do about it.

use std::path::PathBuf;

/// Why a snapshot could not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// The operation, as a verb phrase ("create", "read", "fsync").
        what: String,
        /// The file it was done on.
        path: PathBuf,
        /// What the host reported.
        source: std::io::Error,
    },
    /// The state file ends before its header or body does.
    #[error(
        "snapshot state file {} is truncated: {found} bytes, expected {expected}; \
         take the snapshot again",
        path.display()
    )]
    Truncated {
        /// The state file.
        path: PathBuf,
        /// The length its header promises (or the header length).
        expected: u64,
        /// Its actual length.
        found: u64,
    },
    /// The file does not start with the snapshot magic.
    #[error(
        "{} is not an embervm snapshot state file (it does not start with the snapshot \
         magic): check the path",
        path.display()
    )]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The state file was written in another format version.
    #[error(
        "snapshot state file {} has format version {found}, this embervm reads version \
         {supported}: restore it with the embervm that took it, or take the snapshot again",
        path.display()
    )]
    Version {
        /// The state file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The state file is damaged.
    #[error(
        "snapshot state file {} is corrupt: {detail}; take the snapshot again",
        path.display()
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What check failed.
        detail: String,
    },
    /// The snapshot was taken on a host (or embervm build) that differs from
    /// this one in a way that matters to the guest.
    #[error(
        "snapshot {} was taken on another host or embervm build: {detail}; restore it where \
         it was taken, or take a new snapshot here",
        path.display()
    )]
    OtherHost {
        /// The state file.
        path: PathBuf,
        /// The first difference found.
        detail: String,
    },
    /// The memory file does not have the size the state file describes.
    #[error(
        "snapshot memory file {} is {found} bytes, but the snapshot state expects {expected}: \
         it belongs to another snapshot or is damaged; use the memory file written with the \
         state file, or take the snapshot again",
        path.display()
    )]
    MemorySize {
        /// The memory file.
        path: PathBuf,
        /// The sum of the guest RAM ranges.
        expected: u64,
        /// The file's length.
        found: u64,
    },
    /// A KVM call failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// The ioctl, e.g. `"KVM_GET_REGS"`.
        what: &'static str,
        /// The error KVM returned.
        source: kvm_ioctls::Error,
    },
    /// A device could not save or restore its state.
    #[error("device {device}: {detail}")]
    Device {
        /// Which device.
        device: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A snapshot was asked of a running VM.
    #[error("the VM must be paused before a snapshot: pause it first")]
    NotPaused,
    /// The VM is gone.
    #[error("the VM has stopped: it can no longer be snapshotted or resumed")]
    Stopped,
    /// The state could not be serialised (a bug in embervm).
    #[error("cannot encode the snapshot state: {0}")]
    Encode(String),
    /// The memory file could not be mapped.
    #[error("cannot map snapshot memory file {}: {source}", path.display())]
    Mmap {
        /// The memory file.
        path: PathBuf,
        /// What the host reported.
        source: std::io::Error,
    },
}

impl SnapshotError {
    /// Shorthand for [`SnapshotError::Io`].
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}
