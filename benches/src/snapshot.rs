//! Snapshot/restore benchmarks.
//!
//! - `restore-setup [RUNS]` (any `/dev/kvm`, also one that cannot run
//!   Linux): a never-run VM of the default guest (vsock attached) is
//!   snapshotted at 128 MiB, 1 GiB and 4 GiB; then `Vm::restore` → first
//!   `KVM_RUN`, RUNS times per size, with the phase breakdown.
//! - `restore [RUNS]` (needs a KVM that runs Linux: the test host): a
//!   template of the real guest at 128 MiB, 1 GiB and 4 GiB; restore to the
//!   agent's first reply per size with the breakdown; cold boot next to
//!   restore; `run("true")` on a fresh sandbox; create+run+destroy per
//!   second with 1, 2 and 8 threads; host memory per idle clone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use embervm_core::devices::virtio::vsock::VsockConfig;
use embervm_core::sandbox::Origin;
use embervm_core::vm::RestoreConfig;
use embervm_core::{Command, Language, Sandbox, SandboxConfig, Vm, VmConfig};

use crate::stats::{ms, pct, row};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const SIZES: [u32; 3] = [128, 1024, 4096];

fn guest_dir() -> PathBuf {
    embervm_core::paths::default_guest_dir()
}

fn scratch(name: &str) -> Res<PathBuf> {
    let d = std::env::temp_dir().join(format!("embervm-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Phase name → durations (ms), in first-seen order.
#[derive(Default)]
struct Phases {
    order: Vec<&'static str>,
    v: BTreeMap<&'static str, Vec<f64>>,
}

impl Phases {
    fn add(&mut self, name: &'static str, d: Duration) {
        if !self.v.contains_key(name) {
            self.order.push(name);
        }
        self.v.entry(name).or_default().push(ms(d));
    }

    fn print(&mut self, prefix: &str) {
        for n in self.order.clone() {
            if let Some(v) = self.v.get_mut(n) {
                println!("{}", row(&format!("{prefix}phase: {n}"), v));
            }
        }
    }
}

/// Wait (spinning: benchmark only) for vCPU 0's first `KVM_RUN`.
fn first_run(h: &embervm_core::VmHandle, runner: &std::thread::JoinHandle<()>) -> Instant {
    loop {
        if let Some(t) = h.first_kvm_run() {
            return t;
        }
        if runner.is_finished() {
            return Instant::now();
        }
        std::thread::yield_now();
    }
}

/// `restore-setup`: host-side restore cost up to the first `KVM_RUN`.
pub fn run_setup(runs: usize) -> Res<()> {
    let dir = guest_dir();
    println!("| restore, VMM side (never-run default guest, 1 vCPU, vsock) | runs | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    for mib in SIZES {
        let snap = scratch(&format!("setup-{mib}"))?;
        let mut c = VmConfig::new(dir.join(embervm_core::paths::VMLINUX));
        c.initrd = Some(dir.join(embervm_core::paths::INITRAMFS));
        c.memory_mib = mib;
        c.vsock = Some(VsockConfig::default());
        let mut vm = Vm::new(c)?;
        let info = vm.snapshot(&snap)?;
        drop(vm);
        let (mut restore, mut to_run) = (Vec::new(), Vec::new());
        let mut phases = Phases::default();
        for _ in 0..runs {
            let t0 = Instant::now();
            let vm = Vm::restore(&snap, RestoreConfig::default())?;
            restore.push(ms(t0.elapsed()));
            for (n, d) in &vm.setup_timings().phases {
                phases.add(n, *d);
            }
            let h = vm.handle();
            let runner = std::thread::spawn(move || {
                let _ = vm.run();
            });
            let first = first_run(&h, &runner);
            to_run.push(ms(first - t0));
            h.kill();
            let _ = runner.join();
        }
        println!(
            "| **{mib} MiB** (snapshot: {:.1} MiB of data, {:.0} ms to write) | | | |",
            info.memory_data_bytes as f64 / (1 << 20) as f64,
            ms(info.total)
        );
        println!(
            "{}",
            row(&format!("{mib} MiB: `Vm::restore`"), &mut restore)
        );
        println!(
            "{}",
            row(
                &format!("{mib} MiB: `Vm::restore` → first KVM_RUN"),
                &mut to_run
            )
        );
        phases.print(&format!("{mib} MiB: "));
        let _ = std::fs::remove_dir_all(&snap);
    }
    Ok(())
}

fn sandbox_config(mib: u32, cache: &Path) -> SandboxConfig {
    let mut c = SandboxConfig::from_image_dir(guest_dir()).memory_mib(mib);
    c.template_cache = Some(cache.to_path_buf());
    c.boot_timeout = Duration::from_secs(600);
    c
}

/// Make (boot + snapshot) the template of `cfg`; its directory.
fn make_template(cfg: &SandboxConfig) -> Res<PathBuf> {
    let t = Instant::now();
    let sb = Sandbox::new(cfg.clone())?;
    match sb.origin() {
        Origin::MadeTemplate(d) | Origin::Restored(d) => {
            eprintln!(
                "template {} MiB: {:?} ({})",
                cfg.memory_mib,
                t.elapsed(),
                d.display()
            );
            Ok(d.clone())
        }
        Origin::ColdBoot => Err("no template was made".into()),
    }
}

/// `restore`: the real guest, restore vs cold boot, throughput, memory.
pub fn run(runs: usize) -> Res<()> {
    let cache = scratch("templates")?;
    let mut templates = Vec::new();
    for mib in SIZES {
        let cfg = sandbox_config(mib, &cache);
        templates.push((mib, make_template(&cfg)?, cfg));
    }

    println!("| restore → agent's first reply (real guest, 1 vCPU) | runs | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    for (mib, dir, cfg) in &templates {
        let (mut total, mut vm, mut reply, mut exec) = (vec![], vec![], vec![], vec![]);
        let mut phases = Phases::default();
        for _ in 0..runs {
            let t0 = Instant::now();
            let sb = Sandbox::from_snapshot(dir, cfg.clone())?;
            let ready = t0.elapsed();
            let setup = sb.vm_setup_timings();
            for (n, d) in &setup.phases {
                phases.add(n, *d);
            }
            vm.push(ms(setup.total()));
            reply.push(ms(ready.saturating_sub(setup.total())));
            total.push(ms(ready));
            let t = Instant::now();
            sb.exec(&Command::new(["true"]))?;
            exec.push(ms(t.elapsed()));
            sb.close();
        }
        println!(
            "{}",
            row(
                &format!("{mib} MiB: `Sandbox::from_snapshot` (agent synced)"),
                &mut total
            )
        );
        println!(
            "{}",
            row(&format!("{mib} MiB: VM restore (to vCPU start)"), &mut vm)
        );
        phases.print(&format!("{mib} MiB: "));
        println!(
            "{}",
            row(
                &format!("{mib} MiB: vCPU start → agent's sync reply"),
                &mut reply
            )
        );
        println!(
            "{}",
            row(&format!("{mib} MiB: then first exec `true`"), &mut exec)
        );
    }

    let (_, dir, cfg) = &templates[0];
    println!();
    println!("| 128 MiB, interleaved | runs | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    let (mut cold, mut warm, mut e2e) = (vec![], vec![], vec![]);
    let cold_runs = runs.clamp(1, 5);
    for i in 0..runs {
        if i < cold_runs {
            let t = Instant::now();
            let sb = Sandbox::cold_boot(cfg.clone())?;
            sb.exec(&Command::new(["true"]))?;
            cold.push(ms(t.elapsed()));
        }
        let t = Instant::now();
        let sb = Sandbox::from_snapshot(dir, cfg.clone())?;
        sb.exec(&Command::new(["true"]))?;
        warm.push(ms(t.elapsed()));
        drop(sb);
        let t = Instant::now();
        let sb = Sandbox::new(cfg.clone())?;
        let o = sb.run("true", Language::Shell)?;
        e2e.push(ms(t.elapsed()));
        if !o.success() {
            return Err(format!("run(\"true\") failed: {o:?}").into());
        }
    }
    println!("{}", row("cold boot → first exec result", &mut cold));
    println!("{}", row("restore → first exec result", &mut warm));
    println!(
        "{}",
        row("`Sandbox::new` (template) + `run(\"true\")`", &mut e2e)
    );
    let ratio = pct(&mut cold, 50.0) / pct(&mut warm, 50.0);
    println!("| ratio cold / restore (p50) | | {ratio:.1}× | |");

    println!();
    println!(
        "| create + run `true` + destroy, 128 MiB | threads | per second | p50 (ms) | p99 (ms) |"
    );
    println!("|---|---|---|---|---|");
    for threads in [1usize, 2, 8] {
        let per = (runs / threads).max(2);
        let t = Instant::now();
        let mut lat: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<Vec<f64>, String> {
                        let mut v = Vec::new();
                        for _ in 0..per {
                            let t = Instant::now();
                            let sb = Sandbox::from_snapshot(dir, cfg.clone())
                                .map_err(|e| e.to_string())?;
                            sb.exec(&Command::new(["true"]))
                                .map_err(|e| e.to_string())?;
                            sb.close();
                            v.push(ms(t.elapsed()));
                        }
                        Ok(v)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                .collect::<Result<Vec<_>, _>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        let rate = lat.len() as f64 / t.elapsed().as_secs_f64();
        println!(
            "| | {threads} | {rate:.2} | {:.1} | {:.1} |",
            pct(&mut lat, 50.0),
            pct(&mut lat, 99.0)
        );
    }

    println!();
    memory_per_clone(dir, cfg)?;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

/// `(Rss, Anonymous, guest mappings' Rss, guest mappings' Anonymous)` of
/// this process, KiB.
fn memory_kib() -> Res<(u64, u64, u64, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let (mut rss, mut anon, mut guest, mut guest_anon) = (0, 0, 0, 0);
    let mut in_guest = false;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_guest = l.ends_with("/memory");
            continue;
        }
        let kib: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match first {
            "Rss:" => {
                rss += kib;
                if in_guest {
                    guest += kib;
                }
            }
            "Anonymous:" => {
                anon += kib;
                if in_guest {
                    guest_anon += kib;
                }
            }
            _ => {}
        }
    }
    Ok((rss, anon, guest, guest_anon))
}

fn memory_per_clone(dir: &Path, cfg: &SandboxConfig) -> Res<()> {
    const N: usize = 8;
    let (r0, a0, g0, ga0) = memory_kib()?;
    let mut clones = Vec::new();
    for _ in 0..N {
        let sb = Sandbox::from_snapshot(dir, cfg.clone())?;
        sb.exec(&Command::new(["true"]))?;
        clones.push(sb);
    }
    std::thread::sleep(Duration::from_secs(2));
    let (r1, a1, g1, ga1) = memory_kib()?;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / N as f64 / 1024.0;
    println!("| host memory per idle clone (128 MiB guest, {N} clones, after one exec) | MiB |");
    println!("|---|---|");
    println!("| process RSS | {:.2} |", per(r0, r1));
    println!("| of which guest pages mapped from the memory file (shared page cache + private copies) | {:.2} |", per(g0, g1));
    println!(
        "| guest pages the clone wrote (private copies) | {:.2} |",
        per(ga0, ga1)
    );
    println!(
        "| VMM memory beyond the guest's pages (heap, stacks, buffers) | {:.2} |",
        per(a0 + ga1, a1 + ga0)
    );
    drop(clones);
    Ok(())
}
