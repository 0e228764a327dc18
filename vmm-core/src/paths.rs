//! Where embervm keeps its build outputs: the cache directory and the default
//! guest kernel and initramfs inside it.
//!
//! The cache directory is `$EMBERVM_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/embervm`, else `$HOME/.cache/embervm`. The guest build
//! (`make guest`) publishes the current default guest under `<cache>/default/`.

use std::path::PathBuf;

/// File name of the uncompressed ELF kernel (PVH entry) in a guest directory.
pub const VMLINUX: &str = "vmlinux";
/// File name of the compressed kernel in a guest directory.
pub const BZIMAGE: &str = "bzImage";
/// File name of the gzip cpio initramfs in a guest directory.
pub const INITRAMFS: &str = "initramfs.cpio.gz";

/// The cache directory, resolved from the environment (see module docs).
pub fn cache_dir() -> PathBuf {
    cache_dir_from(
        std::env::var_os("EMBERVM_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn cache_dir_from(
    explicit: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let non_empty = |v: Option<std::ffi::OsString>| v.filter(|s| !s.is_empty());
    if let Some(dir) = non_empty(explicit) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty(xdg) {
        return PathBuf::from(dir).join("embervm");
    }
    match non_empty(home) {
        Some(home) => PathBuf::from(home).join(".cache").join("embervm"),
        None => PathBuf::from("/tmp").join("embervm-cache"),
    }
}

/// The directory that holds the default guest (`vmlinux`, `bzImage`,
/// `initramfs.cpio.gz`), as published by `make guest`.
pub fn default_guest_dir() -> PathBuf {
    cache_dir().join("default")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_dir_wins() {
        let d = cache_dir_from(Some("/x".into()), Some("/y".into()), Some("/h".into()));
        assert_eq!(d, PathBuf::from("/x"));
    }

    #[test]
    fn xdg_then_home() {
        let d = cache_dir_from(None, Some("/y".into()), Some("/h".into()));
        assert_eq!(d, PathBuf::from("/y/embervm"));
        let d = cache_dir_from(Some("".into()), None, Some("/h".into()));
        assert_eq!(d, PathBuf::from("/h/.cache/embervm"));
    }
}
