//! `vm-setup`: the VMM-side setup alone, up to the first `KVM_RUN`.
//!
//! Runs anywhere the KVM setup ioctls work, including a KVM that cannot run
//! a Linux guest (the VM is killed right after its first `KVM_RUN`). Three
//! figures over the default guest (vmlinux + initramfs, 128 MiB, 1 vCPU):
//!
//! - `Vm::new`: validation, memory, VM, kernel and initrd load, boot
//!   structures, devices, vCPU configuration;
//! - `Vm::new` → first `KVM_RUN`: the above plus starting the vCPU thread;
//! - process spawn → first `KVM_RUN`: a fresh process (`setup-child`), so
//!   exec, dynamic linking and the page cache are in the figure too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use embervm_core::{Vm, VmConfig};

use crate::stats::{ms, row};

/// CLOCK_MONOTONIC in nanoseconds (comparable across processes).
pub fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn instant_to_ns(i: Instant) -> u128 {
    let (now_i, now_ns) = (Instant::now(), monotonic_ns());
    now_ns - now_i.saturating_duration_since(i).as_nanos()
}

fn config(kernel: &Path, initrd: &Path) -> VmConfig {
    let mut c = VmConfig::new(kernel);
    c.initrd = Some(initrd.to_path_buf());
    c.memory_mib = 128;
    c
}

/// One setup: `Vm::new` time, its start, the first `KVM_RUN`, the phases.
struct Setup {
    built: f64,
    t0: Instant,
    first: Instant,
    phases: Vec<(&'static str, f64)>,
}

/// Build a VM, start it, wait for vCPU 0's first `KVM_RUN`, kill it.
fn one(kernel: &Path, initrd: &Path) -> Result<Setup, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let vm = Vm::new(config(kernel, initrd))?;
    let built = ms(t0.elapsed());
    let phases = vm
        .setup_timings()
        .phases
        .iter()
        .map(|(n, d)| (*n, ms(*d)))
        .collect();
    let h = vm.handle();
    let runner = std::thread::spawn(move || vm.run());
    // Benchmark only: spin until the vCPU thread reports its first entry.
    let first = loop {
        if let Some(t) = h.first_kvm_run() {
            break t;
        }
        if runner.is_finished() {
            break Instant::now();
        }
        std::thread::yield_now();
    };
    h.kill();
    let _ = runner.join();
    Ok(Setup {
        built,
        t0,
        first,
        phases,
    })
}

/// The child side of "process spawn → first KVM_RUN".
pub fn child(kernel: &Path, initrd: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let s = one(kernel, initrd)?;
    println!("FIRST_KVM_RUN_NS={}", instant_to_ns(s.first));
    Ok(())
}

/// The default guest's kernel and initramfs.
pub fn default_guest() -> (PathBuf, PathBuf) {
    let dir = embervm_core::paths::default_guest_dir();
    (
        dir.join(embervm_core::paths::VMLINUX),
        dir.join(embervm_core::paths::INITRAMFS),
    )
}

/// Time `runs` setups.
pub fn run(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (kernel, initrd) = default_guest();
    let exe = std::env::current_exe()?;
    // Warm the page cache and the signal handler.
    one(&kernel, &initrd)?;
    let (mut new, mut to_run, mut spawn_to_run) = (Vec::new(), Vec::new(), Vec::new());
    let mut phases: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for _ in 0..runs {
        let s = one(&kernel, &initrd)?;
        new.push(s.built);
        to_run.push(ms(s.first.saturating_duration_since(s.t0)));
        for (i, (name, v)) in s.phases.into_iter().enumerate() {
            if phases.len() <= i {
                phases.push((name, Vec::new()));
            }
            phases[i].1.push(v);
        }

        let start = monotonic_ns();
        let out = Command::new(&exe)
            .arg("setup-child")
            .arg(&kernel)
            .arg(&initrd)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first_ns: u128 = text
            .lines()
            .find_map(|l| l.strip_prefix("FIRST_KVM_RUN_NS="))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "setup-child failed: {}{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        spawn_to_run.push((first_ns.saturating_sub(start)) as f64 / 1e6);
    }
    println!("VMM-side setup, default guest (vmlinux + initramfs), 128 MiB, 1 vCPU, /dev/kvm of this host");
    println!();
    println!("| step | runs | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!("{}", row("Vm::new (all setup)", &mut new));
    println!("{}", row("Vm::new → first KVM_RUN", &mut to_run));
    println!(
        "{}",
        row("process spawn → first KVM_RUN", &mut spawn_to_run)
    );
    for (name, v) in &mut phases {
        println!("{}", row(&format!("Vm::new phase: {name}"), v));
    }
    Ok(())
}
