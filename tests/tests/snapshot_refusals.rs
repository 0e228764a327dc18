//! Snapshots of a VM that has not run (the real guest kernel and initramfs
//! loaded, vCPUs configured, the vsock device attached), restored on real
//! KVM; and every kind of bad snapshot refused with an error that says
//! which, before anything runs. No guest code runs here, so these tests
//! need only a working `/dev/kvm`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use embervm_core::devices::virtio::vsock::VsockConfig;
use embervm_core::snapshot::format::{self, HostFacts, HEADER_LEN};
use embervm_core::snapshot::{SnapshotState, MEMORY_FILE, STATE_FILE};
use embervm_core::vm::RestoreConfig;
use embervm_core::{Vm, VmConfig, VmError};
use embervm_tests::guest;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("embervm-refuse-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A snapshot of a 128 MiB, 2-vCPU VM with vsock that never ran.
fn good_snapshot(dir: &Path) {
    let mut c = VmConfig::new(guest::vmlinux());
    c.initrd = Some(guest::initramfs());
    c.memory_mib = 128;
    c.vcpus = 2;
    c.vsock = Some(VsockConfig::default());
    let mut vm = Vm::new(c).expect("Vm::new");
    let info = vm.snapshot(dir).expect("snapshot of a never-run VM");
    eprintln!("{info:?}");
    assert_eq!(info.memory_bytes, 128 << 20);
    assert!(
        info.memory_data_bytes > 10 << 20,
        "kernel + initrd are in memory"
    );
    assert!(
        info.memory_data_bytes < 100 << 20,
        "zero pages are not written: {info:?}"
    );
}

fn copy_snapshot(from: &Path, name: &str) -> PathBuf {
    let d = scratch(name);
    for f in [STATE_FILE, MEMORY_FILE] {
        fs::copy(from.join(f), d.join(f)).unwrap();
    }
    d
}

fn refused(dir: &Path) -> String {
    let t = Instant::now();
    match Vm::restore(dir, RestoreConfig::default()) {
        Ok(_) => panic!("{} was restored", dir.display()),
        Err(e) => {
            assert!(
                matches!(e, VmError::Snapshot(_)),
                "not a snapshot error: {e:?}"
            );
            eprintln!("refused in {:?}: {e}", t.elapsed());
            e.to_string()
        }
    }
}

#[test]
fn snapshot_of_unrun_vm_restores_and_bad_ones_are_refused() {
    let good = scratch("good");
    good_snapshot(&good);
    let state_len = fs::metadata(good.join(STATE_FILE)).unwrap().len();
    eprintln!("state file: {state_len} bytes");

    // The good one restores (twice: the memory file is never changed).
    for _ in 0..2 {
        let vm = Vm::restore(&good, RestoreConfig::default()).expect("restore");
        assert!(vm.vsock().is_some());
        for (phase, d) in &vm.setup_timings().phases {
            eprintln!("  restore phase {phase}: {d:?}");
        }
    }

    // Truncated state file, at several lengths.
    for len in [0, 5, HEADER_LEN - 1, HEADER_LEN + 10, state_len - 1] {
        let d = copy_snapshot(&good, "trunc");
        let f = fs::OpenOptions::new()
            .write(true)
            .open(d.join(STATE_FILE))
            .unwrap();
        f.set_len(len).unwrap();
        let e = refused(&d);
        assert!(e.contains("truncated"), "{len}: {e}");
    }

    // Not a snapshot (bad magic).
    let d = copy_snapshot(&good, "magic");
    let mut b = fs::read(d.join(STATE_FILE)).unwrap();
    b[0] ^= 0xff;
    fs::write(d.join(STATE_FILE), &b).unwrap();
    let e = refused(&d);
    assert!(e.contains("not an embervm snapshot"), "{e}");

    // Another format version.
    let d = copy_snapshot(&good, "version");
    let mut b = fs::read(d.join(STATE_FILE)).unwrap();
    b[8] = b[8].wrapping_add(1);
    fs::write(d.join(STATE_FILE), &b).unwrap();
    let e = refused(&d);
    assert!(e.contains("version"), "{e}");

    // Corrupt body (checksum).
    let d = copy_snapshot(&good, "corrupt");
    let mut b = fs::read(d.join(STATE_FILE)).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    fs::write(d.join(STATE_FILE), &b).unwrap();
    let e = refused(&d);
    assert!(e.contains("corrupt") && e.contains("checksum"), "{e}");

    // Taken on another host (a CPUID leaf and a KVM capability differ).
    let (facts, state): (HostFacts, SnapshotState) =
        format::read_state_unchecked_facts(&good.join(STATE_FILE)).unwrap();
    let d = copy_snapshot(&good, "cpuid");
    let mut other = facts.clone();
    other.cpuid[1].ecx ^= 1 << 20;
    format::write_state(&d.join(STATE_FILE), &other, &state).unwrap();
    let e = refused(&d);
    assert!(e.contains("another host") || e.contains("CPUID"), "{e}");
    let d = copy_snapshot(&good, "cap");
    let mut other = facts.clone();
    other.caps[0].1 ^= 1;
    format::write_state(&d.join(STATE_FILE), &other, &state).unwrap();
    let e = refused(&d);
    assert!(e.contains("capability"), "{e}");

    // Memory file of the wrong size, and missing files.
    let d = copy_snapshot(&good, "memsize");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join(MEMORY_FILE))
        .unwrap();
    f.set_len(64 << 20).unwrap();
    let e = refused(&d);
    assert!(e.contains("memory"), "{e}");
    let d = copy_snapshot(&good, "nomem");
    fs::remove_file(d.join(MEMORY_FILE)).unwrap();
    let e = refused(&d);
    assert!(e.contains(MEMORY_FILE), "{e}");
    let d = scratch("empty");
    let e = refused(&d);
    assert!(e.contains(STATE_FILE), "{e}");

    mutated_bodies_never_panic(&good);

    for n in [
        "mutated", "good", "trunc", "magic", "version", "corrupt", "cpuid", "cap", "memsize",
        "nomem", "empty",
    ] {
        let _ = fs::remove_dir_all(
            std::env::temp_dir().join(format!("embervm-refuse-{n}-{}", std::process::id())),
        );
    }
}

/// Hostile state files that pass the checksum: random byte changes in the
/// body with the CRC recomputed. Each is refused or loads into KVM (a
/// register value changed); none panics the host. Nothing runs.
fn mutated_bodies_never_panic(good: &Path) {
    let original = fs::read(good.join(STATE_FILE)).unwrap();
    let header = HEADER_LEN as usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let d = copy_snapshot(good, "mutated");
    let (mut refused, mut loaded) = (0, 0);
    // Each restore costs ~0.15 s in the emulated test host, ~1 ms on KVM.
    let emulated = std::env::var("EMBERVM_KVM_HOST_KIND").is_ok_and(|k| k == "tcg-nested");
    let n = if emulated { 100 } else { 300 };
    for _ in 0..n {
        let mut b = original.clone();
        for _ in 0..1 + next() % 4 {
            let i = header + (next() as usize) % (b.len() - header);
            b[i] = next() as u8;
        }
        let crc = crc32fast::hash(&b[header..]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        fs::write(d.join(STATE_FILE), &b).unwrap();
        match Vm::restore(&d, RestoreConfig::default()) {
            Ok(_) => loaded += 1,
            Err(e) => {
                assert!(
                    matches!(e, VmError::Snapshot(_) | VmError::Setup(_)),
                    "{e:?}"
                );
                refused += 1;
            }
        }
    }
    eprintln!("{n} mutated state files: {refused} refused, {loaded} loaded (not run), no panic");
}
