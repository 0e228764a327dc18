//! Helpers shared by the embervm integration tests: where the guest is, and
//! running a child process with a deadline while reading its console.

pub mod console;
pub mod guest;
pub mod host;
