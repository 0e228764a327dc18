//! The reaper: PID 1 collects every child that exits, orphans included.
//!
//! SIGCHLD is blocked in every thread and consumed by one thread with
//! `sigwaitinfo`, which then drains `waitpid(-1, WNOHANG)`. A caller that
//! started a process registers its pid and receives that child's status on a
//! channel; statuses nobody claimed (orphans re-parented to PID 1, or a child
//! that exited before its parent registered) are kept briefly so a late
//! registration still gets its status, and dropped beyond a fixed bound.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Unclaimed statuses kept at most (orphans are the common case; they are
/// never claimed, so this only bounds memory).
const MAX_UNCLAIMED: usize = 1024;

#[derive(Default)]
struct Table {
    waiting: HashMap<libc::pid_t, Sender<ExitStatus>>,
    unclaimed: HashMap<libc::pid_t, ExitStatus>,
}

/// Handle to the reaper thread's registry.
#[derive(Clone)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before
    // sigaddset touches it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Block SIGCHLD in the calling thread (and so in every thread it starts).
pub fn block_sigchld() -> std::io::Result<()> {
    let set = sigchld_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

impl Reaper {
    /// Start the reaper thread. SIGCHLD must already be blocked.
    pub fn start() -> std::io::Result<Reaper> {
        let reaper = Reaper {
            table: Arc::default(),
        };
        let worker = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || worker.run())?;
        Ok(reaper)
    }

    fn run(&self) {
        let set = sigchld_set();
        loop {
            // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
            let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            if sig < 0 {
                continue; // EINTR
            }
            self.drain();
        }
    }

    fn drain(&self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a valid out-pointer for waitpid.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            self.deliver(pid, ExitStatus::from_raw(status));
        }
    }

    fn deliver(&self, pid: libc::pid_t, status: ExitStatus) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = table.waiting.remove(&pid) {
            let _ = tx.send(status);
        } else if table.unclaimed.len() < MAX_UNCLAIMED {
            table.unclaimed.insert(pid, status);
        }
    }

    /// Register interest in `pid`'s exit status.
    pub fn register(&self, pid: libc::pid_t) -> Receiver<ExitStatus> {
        let (tx, rx) = channel();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = table.unclaimed.remove(&pid) {
            let _ = tx.send(status);
        } else {
            table.waiting.insert(pid, tx);
        }
        rx
    }

    /// Run `argv` with the console as its stdio and wait for it.
    pub fn run_and_wait(&self, argv: &[String]) -> String {
        let Some((prog, args)) = argv.split_first() else {
            return "empty command".into();
        };
        let child = match std::process::Command::new(prog).args(args).spawn() {
            Ok(c) => c,
            Err(e) => return format!("cannot start {prog}: {e}"),
        };
        let rx = self.register(child.id() as libc::pid_t);
        match rx.recv() {
            Ok(status) => status.to_string(),
            Err(_) => "status lost".into(),
        }
    }
}
