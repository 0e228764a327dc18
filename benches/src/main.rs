//! embervm-benches: the benchmark harness.
//!
//! `kvm-setup` times the host-side KVM calls every VM start pays
//! (KVM_CREATE_VM, KVM_CREATE_VCPU) on this machine's own `/dev/kvm`, and
//! prints p50/p99 over the given number of runs.

use std::time::Instant;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    match args.first().map(String::as_str) {
        Some("kvm-setup") => match kvm_setup(runs) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kvm-setup: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: embervm-benches kvm-setup [RUNS]");
            std::process::ExitCode::from(2)
        }
    }
}

fn kvm_setup(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let kvm = embervm_core::kvm::open_kvm()?;
    let mut create_vm = Vec::with_capacity(runs);
    let mut create_vcpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let vm = kvm.create_vm()?;
        create_vm.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let _vcpu = vm.create_vcpu(0)?;
        create_vcpu.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("| step | runs | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("KVM_CREATE_VM", &mut create_vm),
        ("KVM_CREATE_VCPU", &mut create_vcpu),
    ] {
        println!(
            "| {name} | {runs} | {:.3} | {:.3} |",
            pct(v, 50.0),
            pct(v, 99.0)
        );
    }
    Ok(())
}

/// The `p`th percentile (nearest rank) of `v`; sorts `v`.
fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
