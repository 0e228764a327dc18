//! The sandbox's view of its VM: the console's last lines, whether the
//! agent announced itself, and how the VM ended.
//!
//! The console callback (on a vCPU thread) and the VM's runner thread update
//! one [`VmWatch`]; [`super::Sandbox::new`] blocks on its condition variable
//! until the ready line appears or the VM ends, so boot waits are signalled,
//! never polled. Only the last [`TAIL_LINES`] lines are kept.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// The line the agent prints on the console once PID 1 is up.
pub const READY_MARKER: &str = "EMBERVM_READY";
/// Console lines kept for error messages.
pub const TAIL_LINES: usize = 40;
/// Longest console line kept (longer ones are cut).
const LINE_MAX: usize = 512;

#[derive(Default)]
struct State {
    tail: VecDeque<String>,
    partial: Vec<u8>,
    ready: Option<String>,
    exited: Option<String>,
}

/// Shared between the console callback, the runner thread and the sandbox.
#[derive(Default)]
pub struct VmWatch {
    state: Mutex<State>,
    cv: Condvar,
}

/// What [`VmWatch::wait_ready`] saw.
pub enum Ready {
    /// The ready line (its text).
    Line(String),
    /// The VM ended first (how).
    Exited(String),
    /// The deadline passed.
    TimedOut,
}

impl VmWatch {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a console callback panicked; the text
        // it guards is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Console bytes (whole lines or chunks) from the guest.
    pub fn console(&self, bytes: &[u8], echo: bool) {
        if echo {
            use std::io::Write;
            let _ = std::io::stderr().write_all(bytes);
        }
        let mut s = self.lock();
        let mut notify = false;
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&s.partial).trim_end().to_string();
                s.partial.clear();
                if s.ready.is_none() && line.contains(READY_MARKER) {
                    s.ready = Some(line.clone());
                    notify = true;
                }
                if s.tail.len() == TAIL_LINES {
                    s.tail.pop_front();
                }
                s.tail.push_back(line);
            } else if s.partial.len() < LINE_MAX {
                s.partial.push(b);
            }
        }
        drop(s);
        if notify {
            self.cv.notify_all();
        }
    }

    /// The VM ended; `how` says why.
    pub fn exited(&self, how: String) {
        let mut s = self.lock();
        if s.exited.is_none() {
            s.exited = Some(how);
        }
        drop(s);
        self.cv.notify_all();
    }

    /// How the VM ended, if it has.
    pub fn exit_reason(&self) -> Option<String> {
        self.lock().exited.clone()
    }

    /// The last console lines, joined.
    pub fn tail(&self) -> String {
        let s = self.lock();
        let mut out: Vec<&str> = s.tail.iter().map(String::as_str).collect();
        let partial = String::from_utf8_lossy(&s.partial).to_string();
        if !partial.is_empty() {
            out.push(&partial);
            return out.join("\n");
        }
        out.join("\n")
    }

    /// Wait until the VM's end is recorded or `deadline` passes; returns how
    /// it ended, if it has.
    pub fn wait_exit(&self, deadline: Instant) -> Option<String> {
        let mut s = self.lock();
        loop {
            if let Some(how) = &s.exited {
                return Some(how.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = match self.cv.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Wait for the ready line or the VM's end, until `deadline`.
    pub fn wait_ready(&self, deadline: Instant) -> Ready {
        let mut s = self.lock();
        loop {
            if let Some(line) = &s.ready {
                return Ready::Line(line.clone());
            }
            if let Some(how) = &s.exited {
                return Ready::Exited(how.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ready::TimedOut;
            }
            s = match self.cv.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_line_across_chunks() {
        let w = VmWatch::default();
        w.console(b"boot...\nEMBERVM_RE", false);
        assert!(matches!(w.wait_ready(Instant::now()), Ready::TimedOut));
        w.console(b"ADY version=1\n", false);
        match w.wait_ready(Instant::now() + Duration::from_secs(1)) {
            Ready::Line(l) => assert!(l.starts_with("EMBERVM_READY")),
            _ => panic!("no ready line"),
        }
        assert!(w.tail().contains("boot..."));
    }

    #[test]
    fn exit_wakes_and_tail_is_bounded() {
        let w = std::sync::Arc::new(VmWatch::default());
        for i in 0..100 {
            w.console(format!("line {i}\n").as_bytes(), false);
        }
        assert_eq!(w.tail().lines().count(), TAIL_LINES);
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.exited("guest reset".into()));
        match w.wait_ready(Instant::now() + Duration::from_secs(10)) {
            Ready::Exited(how) => assert_eq!(how, "guest reset"),
            _ => panic!("exit not seen"),
        }
        t.join().unwrap();
    }
}
