//! Templates: snapshots of a freshly booted sandbox, kept in the cache
//! directory and keyed by everything that went into them.
//!
//! The key hashes the embervm version, the snapshot format version, the
//! kernel's and initramfs's path, length, modification time and inode, the
//! memory size, the vCPU count and the full command line. A template is
//! written into a private directory beside its final place and renamed
//! into place in one step, so two processes racing to create the same
//! template never see a half-written one: the loser's rename fails and its
//! copy is removed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::SnapshotError;
use super::format::FORMAT_VERSION;
use super::{MEMORY_FILE, STATE_FILE};

/// Directory below the cache directory that holds templates.
pub const TEMPLATES_DIR: &str = "templates";

/// What a template is made of.
#[derive(Debug, Clone)]
pub struct TemplateInputs<'a> {
    /// Kernel image.
    pub kernel: &'a Path,
    /// Initramfs.
    pub initrd: &'a Path,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// The full kernel command line.
    pub cmdline: &'a str,
}

/// 64-bit FNV-1a: stable across Rust releases (unlike `DefaultHasher`).
fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

fn file_identity(h: &mut u64, path: &Path) -> Result<(), SnapshotError> {
    let m = fs::metadata(path).map_err(|source| SnapshotError::Io {
        what: "cannot read the metadata of a template input".into(),
        path: path.to_path_buf(),
        source,
    })?;
    fnv1a(h, path.as_os_str().as_encoded_bytes());
    for v in [
        m.len(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
        m.ino(),
        m.dev(),
    ] {
        fnv1a(h, &v.to_le_bytes());
    }
    Ok(())
}

/// The cache key of a template made of `inputs` (hex).
pub fn key(inputs: &TemplateInputs<'_>) -> Result<String, SnapshotError> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv1a(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
    fnv1a(&mut h, &FORMAT_VERSION.to_le_bytes());
    file_identity(&mut h, inputs.kernel)?;
    file_identity(&mut h, inputs.initrd)?;
    fnv1a(&mut h, &inputs.memory_mib.to_le_bytes());
    fnv1a(&mut h, &inputs.vcpus.to_le_bytes());
    fnv1a(&mut h, inputs.cmdline.as_bytes());
    Ok(format!("{h:016x}"))
}

/// Where the template with `key` lives under `cache`.
pub fn dir(cache: &Path, key: &str) -> PathBuf {
    cache.join(TEMPLATES_DIR).join(key)
}

/// The template's directory if a complete one exists.
pub fn lookup(cache: &Path, key: &str) -> Option<PathBuf> {
    let d = dir(cache, key);
    (d.join(STATE_FILE).is_file() && d.join(MEMORY_FILE).is_file()).then_some(d)
}

/// A private directory to write a new template into, beside its final place.
pub fn staging_dir(cache: &Path, key: &str) -> Result<PathBuf, SnapshotError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let parent = cache.join(TEMPLATES_DIR);
    fs::create_dir_all(&parent).map_err(|source| SnapshotError::Io {
        what: "cannot create the templates directory".into(),
        path: parent.clone(),
        source,
    })?;
    Ok(parent.join(format!(
        ".{key}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Move a finished staging directory into place. If another process got
/// there first, keep theirs and remove ours. Returns the final directory.
pub fn publish(staging: &Path, cache: &Path, key: &str) -> Result<PathBuf, SnapshotError> {
    let target = dir(cache, key);
    match fs::rename(staging, &target) {
        Ok(()) => Ok(target),
        Err(_) if lookup(cache, key).is_some() => {
            let _ = fs::remove_dir_all(staging);
            Ok(target)
        }
        Err(source) => {
            let _ = fs::remove_dir_all(staging);
            Err(SnapshotError::Io {
                what: "cannot move the new template into place".into(),
                path: target,
                source,
            })
        }
    }
}

/// File in a template directory naming its shape (inputs by path, without
/// their file identities), so that newer templates can replace older ones.
pub const SHAPE_FILE: &str = "shape";

fn shape_text(inputs: &TemplateInputs<'_>) -> String {
    format!(
        "kernel {}\ninitrd {}\nmemory_mib {}\nvcpus {}\ncmdline {}\n",
        inputs.kernel.display(),
        inputs.initrd.display(),
        inputs.memory_mib,
        inputs.vcpus,
        inputs.cmdline
    )
}

/// Record `inputs`' shape in a staging directory (before [`publish`]).
pub fn write_shape(staging: &Path, inputs: &TemplateInputs<'_>) -> Result<(), SnapshotError> {
    let p = staging.join(SHAPE_FILE);
    fs::write(&p, shape_text(inputs)).map_err(|source| SnapshotError::Io {
        what: "cannot write the template's shape file".into(),
        path: p,
        source,
    })
}

/// Remove the templates of the same shape as `inputs` other than `key`:
/// they were made from an earlier build of the same kernel or initramfs
/// (or by another embervm version) and will never be used again. Clones
/// running from one keep their mapping; the files go when they end.
pub fn prune_same_shape(cache: &Path, key: &str, inputs: &TemplateInputs<'_>) -> usize {
    let want = shape_text(inputs);
    let Ok(dir) = fs::read_dir(cache.join(TEMPLATES_DIR)) else {
        return 0;
    };
    let mut removed = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == key || name.starts_with('.') {
            continue;
        }
        if fs::read_to_string(e.path().join(SHAPE_FILE)).is_ok_and(|s| s == want) {
            discard(&e.path());
            removed += 1;
        }
    }
    removed
}

/// Remove a template that could not be used (stale or damaged).
pub fn discard(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("embervm-tpl-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn key_changes_with_every_input() {
        let d = tmp("key");
        let (k, i) = (d.join("vmlinux"), d.join("initrd"));
        fs::write(&k, b"kernel").unwrap();
        fs::write(&i, b"initrd").unwrap();
        let base = TemplateInputs {
            kernel: &k,
            initrd: &i,
            memory_mib: 256,
            vcpus: 1,
            cmdline: "console=ttyS0",
        };
        let k0 = key(&base).unwrap();
        assert_eq!(k0, key(&base).unwrap(), "stable");
        assert_eq!(k0.len(), 16);
        let mut keys = vec![k0.clone()];
        keys.push(
            key(&TemplateInputs {
                memory_mib: 512,
                ..base.clone()
            })
            .unwrap(),
        );
        keys.push(
            key(&TemplateInputs {
                vcpus: 2,
                ..base.clone()
            })
            .unwrap(),
        );
        keys.push(
            key(&TemplateInputs {
                cmdline: "quiet",
                ..base.clone()
            })
            .unwrap(),
        );
        fs::write(&i, b"initrd, rebuilt").unwrap();
        keys.push(key(&base).unwrap());
        let mut uniq = keys.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), keys.len(), "{keys:?}");
        let e = key(&TemplateInputs {
            kernel: &d.join("none"),
            ..base
        })
        .unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn racing_publishers_keep_one_complete_template() {
        let cache = tmp("race");
        let mut stagings = Vec::new();
        for n in 0..2 {
            let s = staging_dir(&cache, "abc").unwrap();
            fs::create_dir_all(&s).unwrap();
            fs::write(s.join(STATE_FILE), format!("state {n}")).unwrap();
            fs::write(s.join(MEMORY_FILE), b"mem").unwrap();
            stagings.push(s);
        }
        assert!(lookup(&cache, "abc").is_none());
        let a = publish(&stagings[0], &cache, "abc").unwrap();
        let b = publish(&stagings[1], &cache, "abc").unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read(a.join(STATE_FILE)).unwrap(), b"state 0");
        assert!(!stagings[1].exists(), "the loser's copy is removed");
        let left: Vec<_> = fs::read_dir(cache.join(TEMPLATES_DIR)).unwrap().collect();
        assert_eq!(left.len(), 1);
        discard(&a);
        assert!(lookup(&cache, "abc").is_none());
        fs::remove_dir_all(&cache).unwrap();
    }
}
