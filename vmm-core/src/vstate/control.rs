//! Pause, resume and stop of all vCPU threads, from any thread, without races.
//!
//! State lives in one atomic (`Running`, `Paused`, `Stopping`) that each vCPU
//! checks before every `KVM_RUN` (one relaxed load on the fast path), plus a
//! mutex/condvar for the slow paths. To change state, a controller stores the
//! new state and then *kicks* every vCPU thread with a real-time signal. The
//! signal's handler sets `kvm_run.immediate_exit` of the vCPU that thread
//! runs, so whichever way the race goes, the vCPU leaves `KVM_RUN` and sees
//! the new state:
//!
//! - signal during `KVM_RUN`: the ioctl returns `EINTR`;
//! - signal after the state check but before `KVM_RUN`: `immediate_exit` makes
//!   the next `KVM_RUN` return `EINTR` at once;
//! - signal before the state check: the check sees the new state.
//!
//! The vCPU clears `immediate_exit` on `EINTR` *before* it checks the state
//! again. Thread handles are registered under the mutex and removed under it
//! before they are joined, so a kick never targets a joined thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::Instant;

use libc::{c_int, c_void, siginfo_t};

use super::vcpu_state::VcpuState;
use super::SetupError;
use crate::error::VmError;
use crate::exit::ExitReason;

const RUNNING: u8 = 0;
const PAUSED: u8 = 1;
const STOPPING: u8 = 2;

/// Offset from `SIGRTMIN` of the signal that kicks vCPU threads.
pub const KICK_SIGNAL_OFFSET: c_int = 0;

thread_local! {
    /// `immediate_exit` of the vCPU this thread runs, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    // Async-signal-safe: a const-initialized thread-local without destructor
    // and one volatile byte store.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is set by this thread's vCPU loop to the
            // `immediate_exit` byte of the kvm_run page its VcpuFd maps, and
            // reset to null before that VcpuFd is dropped.
            unsafe { p.write_volatile(1) };
        }
    });
}

fn kick_signal() -> c_int {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Install the kick signal handler (once per process).
pub fn install_kick_handler() -> Result<(), SetupError> {
    static ONCE: Once = Once::new();
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    ONCE.call_once(|| {
        let r = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| e.errno());
        let _ = RESULT.set(r);
    });
    match RESULT.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(errno)) => Err(SetupError::Host {
            what: "registering the vCPU kick signal handler",
            source: std::io::Error::from_raw_os_error(*errno),
        }),
        None => Err(SetupError::Host {
            what: "registering the vCPU kick signal handler",
            source: std::io::Error::other("handler registration did not run"),
        }),
    }
}

/// Point this thread's kick handler at a vCPU's `immediate_exit` (or null).
pub fn set_thread_immediate_exit(p: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(p));
}

/// What a vCPU does after a checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Enter the guest.
    Run,
    /// Leave the run loop.
    Stop,
}

struct Inner {
    threads: Vec<libc::pthread_t>,
    live: usize,
    parked: usize,
    outcome: Option<Result<ExitReason, VmError>>,
    /// Bumped by [`Control::save_vcpus`]; each parked vCPU saves once per value.
    save_epoch: u64,
    saved: Vec<Result<VcpuState, SetupError>>,
}

/// What a parked vCPU runs when [`Control::save_vcpus`] asks for its state.
pub type SaveFn<'a> = dyn FnMut() -> Result<VcpuState, SetupError> + 'a;

/// Shared run state of one VM's vCPUs.
pub struct Control {
    state: AtomicU8,
    inner: Mutex<Inner>,
    cond: Condvar,
    first_run: OnceLock<Instant>,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    /// Running, no threads yet.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(RUNNING),
            inner: Mutex::new(Inner {
                threads: Vec::new(),
                live: 0,
                parked: 0,
                outcome: None,
                save_epoch: 0,
                saved: Vec::new(),
            }),
            cond: Condvar::new(),
            first_run: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked while holding
        // it; the plain data inside is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kick(inner: &Inner) {
        for t in &inner.threads {
            // SAFETY: `t` is a thread spawned by `Vm::run` that has not been
            // joined: handles are removed from this list (under the lock we
            // hold) before joining. Sending a signal with an installed
            // handler has no other effect.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    /// Expect `n` vCPU threads (before spawning them).
    pub fn expect_threads(&self, n: usize) {
        self.lock().live += n;
    }

    /// Register a spawned vCPU thread for kicks.
    pub fn add_thread(&self, t: libc::pthread_t) {
        let mut g = self.lock();
        g.threads.push(t);
        if self.state.load(Ordering::SeqCst) != RUNNING {
            // A state change happened before this thread could be kicked.
            Self::kick(&g);
        }
    }

    /// Unregister all threads so they can be joined.
    pub fn take_threads(&self) {
        self.lock().threads.clear();
    }

    /// A vCPU thread is done (or was never started).
    pub fn thread_exited(&self) {
        let mut g = self.lock();
        g.live = g.live.saturating_sub(1);
        self.cond.notify_all();
    }

    /// Stop every vCPU; the first outcome reported wins.
    pub fn stop(&self, outcome: Result<ExitReason, VmError>) {
        let mut g = self.lock();
        if g.outcome.is_none() {
            g.outcome = Some(outcome);
        }
        self.state.store(STOPPING, Ordering::SeqCst);
        Self::kick(&g);
        self.cond.notify_all();
    }

    /// True while the vCPUs are held by [`Control::pause`].
    pub fn is_paused(&self) -> bool {
        self.state.load(Ordering::SeqCst) == PAUSED
    }

    /// True once the VM is stopping.
    pub fn stopping(&self) -> bool {
        self.state.load(Ordering::SeqCst) == STOPPING
    }

    /// Pause every vCPU and wait until all are out of the guest. Returns false
    /// if the VM is stopping.
    pub fn pause(&self) -> bool {
        let mut g = self.lock();
        if self.state.load(Ordering::SeqCst) == STOPPING {
            return false;
        }
        self.state.store(PAUSED, Ordering::SeqCst);
        Self::kick(&g);
        while self.state.load(Ordering::SeqCst) == PAUSED && g.parked < g.live {
            g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.state.load(Ordering::SeqCst) == PAUSED
    }

    /// Let paused vCPUs run again.
    pub fn resume(&self) {
        let _g = self.lock();
        if self
            .state
            .compare_exchange(PAUSED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.cond.notify_all();
        }
    }

    /// Called by a vCPU before each `KVM_RUN`: park while paused. While
    /// parked, the vCPU runs `save` once for each [`Control::save_vcpus`]
    /// call (`seen` is the vCPU's own record of the last one it served).
    pub fn checkpoint(&self, seen: &mut u64, save: &mut SaveFn<'_>) -> Flow {
        match self.state.load(Ordering::SeqCst) {
            RUNNING => return Flow::Run,
            STOPPING => return Flow::Stop,
            _ => {}
        }
        let mut g = self.lock();
        loop {
            match self.state.load(Ordering::SeqCst) {
                RUNNING => return Flow::Run,
                STOPPING => return Flow::Stop,
                _ if g.save_epoch != *seen => {
                    *seen = g.save_epoch;
                    let r = save();
                    g.saved.push(r);
                    self.cond.notify_all();
                }
                _ => {
                    g.parked += 1;
                    self.cond.notify_all();
                    g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner());
                    g.parked -= 1;
                }
            }
        }
    }

    /// Have every parked vCPU capture its state (on its own thread, where it
    /// can first complete pending I/O) and return the results. `None` if
    /// the VM is not paused or stops meanwhile.
    pub fn save_vcpus(&self) -> Option<Vec<Result<VcpuState, SetupError>>> {
        let mut g = self.lock();
        if self.state.load(Ordering::SeqCst) != PAUSED {
            return None;
        }
        g.save_epoch += 1;
        g.saved.clear();
        self.cond.notify_all();
        while self.state.load(Ordering::SeqCst) == PAUSED && g.saved.len() < g.live {
            g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if self.state.load(Ordering::SeqCst) != PAUSED {
            return None;
        }
        Some(std::mem::take(&mut g.saved))
    }

    /// Wait until an outcome is reported or every vCPU thread is gone.
    pub fn wait(&self) -> Result<ExitReason, VmError> {
        let mut g = self.lock();
        while g.outcome.is_none() && g.live > 0 {
            g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.outcome.take().unwrap_or(Ok(ExitReason::Killed))
    }

    /// Note the first `KVM_RUN` (for benchmarks).
    pub fn mark_first_run(&self) {
        let _ = self.first_run.set(Instant::now());
    }

    /// When the first `KVM_RUN` was entered, if it was.
    pub fn first_run(&self) -> Option<Instant> {
        self.first_run.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Simulated vCPU threads (no KVM): loop on checkpoints.
    #[test]
    fn pause_resume_stop() {
        install_kick_handler().unwrap();
        let c = Arc::new(Control::new());
        c.expect_threads(3);
        let spins = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut hs = Vec::new();
        for _ in 0..3 {
            let ct = c.clone();
            let spins = spins.clone();
            let h = std::thread::spawn(move || {
                let mut seen = 0;
                let mut save = || Err(SetupError::BadState("test".into()));
                while ct.checkpoint(&mut seen, &mut save) == Flow::Run {
                    spins.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
                ct.thread_exited();
            });
            use std::os::unix::thread::JoinHandleExt;
            c.add_thread(h.as_pthread_t());
            hs.push(h);
        }
        assert!(c.pause());
        let saved = c.save_vcpus().expect("paused");
        assert_eq!(saved.len(), 3, "one state per vCPU thread");
        assert_eq!(c.save_vcpus().map(|v| v.len()), Some(3), "again");
        let a = spins.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(spins.load(Ordering::SeqCst), a, "paused threads ran");
        c.resume();
        while spins.load(Ordering::SeqCst) == a {
            std::thread::yield_now();
        }
        c.stop(Ok(ExitReason::Reset));
        c.stop(Ok(ExitReason::Killed));
        assert!(matches!(c.wait(), Ok(ExitReason::Reset)));
        c.take_threads();
        for h in hs {
            h.join().unwrap();
        }
        assert!(!c.pause());
        assert!(c.save_vcpus().is_none(), "no save once stopped");
    }
}
