//! embervm-benches: the benchmark harness.
//!
//! Subcommands (each prints a markdown table of p50/p99 in ms):
//! - `kvm-setup [RUNS]`: KVM_CREATE_VM / KVM_CREATE_VCPU on this host's KVM.
//! - `vm-setup [RUNS]`: the VMM-side setup of the default guest up to the
//!   first KVM_RUN (works on a KVM that cannot run Linux, too).
//! - `boot [RUNS]`: time to the guest's ready line, embervm next to QEMU
//!   `-M microvm` (needs a KVM that runs Linux: use the test host).
//! - `sandbox [RUNS]`: the `Sandbox` API: `Sandbox::new` to the first exec
//!   result, exec round trip of `true` (RUNS times), 64 MiB file throughput
//!   each way over one connection.
//! - `restore-setup [RUNS]`: `Vm::restore` → first KVM_RUN at 128 MiB,
//!   1 GiB and 4 GiB, with phases (any `/dev/kvm`).
//! - `restore [RUNS]`: restore of the real guest to the agent's reply at
//!   each size, cold boot vs restore, create+run+destroy per second with
//!   1/2/8 threads, memory per idle clone (the test host).

mod boot;
mod kvm_setup;
mod sandbox;
mod snapshot;
mod stats;
mod vm_setup;

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str =
    "usage: embervm-benches <kvm-setup|vm-setup|boot|sandbox|restore-setup|restore> [RUNS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs =
        |default: usize| -> usize { args.get(1).and_then(|s| s.parse().ok()).unwrap_or(default) };
    let result = match args.first().map(String::as_str) {
        Some("kvm-setup") => kvm_setup::run(runs(50)),
        Some("vm-setup") => vm_setup::run(runs(20)),
        Some("boot") => boot::run(runs(20)),
        Some("sandbox") => sandbox::run(runs(100)),
        Some("restore-setup") => snapshot::run_setup(runs(50)),
        Some("restore") => snapshot::run(runs(20)),
        Some("setup-child") if args.len() == 3 => {
            vm_setup::child(Path::new(&args[1]), Path::new(&args[2]))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", args[0]);
            ExitCode::FAILURE
        }
    }
}
