//! libembervm: the C ABI over the embervm `Sandbox` API.
//!
//! Only the version query exists so far; the sandbox functions arrive with
//! the `Sandbox` API they wrap.

use std::ffi::c_char;

static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version as a static NUL-terminated string (never freed).
#[no_mangle]
pub extern "C" fn embervm_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_nul_terminated() {
        // SAFETY: embervm_version returns a pointer to a static C string.
        let s = unsafe { std::ffi::CStr::from_ptr(embervm_version()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
