//! embervm-core: the embervm virtual machine monitor.
//!
//! The VMM that boots the embervm guest under KVM, and later restores it from
//! snapshots. This crate currently holds the pieces every later layer needs:
//! where the guest artifacts live ([`paths`]) and how to open KVM with an
//! error that names the fix ([`kvm`]).

pub mod kvm;
pub mod paths;
