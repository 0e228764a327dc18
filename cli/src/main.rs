//! `embervm`: the command-line face of embervm.

use std::process::ExitCode;

mod boot;
mod run;

const USAGE: &str = "usage: embervm <command>

commands:
  run        run code in a microVM: `run --language python -c 'print(1)'`, `run file.py`
  exec       run a command in a microVM: `exec -- cmd args...`
  boot       boot a kernel (default: the guest from `make guest`); `boot --help`
  check      check that this host can run embervm (KVM, default guest)
  version    print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") | Some("--version") => {
            println!("embervm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("check") => check(),
        Some("boot") => boot::main(&args[1..]),
        Some("run") => run::run_main(&args[1..]),
        Some("exec") => run::exec_main(&args[1..]),
        Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Report whether KVM opens and the default guest is built.
fn check() -> ExitCode {
    let mut ok = true;
    match embervm_core::kvm::open_kvm() {
        Ok(_) => println!("kvm: {} opens", embervm_core::kvm::kvm_path().display()),
        Err(e) => {
            ok = false;
            eprintln!("kvm: {e}");
        }
    }
    let dir = embervm_core::paths::default_guest_dir();
    for name in [embervm_core::paths::VMLINUX, embervm_core::paths::INITRAMFS] {
        let p = dir.join(name);
        if p.is_file() {
            println!("guest: {} present", p.display());
        } else {
            ok = false;
            eprintln!("guest: {} missing: build it with `make guest`", p.display());
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
