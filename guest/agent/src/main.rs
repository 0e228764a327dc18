//! embervm-agent: PID 1 inside the embervm guest.
//!
//! Start-up runs in a fixed order: bring the console up, mount the pseudo
//! file systems ([`mounts`]), start the reaper ([`reaper`]) that collects every
//! exited child (orphans included), then announce readiness on the console
//! ([`ready`]) and carry out the boot action named on the kernel command line
//! ([`cmdline`]). The vsock command server plugs in after readiness: it will
//! spawn user commands and collect their exit status through the reaper's
//! registry, so PID 1 never loses an exit status to a stray `waitpid`.

mod cmdline;
mod console;
mod mounts;
mod ready;
mod reaper;

use std::process::ExitCode;

fn main() -> ExitCode {
    console::ensure_stdio();
    let boot = cmdline::BootOptions::from_proc();
    // SIGCHLD must be blocked before any thread starts so that only the
    // reaper thread receives it (through sigwaitinfo).
    if let Err(e) = reaper::block_sigchld() {
        eprintln!("embervm-agent: cannot block SIGCHLD: {e}");
    }
    for failure in mounts::mount_all() {
        eprintln!("embervm-agent: {failure}");
    }
    let reaper = match reaper::Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("embervm-agent: cannot start the reaper: {e}");
            return halt(ExitCode::FAILURE);
        }
    };
    ready::announce();
    match boot.action {
        cmdline::Action::Idle => loop {
            // PID 1 must never exit; the reaper thread does the work.
            std::thread::park();
        },
        cmdline::Action::Reboot => {
            cmdline::reboot_now();
            halt(ExitCode::FAILURE)
        }
        cmdline::Action::Run(argv) => {
            let status = reaper.run_and_wait(&argv);
            println!("embervm-agent: command exited: {status}");
            cmdline::reboot_now();
            halt(ExitCode::FAILURE)
        }
    }
}

/// What PID 1 does when it cannot go on: it must not return (the kernel
/// would panic), so it parks after saying so, unless it is not PID 1.
fn halt(code: ExitCode) -> ExitCode {
    if std::process::id() != 1 {
        return code;
    }
    eprintln!("embervm-agent: halted");
    loop {
        std::thread::park();
    }
}
