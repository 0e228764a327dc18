//! Exec: run one command and stream its output.
//!
//! [`start`] checks the request, resolves the user and environment, creates
//! the exec cgroup, forks the child ([`super::spawn`]) and registers it with
//! the reaper, then answers `Started` and leaves these threads running:
//!
//! - two output readers (stdout, stderr) that send `Output` chunks of at most
//!   `CHUNK_SIZE`, count them against `max_output` (the rest is read and
//!   dropped, so the child never blocks on a full pipe) and end at EOF;
//! - a stdin writer (for `Stdin::Bytes` or `Stdin::Stream`; a streamed chunk
//!   is answered with one `StdinCredit` once written);
//! - the supervisor, which waits for the reaper's status with the timeout as
//!   deadline (then kills the tree: `cgroup.kill`, or the process group
//!   without cgroups), kills whatever the command left behind, waits for the
//!   readers, gathers CPU time and OOM, and sends `Exit`, the last frame.
//!
//! The connection thread keeps the [`ExecHandle`] to forward stdin and
//! signals, and to kill the tree if the host goes away.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embervm_protocol::{
    ErrorKind, ErrorReply, ExecRequest, ExitInfo, Limits, OutputStream, Response, Stdin,
    CHUNK_SIZE, STDIN_WINDOW,
};

use super::cgroup::Cgroup;
use super::conn::Sink;
use super::spawn::{self, SpawnError, SpawnPlan, Stage};
use super::{user, Ctx};

/// How long the supervisor waits for output to end after the command and
/// its leftovers were killed (an escaped daemon may hold a pipe open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What the connection thread holds of a running exec.
pub struct ExecHandle {
    pgid: libc::pid_t,
    finished: Arc<AtomicBool>,
    stdin: Mutex<Option<SyncSender<Vec<u8>>>>,
    killer: Arc<Killer>,
}

impl ExecHandle {
    /// `Exit` has been sent.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Forward a streamed stdin chunk.
    pub fn stdin_data(&self, data: Vec<u8>) {
        let tx = self.stdin.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tx) = tx {
            let _ = tx.send(data);
        }
    }

    /// Close the streamed stdin.
    pub fn stdin_eof(&self) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Signal the command's process group.
    pub fn signal(&self, signal: i32) {
        // Once the leader is reaped its pid (the group id) may be reused.
        if !self.is_finished() && !self.killer.reaped.load(Ordering::SeqCst) {
            // SAFETY: kill takes no pointers; a bad signal number is EINVAL.
            unsafe { libc::kill(-self.pgid, signal) };
        }
    }

    /// The host went away: kill the tree and drop stdin.
    pub fn abort(&self) {
        self.stdin_eof();
        if !self.is_finished() {
            self.killer.kill();
        }
    }
}

/// Kills an exec's process tree.
struct Killer {
    pgid: libc::pid_t,
    cgroup: Option<Cgroup>,
    /// The leader was reaped: its pid may be reused, so no more killpg.
    reaped: AtomicBool,
}

impl Killer {
    fn kill(&self) {
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill();
        }
        if !self.reaped.load(Ordering::SeqCst) || self.cgroup.is_none() {
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }
}

/// The shared output budget (`max_output`) of stdout and stderr.
struct Budget {
    left: AtomicU64,
    truncated: AtomicBool,
}

impl Budget {
    /// How many of `n` bytes may still be sent.
    fn take(&self, n: usize) -> usize {
        let n = n as u64;
        let prev = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(n))
            })
            .unwrap_or(0);
        let allowed = prev.min(n);
        if allowed < n {
            self.truncated.store(true, Ordering::SeqCst);
        }
        allowed as usize
    }
}

fn bad(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::BadRequest, msg)
}

fn cstring(s: &str, what: &str) -> Result<CString, ErrorReply> {
    CString::new(s).map_err(|_| bad(format!("{what} contains a NUL byte")))
}

/// Program paths to try for `argv0`, like execvp.
fn candidates(argv0: &str, env: &[String]) -> Result<Vec<CString>, ErrorReply> {
    if argv0.is_empty() {
        return Err(bad("argv[0] is empty"));
    }
    if argv0.contains('/') {
        return Ok(vec![cstring(argv0, "argv[0]")?]);
    }
    let path = user::lookup(env, "PATH").unwrap_or(user::BASE_PATH);
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cstring(&format!("{dir}/{argv0}"), "PATH")
        })
        .collect()
}

fn spawn_error(e: &SpawnError, argv0: &str, cwd: &str) -> ErrorReply {
    let errno = e.error.raw_os_error().unwrap_or(0);
    let (kind, what) = match e.stage {
        Stage::Exec if errno == libc::ENOENT => {
            (ErrorKind::NotFound, format!("program {argv0:?} not found"))
        }
        Stage::Exec if errno == libc::EACCES => (
            ErrorKind::PermissionDenied,
            format!("cannot execute {argv0:?}"),
        ),
        Stage::Exec => (ErrorKind::SpawnFailed, format!("cannot execute {argv0:?}")),
        Stage::Chdir if errno == libc::ENOENT => (
            ErrorKind::NotFound,
            format!("working directory {cwd:?} does not exist"),
        ),
        Stage::Chdir => (ErrorKind::PermissionDenied, format!("cannot enter {cwd:?}")),
        Stage::User => (ErrorKind::PermissionDenied, "cannot switch user".into()),
        Stage::Cgroup => (ErrorKind::Limits, "cannot join the exec cgroup".into()),
        Stage::Session | Stage::Stdio => (ErrorKind::SpawnFailed, "cannot set up the child".into()),
    };
    ErrorReply::new(kind, format!("{what}: {}", e.error))
}

fn limits_requested(l: &Limits) -> bool {
    l.memory_bytes.is_some() || l.pids.is_some() || l.cpu.is_some()
}

/// Start `req`; on success `Started` has been sent and the exec runs on.
pub fn start(req: ExecRequest, ctx: &Arc<Ctx>, sink: &Sink) -> Result<Arc<ExecHandle>, ErrorReply> {
    let Some(argv0) = req.argv.first().cloned() else {
        return Err(bad("argv is empty"));
    };
    let id = user::resolve(req.user, &ctx.users)?;
    let env = user::environment(&id, &req.env)?;
    let cwd = match &req.cwd {
        Some(c) => c.clone(),
        None if std::path::Path::new(&id.home).is_dir() => id.home.clone(),
        None => "/".into(),
    };
    if let Some(cpu) = req.limits.cpu {
        if !(1000..=1_000_000).contains(&cpu.period_us) || cpu.quota_us < 1000 {
            return Err(ErrorReply::new(
                ErrorKind::Limits,
                "cpu quota needs period_us in 1000..=1000000 and quota_us >= 1000",
            ));
        }
    }
    let argv = req
        .argv
        .iter()
        .map(|a| cstring(a, "argv"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| cstring(e, "env"))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = candidates(&argv0, &env)?;
    let cwd_c = cstring(&cwd, "cwd")?;

    let (cgroup, enforced) = match &ctx.cgroups {
        Some(root) => {
            let (cg, ok) = root.create(&req.limits).map_err(|e| {
                ErrorReply::new(
                    ErrorKind::Limits,
                    format!("cannot create the exec cgroup: {e}"),
                )
            })?;
            (Some(cg), ok)
        }
        None => (None, !limits_requested(&req.limits)),
    };
    let io_err =
        |what: &str, e: std::io::Error| ErrorReply::new(ErrorKind::Io, format!("{what}: {e}"));
    let (out_r, out_w) = spawn::cloexec_pipe().map_err(|e| io_err("pipe", e))?;
    let (err_r, err_w) = spawn::cloexec_pipe().map_err(|e| io_err("pipe", e))?;
    let (stdin_child, stdin_ours): (OwnedFd, Option<OwnedFd>) = match req.stdin {
        Stdin::Null => (
            OwnedFd::from(File::open("/dev/null").map_err(|e| io_err("/dev/null", e))?),
            None,
        ),
        Stdin::Bytes(_) | Stdin::Stream => {
            let (r, w) = spawn::cloexec_pipe().map_err(|e| io_err("pipe", e))?;
            (r, Some(w))
        }
    };
    let plan = SpawnPlan {
        candidates,
        argv,
        envp,
        cwd: cwd_c,
        user: id.switch.then_some((id.user.uid, id.user.gid)),
        cgroup_procs: cgroup.as_ref().and_then(Cgroup::procs_fd),
        stdio: [
            stdin_child.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
        ],
    };
    let pid = match spawn::spawn(&plan) {
        Ok(pid) => pid,
        Err(e) => {
            if let Some(pid) = e.pid {
                // The failed child's status goes to the reaper; claim it.
                drop(ctx.reaper.register(pid));
            }
            return Err(spawn_error(&e, &argv0, &cwd));
        }
    };
    let started = Instant::now();
    let exited = ctx.reaper.register_reaped(pid);
    drop((stdin_child, out_w, err_w, plan));

    let finished = Arc::new(AtomicBool::new(false));
    sink.send(&Response::Started { pid: pid as u32 });
    let killer = Arc::new(Killer {
        pgid: pid,
        cgroup,
        reaped: AtomicBool::new(false),
    });
    let budget = Arc::new(Budget {
        left: AtomicU64::new(req.max_output.unwrap_or(u64::MAX)),
        truncated: AtomicBool::new(false),
    });

    // Output readers.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    for (stream, fd) in [(OutputStream::Stdout, out_r), (OutputStream::Stderr, err_r)] {
        let (sink, finished, budget, done) = (
            sink.clone(),
            finished.clone(),
            budget.clone(),
            done_tx.clone(),
        );
        let file = File::from(fd);
        thread("exec-output", move || {
            pump_output(file, stream, &sink, &finished, &budget);
            let _ = done.send(());
        });
    }
    drop(done_tx);

    // Stdin.
    let mut stdin_tx = None;
    if let Some(w) = stdin_ours {
        let mut file = File::from(w);
        match req.stdin {
            Stdin::Bytes(bytes) => thread("exec-stdin", move || {
                let _ = file.write_all(&bytes);
            }),
            _ => {
                let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(STDIN_WINDOW as usize + 1);
                stdin_tx = Some(tx);
                sink.send_unless(
                    &finished,
                    &Response::StdinCredit {
                        chunks: STDIN_WINDOW,
                    },
                );
                let (sink, finished) = (sink.clone(), finished.clone());
                thread("exec-stdin", move || {
                    let mut open = true;
                    for chunk in rx {
                        if open && file.write_all(&chunk).is_err() {
                            // The child closed its stdin: drop the rest, but
                            // keep granting credit so the host can finish.
                            open = false;
                        }
                        sink.send_unless(&finished, &Response::StdinCredit { chunks: 1 });
                    }
                });
            }
        }
    }

    let handle = Arc::new(ExecHandle {
        pgid: pid,
        finished: finished.clone(),
        stdin: Mutex::new(stdin_tx),
        killer: killer.clone(),
    });

    let sink = sink.clone();
    let timeout = req.timeout_ms.map(Duration::from_millis);
    thread("exec-supervisor", move || {
        let mut deadline = timeout.map(|t| started + t);
        let mut timed_out = false;
        let reaped = loop {
            let got = match deadline {
                Some(d) => exited.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => exited.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(r) => break Some(r),
                Err(RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    deadline = None;
                    killer.kill();
                }
                Err(RecvTimeoutError::Disconnected) => break None,
            }
        };
        let wall = started.elapsed();
        // Nothing of the command outlives it.
        killer.kill();
        killer.reaped.store(true, Ordering::SeqCst);
        if let Some(cg) = &killer.cgroup {
            cg.wait_empty(Duration::from_secs(5));
        }
        let grace = Instant::now() + DRAIN_GRACE;
        for _ in 0..2 {
            if done_rx
                .recv_timeout(grace.saturating_duration_since(Instant::now()))
                .is_err()
            {
                break;
            }
        }
        let mut exit = ExitInfo {
            timed_out,
            truncated: budget.truncated.load(Ordering::SeqCst),
            wall_us: wall.as_micros() as u64,
            limits_enforced: enforced,
            ..ExitInfo::default()
        };
        if let Some(r) = reaped {
            exit.code = r.status.code();
            exit.signal = r.status.signal();
            exit.cpu_user_us = r.user.as_micros() as u64;
            exit.cpu_sys_us = r.sys.as_micros() as u64;
        }
        if let Some(cg) = &killer.cgroup {
            exit.oom_killed = cg.oom_killed();
            if let Some((u, s)) = cg.cpu_usage() {
                exit.cpu_user_us = u;
                exit.cpu_sys_us = s;
            }
            cg.remove();
        }
        sink.send_last(&finished, &Response::Exit(exit));
    });
    Ok(handle)
}

/// Read one output pipe to its end, sending what the budget allows.
fn pump_output(
    mut file: File,
    stream: OutputStream,
    sink: &Sink,
    finished: &AtomicBool,
    budget: &Budget,
) {
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let allowed = budget.take(n);
        if allowed > 0 {
            sink.send_unless(
                finished,
                &Response::Output {
                    stream,
                    data: buf[..allowed].to_vec(),
                },
            );
        }
    }
}

/// Start a named thread; a failure to start one is reported, not fatal.
fn thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        eprintln!("embervm-agent: cannot start thread {name}: {e}");
    }
}
