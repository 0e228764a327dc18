//! embervm-agent: PID 1 inside the embervm guest.
//!
//! Start-up runs in a fixed order: bring the console up, mount the pseudo
//! file systems ([`mounts`]), start the reaper ([`reaper`]) that collects every
//! exited child (orphans included), then announce readiness on the console
//! ([`ready`]) and carry out the boot action named on the kernel command line
//! ([`cmdline`]). In the idle action the vsock command server ([`server`])
//! runs after readiness: it spawns user commands and collects their exit
//! status through the reaper's registry, so PID 1 never loses an exit status
//! to a stray `waitpid`.
//!
//! `embervm-agent --serve-unix PATH [--user UID:GID] [--cgroup-root DIR]
//! [--guest]` (for tests, never as PID 1) skips the mounts and serves the
//! same protocol on a Unix socket, with what it cannot enforce reported in
//! its hello; `--guest` (inside a guest only) uses PID 1's set-up instead:
//! cgroups under `/sys/fs/cgroup` with the agent moved aside, the sandbox
//! user, and a `Sync` that really sets the clock.

mod cmdline;
mod console;
mod mounts;
mod ready;
mod reaper;
mod server;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::process::id() != 1 && !args.is_empty() {
        return serve_unix(&args);
    }
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
        cmdline::Action::Idle => {
            let port = embervm_protocol::AGENT_VSOCK_PORT;
            match server::listener::Listener::vsock(port) {
                Ok(listener) => {
                    let ctx = server::Ctx::guest(reaper);
                    if !ctx.hello.capabilities.notes.is_empty() {
                        eprintln!("embervm-agent: {}", ctx.hello.capabilities.notes);
                    }
                    server::serve(listener, std::sync::Arc::new(ctx));
                }
                Err(e) => eprintln!("embervm-agent: cannot listen on vsock port {port}: {e}"),
            }
            loop {
                // PID 1 must never exit; the reaper thread does the work.
                std::thread::park();
            }
        }
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

/// `--serve-unix PATH [--user UID:GID] [--cgroup-root DIR] [--guest]`: the
/// test server.
fn serve_unix(args: &[String]) -> ExitCode {
    let usage =
        "usage: embervm-agent --serve-unix PATH [--user UID:GID] [--cgroup-root DIR] [--hello-timeout-ms N] [--guest]";
    let mut path = None;
    let mut user = None;
    let mut cgroup_root = None;
    let mut hello_timeout = None;
    let mut guest = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--guest" {
            guest = true;
            continue;
        }
        match (a.as_str(), it.next()) {
            ("--serve-unix", Some(p)) => path = Some(std::path::PathBuf::from(p)),
            ("--cgroup-root", Some(p)) => cgroup_root = Some(std::path::PathBuf::from(p)),
            ("--hello-timeout-ms", Some(ms)) => match ms.parse() {
                Ok(ms) => hello_timeout = Some(std::time::Duration::from_millis(ms)),
                Err(_) => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            ("--user", Some(u)) => {
                let parsed = u
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                match parsed {
                    Some((uid, gid)) => user = Some(embervm_protocol::UserSpec { uid, gid }),
                    None => {
                        eprintln!("{usage}");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    if let Err(e) = reaper::block_sigchld() {
        eprintln!("embervm-agent: cannot block SIGCHLD: {e}");
        return ExitCode::FAILURE;
    }
    // Orphans of user code come to us (as they would to PID 1) so the
    // reaper collects them.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let reaper = match reaper::Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("embervm-agent: cannot start the reaper: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ctx = if guest {
        server::Ctx::guest(reaper)
    } else {
        server::Ctx::host(reaper, user, cgroup_root.as_deref())
    };
    if let Some(t) = hello_timeout {
        ctx.hello_timeout = t;
    }
    let listener = match server::listener::Listener::unix(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("embervm-agent: cannot listen on {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "embervm-agent: serving on {} ({})",
        path.display(),
        ctx.hello.capabilities.notes
    );
    server::serve(listener, std::sync::Arc::new(ctx));
    ExitCode::SUCCESS
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
