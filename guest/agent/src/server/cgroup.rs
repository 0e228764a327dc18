//! cgroup v2 for user code.
//!
//! Layout under the cgroup root (`/sys/fs/cgroup` in the guest):
//!
//! ```text
//! agent/        the agent itself (moved here at start)
//! embervm/      controllers enabled in its cgroup.subtree_control
//!   exec-N/     one per exec: memory.max, memory.swap.max=0,
//!               memory.oom.group=1, pids.max, cpu.max
//! ```
//!
//! The agent sits in a sibling of the exec cgroups, so a memory hog or a fork
//! bomb hits its own cgroup's limit and never the agent. The child joins its
//! cgroup itself, before exec, by writing "0" to the open `cgroup.procs`
//! fd. After the exec the agent reads `memory.events` (oom_kill) and
//! `cpu.stat`, kills what is left with `cgroup.kill`, waits for
//! `cgroup.events` to say "populated 0" (poll with POLLPRI, no sleeping) and
//! removes the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use embervm_protocol::Limits;

/// The controllers we use, in `subtree_control` syntax.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Which controllers are enabled for exec cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controllers {
    /// memory.max works.
    pub memory: bool,
    /// pids.max works.
    pub pids: bool,
    /// cpu.max works.
    pub cpu: bool,
}

/// The parent of all exec cgroups.
#[derive(Debug)]
pub struct CgroupRoot {
    base: PathBuf,
    next: AtomicU64,
    /// Enabled controllers.
    pub controllers: Controllers,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// True if `path` is the root of a cgroup v2 file system.
pub fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; the call fills it in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    st.f_type == libc::CGROUP2_SUPER_MAGIC
}

impl CgroupRoot {
    /// Set up the hierarchy under `root`; with `move_self`, the agent moves
    /// itself into `root/agent` first (PID 1 only: it leaves the root
    /// cgroup, which may not hold processes once controllers are enabled
    /// below it in a non-root cgroup).
    pub fn setup(root: &Path, move_self: bool) -> io::Result<CgroupRoot> {
        if !is_cgroup2(root) {
            return Err(io::Error::other(format!(
                "{} is not a cgroup v2 mount",
                root.display()
            )));
        }
        if move_self {
            let agent = root.join("agent");
            fs::create_dir_all(&agent)?;
            write(&agent.join("cgroup.procs"), &std::process::id().to_string())?;
        }
        let available = fs::read_to_string(root.join("cgroup.controllers"))?;
        let enable: Vec<&str> = CONTROLLERS
            .iter()
            .copied()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        let line = enable
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        if !line.is_empty() {
            write(&root.join("cgroup.subtree_control"), &line)?;
        }
        let base = root.join("embervm");
        fs::create_dir_all(&base)?;
        if !line.is_empty() {
            write(&base.join("cgroup.subtree_control"), &line)?;
        }
        let has = |c: &str| enable.contains(&c);
        Ok(CgroupRoot {
            base,
            next: AtomicU64::new(1),
            controllers: Controllers {
                memory: has("memory"),
                pids: has("pids"),
                cpu: has("cpu"),
            },
        })
    }

    /// Create an exec cgroup with `limits`. Returns it and whether every
    /// requested limit has a controller.
    pub fn create(&self, limits: &Limits) -> io::Result<(Cgroup, bool)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.base.join(format!("exec-{n}"));
        fs::create_dir(&path)?;
        let mut cg = Cgroup {
            procs: None,
            path: path.clone(),
        };
        let mut enforced = true;
        // On any error `cg` is dropped, which removes the directory.
        if let Some(bytes) = limits.memory_bytes {
            if self.controllers.memory {
                write(&path.join("memory.max"), &bytes.to_string())?;
                // Absent without swap support: nothing to turn off then.
                let _ = write(&path.join("memory.swap.max"), "0");
                let _ = write(&path.join("memory.oom.group"), "1");
            } else {
                enforced = false;
            }
        }
        if let Some(pids) = limits.pids {
            if self.controllers.pids {
                write(&path.join("pids.max"), &pids.to_string())?;
            } else {
                enforced = false;
            }
        }
        if let Some(cpu) = limits.cpu {
            if self.controllers.cpu {
                write(
                    &path.join("cpu.max"),
                    &format!("{} {}", cpu.quota_us, cpu.period_us),
                )?;
            } else {
                enforced = false;
            }
        }
        let procs = OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?;
        cg.procs = Some(procs);
        Ok((cg, enforced))
    }
}

/// One exec's cgroup; dropping it kills what is left and removes it.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    procs: Option<File>,
}

impl Cgroup {
    /// The open `cgroup.procs` for the child to join.
    pub fn procs_fd(&self) -> Option<RawFd> {
        self.procs.as_ref().map(|f| f.as_raw_fd())
    }

    /// Kill every process in the cgroup.
    pub fn kill(&self) -> io::Result<()> {
        match write(&self.path.join("cgroup.kill"), "1") {
            Ok(()) => Ok(()),
            Err(_) => {
                // Before Linux 5.14: signal each member.
                let procs = fs::read_to_string(self.path.join("cgroup.procs"))?;
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                Ok(())
            }
        }
    }

    /// Whether the OOM killer killed anything here.
    pub fn oom_killed(&self) -> bool {
        fs::read_to_string(self.path.join("memory.events"))
            .map(|s| key_value(&s, "oom_kill").unwrap_or(0) > 0)
            .unwrap_or(false)
    }

    /// (user, system) CPU microseconds of everything that ran here.
    pub fn cpu_usage(&self) -> Option<(u64, u64)> {
        let s = fs::read_to_string(self.path.join("cpu.stat")).ok()?;
        Some((key_value(&s, "user_usec")?, key_value(&s, "system_usec")?))
    }

    /// Wait until no process is left (up to `timeout`); true if empty.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let Ok(mut events) = File::open(self.path.join("cgroup.events")) else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        loop {
            let mut text = String::new();
            use std::io::Seek;
            if events.seek(io::SeekFrom::Start(0)).is_err()
                || events.read_to_string(&mut text).is_err()
            {
                return true;
            }
            if key_value(&text, "populated") == Some(0) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: events.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis())
                .unwrap_or(libc::c_int::MAX)
                .max(1);
            // SAFETY: `pfd` is one valid pollfd; cgroup.events signals a
            // change with POLLPRI.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    }

    /// Kill what is left, wait until empty and remove the directory (the
    /// supervisor does this before `Exit`; dropping does it again, which is
    /// then a no-op).
    pub fn remove(&self) {
        if !self.path.exists() {
            return;
        }
        let _ = self.kill();
        self.wait_empty(Duration::from_secs(5));
        let _ = fs::remove_dir(&self.path);
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.procs = None;
        self.remove();
    }
}

/// The number after `key` in a flat-keyed cgroup file.
pub fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_keyed_files() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(key_value(events, "oom_kill"), Some(1));
        assert_eq!(key_value(events, "oom"), Some(1));
        let stat = "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n";
        assert_eq!(key_value(stat, "user_usec"), Some(2000));
        assert_eq!(key_value(stat, "system_usec"), Some(500));
        assert_eq!(key_value(stat, "nr_periods"), None);
        assert_eq!(key_value("populated 0\nfrozen 0\n", "populated"), Some(0));
    }

    #[test]
    fn tmpfs_is_not_cgroup2() {
        assert!(!is_cgroup2(Path::new("/nonexistent/path")));
        assert!(!is_cgroup2(&std::env::temp_dir()));
    }
}
