//! Snapshot/restore against the real guest: clones from one template are
//! correct and unique, vsock works at once, SMP restores keep every vCPU
//! running, user state survives `snapshot()`/`from_snapshot()`, and create-
//! run-destroy cycles leave nothing behind.
//!
//! Counts: `EMBERVM_CLONES` (default 100) clones in sequence and as many 8
//! at a time; `EMBERVM_CYCLES` (default 1000) create-run-destroy cycles.
//! Inside the emulated test host, where a clone takes about a second, the
//! defaults are 8 and 50 (set the variables for the full counts).
//! Needs a KVM that runs Linux guests; `EMBERVM_SKIP_GUEST_TESTS=1` skips.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use embervm_core::sandbox::Origin;
use embervm_core::{Command, Sandbox, SandboxConfig};
use embervm_tests::{guest, host};

/// `var` if set; else `full`, or `emulated` inside the emulated test host
/// (where one clone costs ~1 s instead of milliseconds), said out loud.
fn count(var: &str, full: usize, emulated: usize) -> usize {
    if let Some(n) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if std::env::var("EMBERVM_KVM_HOST_KIND").is_ok_and(|k| k == "tcg-nested") {
        eprintln!(
            "{var}: {emulated} in the emulated test host (set {var}={full} for the full run)"
        );
        return emulated;
    }
    full
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("embervm-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(cache: &Path, vcpus: u32) -> SandboxConfig {
    let mut c = SandboxConfig::from_paths(guest::vmlinux(), guest::initramfs());
    c.memory_mib = 256;
    c.vcpus = vcpus;
    c.boot_timeout = Duration::from_secs(600);
    c.io_timeout = Duration::from_secs(120);
    c.grace = Duration::from_secs(60);
    c.template_cache = Some(cache.to_path_buf());
    c
}

/// The template every clone test restores (made once, in a fresh cache, so
/// this file always exercises the boot → snapshot → publish path too).
fn template() -> Option<&'static (PathBuf, SandboxConfig)> {
    if host::skip_guest_tests("snapshot_clones") {
        return None;
    }
    static T: OnceLock<(PathBuf, SandboxConfig)> = OnceLock::new();
    Some(T.get_or_init(|| {
        // One fixed place (emptied first), not one per process: the static
        // template outlives every test, so a per-process copy would be left
        // behind on each run.
        let cache = std::env::temp_dir().join("embervm-snap-tests-cache");
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::create_dir_all(&cache).unwrap();
        let cfg = config(&cache, 1);
        let t = Instant::now();
        let sb = Sandbox::new(cfg.clone()).expect("first sandbox (boots, makes the template)");
        let Origin::MadeTemplate(dir) = sb.origin().clone() else {
            panic!("first sandbox did not make a template: {:?}", sb.origin());
        };
        eprintln!("template made in {:?}: {}", t.elapsed(), dir.display());
        // The sandbox that made the template keeps working after it.
        let o = sb.exec(&Command::shell("echo still-here")).unwrap();
        assert_eq!(o.stdout_str(), "still-here\n");
        drop(sb);
        // A second `new` of the same shape restores it.
        let sb = Sandbox::new(cfg.clone()).unwrap();
        assert_eq!(sb.origin(), &Origin::Restored(dir.clone()));
        (dir, cfg)
    }))
}

const PROBE: &str = "test ! -e /tmp/clone-mark || echo SEEN-MARK; echo mark > /tmp/clone-mark; \
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; \
    python3 -c 'import time; print(repr(time.time()))'";

struct Probe {
    random: String,
    skew: f64,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Restore one clone, run the probe, check it; returns what must differ.
fn clone_once(dir: &Path, cfg: &SandboxConfig) -> Probe {
    let sb = Sandbox::from_snapshot(dir, cfg.clone()).expect("restore");
    let before = unix_now();
    let o = sb
        .exec(&Command::shell(PROBE))
        .expect("exec right after restore");
    let after = unix_now();
    assert!(o.success(), "{o:?}");
    let out = o.stdout_str();
    assert!(
        !out.contains("SEEN-MARK"),
        "a file from another clone: {out}"
    );
    let mut lines = out.lines();
    let random = lines.next().unwrap_or_default().to_string();
    assert_eq!(random.len(), 64, "{out}");
    let guest: f64 = lines
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("guest time: {e}: {out}"));
    // The guest's clock must lie within 1 s of the host's span around the exec.
    let skew = if guest < before {
        before - guest
    } else if guest > after {
        guest - after
    } else {
        0.0
    };
    assert!(
        skew <= 1.0,
        "guest clock {guest} vs host [{before}, {after}]"
    );
    // vsock works at once: a second connection next to the pooled one.
    let o = sb.exec(&Command::new(["true"])).unwrap();
    assert!(o.success());
    sb.close();
    Probe { random, skew }
}

fn check_unique(probes: &[Probe], what: &str) {
    let set: HashSet<&str> = probes.iter().map(|p| p.random.as_str()).collect();
    assert_eq!(
        set.len(),
        probes.len(),
        "{what}: /dev/urandom repeated between clones"
    );
    let worst = probes.iter().map(|p| p.skew).fold(0.0, f64::max);
    eprintln!(
        "{what}: {} clones, {} distinct /dev/urandom outputs, no file seen from another clone, worst clock skew {worst:.3} s",
        probes.len(),
        set.len()
    );
}

#[test]
fn clones_in_sequence_are_correct_and_unique() {
    let _g = host::one_guest_at_a_time();
    let Some((dir, cfg)) = template() else { return };
    let n = count("EMBERVM_CLONES", 100, 8);
    let t = Instant::now();
    let probes: Vec<Probe> = (0..n).map(|_| clone_once(dir, cfg)).collect();
    eprintln!("{n} clones in sequence: {:?}", t.elapsed());
    check_unique(&probes, "in sequence");
}

#[test]
fn clones_eight_at_a_time_are_correct_and_unique() {
    let _g = host::one_guest_at_a_time();
    let Some((dir, cfg)) = template() else { return };
    let n = count("EMBERVM_CLONES", 100, 8);
    let t = Instant::now();
    let per = n.div_ceil(8);
    let probes: Vec<Probe> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..per).map(|_| clone_once(dir, cfg)).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!("{} clones, 8 at a time: {:?}", probes.len(), t.elapsed());
    check_unique(&probes, "8 at a time");
}

#[test]
fn restore_with_two_vcpus_keeps_both_running() {
    let _g = host::one_guest_at_a_time();
    if template().is_none() || host::skip_smp("restore_with_two_vcpus_keeps_both_running") {
        return;
    }
    let cache = scratch("smp");
    let cfg = config(&cache, 2);
    drop(Sandbox::new(cfg.clone()).expect("2-vCPU template"));
    let sb = Sandbox::new(cfg).unwrap();
    assert!(
        matches!(sb.origin(), Origin::Restored(_)),
        "{:?}",
        sb.origin()
    );
    // A task pinned to each CPU runs there after the restore.
    let o = sb
        .exec(&Command::new([
            "python3",
            "-c",
            "import os\nfor c in (0, 1):\n    os.sched_setaffinity(0, {c})\n    sum(range(200000))\n    print(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[36])",
        ]))
        .unwrap();
    assert_eq!(o.stdout_str(), "0\n1\n", "{o:?}");
    let o = sb.exec(&Command::new(["nproc"])).unwrap();
    assert_eq!(o.stdout_str().trim(), "2");
    drop(sb);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn user_state_survives_snapshot_and_restore() {
    let _g = host::one_guest_at_a_time();
    let Some((dir, cfg)) = template() else { return };
    let src = Sandbox::from_snapshot(dir, cfg.clone()).unwrap();
    src.write_file("/tmp/data.txt", b"prepared state\n")
        .unwrap();
    src.write_file("/tmp/mymod.py", b"ANSWER = 42\n").unwrap();
    // Import it once: Python leaves its bytecode cache behind.
    let o = src
        .exec(&Command::shell(
            "cd /tmp && python3 -c 'import mymod; print(mymod.ANSWER)' && ls /tmp/__pycache__",
        ))
        .unwrap();
    assert!(o.stdout_str().starts_with("42\nmymod."), "{o:?}");
    let snap = scratch("user-state");
    let info = src.snapshot(&snap).expect("snapshot of a live sandbox");
    eprintln!("user snapshot: {info:?}");
    // The source goes on.
    assert!(src.exec(&Command::new(["true"])).unwrap().success());
    src.write_file("/tmp/data.txt", b"changed after the snapshot\n")
        .unwrap();

    let forked = Sandbox::from_snapshot(&snap, cfg.clone()).unwrap();
    assert_eq!(
        forked.read_file("/tmp/data.txt").unwrap(),
        b"prepared state\n"
    );
    let o = forked
        .exec(&Command::shell(
            "ls /tmp/__pycache__; cd /tmp && python3 -c 'import mymod; print(mymod.ANSWER)'",
        ))
        .unwrap();
    assert!(
        o.stdout_str().starts_with("mymod.") && o.stdout_str().ends_with("\n42\n"),
        "{o:?}"
    );
    drop(forked);
    drop(src);
    let _ = std::fs::remove_dir_all(&snap);
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Threads of embervm's own (vCPU, vsock worker, sandbox runner): the
/// test harness's threads come and go on their own.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("ember-"))
        .count()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn create_run_destroy_cycles_leave_nothing_behind() {
    let _g = host::one_guest_at_a_time();
    let Some((dir, cfg)) = template() else { return };
    let n = count("EMBERVM_CYCLES", 1000, 50);
    let cycle = || {
        let sb = Sandbox::from_snapshot(dir, cfg.clone()).unwrap();
        let o = sb.exec(&Command::new(["true"])).unwrap();
        assert!(o.success());
        sb.close();
    };
    for _ in 0..5 {
        cycle();
    }
    let (f0, t0, r0) = (fds(), threads(), rss_kib());
    let t = Instant::now();
    for _ in 0..n {
        cycle();
    }
    let (f1, t1, r1) = (fds(), threads(), rss_kib());
    eprintln!(
        "{n} create-run-destroy cycles in {:?}: fds {f0} -> {f1}, threads {t0} -> {t1}, RSS {r0} -> {r1} KiB",
        t.elapsed()
    );
    assert_eq!(f1, f0, "descriptors leaked");
    assert_eq!(t1, t0, "threads leaked");
    assert!(r1 < r0 + 32 * 1024, "RSS grew by {} KiB", r1 - r0);
}
