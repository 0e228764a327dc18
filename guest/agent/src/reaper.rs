//! The reaper: PID 1 collects every child that exits, orphans included.
//!
//! SIGCHLD is blocked in every thread and consumed by one thread with
//! `sigwaitinfo`, which then drains `waitpid(-1, WNOHANG)`. A caller that
//! started a process registers its pid and receives that child's status on a
//! channel; statuses nobody claimed (orphans re-parented to PID 1, or a child
//! that exited before its parent registered) are kept briefly so a late
//! registration still gets its status, and dropped beyond a fixed bound.
//! Children are collected with `wait4`, so a caller that wants the CPU time
//! of its child (and the descendants that child waited for) registers with
//! [`Reaper::register_reaped`] instead of [`Reaper::register`].

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Unclaimed statuses kept at most (orphans are the common case; they are
/// never claimed, so this only bounds memory).
const MAX_UNCLAIMED: usize = 1024;

/// A collected child: its status and resource usage.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The wait status.
    pub status: ExitStatus,
    /// User CPU time of the child and the descendants it waited for.
    pub user: Duration,
    /// System CPU time, likewise.
    pub sys: Duration,
}

/// Who waits for a pid, and in which form.
enum Waiter {
    Status(Sender<ExitStatus>),
    Reaped(Sender<Reaped>),
}

#[derive(Default)]
struct Table {
    waiting: HashMap<libc::pid_t, Waiter>,
    unclaimed: HashMap<libc::pid_t, Reaped>,
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
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
            // SAFETY: rusage is plain data that wait4 fills in.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `status` and `usage` are valid out-pointers for wait4.
            let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
            if pid <= 0 {
                return;
            }
            self.deliver(
                pid,
                Reaped {
                    status: ExitStatus::from_raw(status),
                    user: timeval(usage.ru_utime),
                    sys: timeval(usage.ru_stime),
                },
            );
        }
    }

    fn deliver(&self, pid: libc::pid_t, reaped: Reaped) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.waiting.remove(&pid) {
            Some(Waiter::Status(tx)) => {
                let _ = tx.send(reaped.status);
            }
            Some(Waiter::Reaped(tx)) => {
                let _ = tx.send(reaped);
            }
            None if table.unclaimed.len() < MAX_UNCLAIMED => {
                table.unclaimed.insert(pid, reaped);
            }
            None => {}
        }
    }

    /// Register interest in `pid`'s exit status.
    pub fn register(&self, pid: libc::pid_t) -> Receiver<ExitStatus> {
        let (tx, rx) = channel();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reaped) = table.unclaimed.remove(&pid) {
            let _ = tx.send(reaped.status);
        } else {
            table.waiting.insert(pid, Waiter::Status(tx));
        }
        rx
    }

    /// Register interest in `pid`'s exit status and CPU usage.
    pub fn register_reaped(&self, pid: libc::pid_t) -> Receiver<Reaped> {
        let (tx, rx) = channel();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reaped) = table.unclaimed.remove(&pid) {
            let _ = tx.send(reaped);
        } else {
            table.waiting.insert(pid, Waiter::Reaped(tx));
        }
        rx
    }

    /// Run `argv` with the console as its stdio and wait for it.
    ///
    /// It is started with the agent's own fork/exec
    /// ([`crate::server::spawn`]), not std's `Command`, whose `waitpid` after
    /// a failed exec would race this reaper.
    pub fn run_and_wait(&self, argv: &[String]) -> String {
        use std::ffi::CString;
        let Some(prog) = argv.first() else {
            return "empty command".into();
        };
        let cstrings = |v: &mut dyn Iterator<Item = String>| -> Option<Vec<CString>> {
            v.map(|s| CString::new(s).ok()).collect()
        };
        let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let path = crate::server::user::lookup(&env, "PATH")
            .unwrap_or(crate::server::user::BASE_PATH)
            .to_owned();
        let candidates: Vec<String> = if prog.contains('/') {
            vec![prog.clone()]
        } else {
            path.split(':').map(|d| format!("{d}/{prog}")).collect()
        };
        let (Some(candidates), Some(argv_c), Some(envp), Ok(cwd)) = (
            cstrings(&mut candidates.into_iter()),
            cstrings(&mut argv.iter().cloned()),
            cstrings(&mut env.into_iter()),
            CString::new("/"),
        ) else {
            return format!("cannot start {prog}: NUL in an argument");
        };
        let plan = crate::server::spawn::SpawnPlan {
            candidates,
            argv: argv_c,
            envp,
            cwd,
            user: None,
            cgroup_procs: None,
            stdio: [0, 1, 2],
        };
        match crate::server::spawn::spawn(&plan) {
            Ok(pid) => match self.register(pid).recv() {
                Ok(status) => status.to_string(),
                Err(_) => "status lost".into(),
            },
            Err(e) => {
                if let Some(pid) = e.pid {
                    drop(self.register(pid));
                }
                format!("cannot start {prog}: {}", e.error)
            }
        }
    }
}
