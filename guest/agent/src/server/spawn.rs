//! Starting a child with fork/execve, without std's `Command`.
//!
//! std's `Command::spawn` calls `waitpid` on its child when `execve` fails,
//! which would race PID 1's reaper (and could panic when the reaper wins).
//! So the agent forks itself: everything the child needs (argv, envp,
//! candidate program paths, cwd, fds) is prepared before `fork`, and the
//! child only makes async-signal-safe system calls: reset the signal mask
//! and SIGPIPE, start a new session, join its cgroup, take its stdio, drop
//! to the target user, change directory, exec. A failure is written as
//! (stage, errno) to a close-on-exec pipe that the parent reads: end of
//! file means the exec succeeded. The exit status of every child, failed
//! or not, is collected by the reaper.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The step of the child's set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// setsid.
    Session,
    /// Joining the exec cgroup.
    Cgroup,
    /// Taking the stdio fds.
    Stdio,
    /// setgroups/setgid/setuid.
    User,
    /// chdir.
    Chdir,
    /// execve.
    Exec,
}

impl Stage {
    fn code(self) -> u32 {
        self as u32
    }

    fn from_code(c: u32) -> Stage {
        match c {
            0 => Stage::Session,
            1 => Stage::Cgroup,
            2 => Stage::Stdio,
            3 => Stage::User,
            4 => Stage::Chdir,
            _ => Stage::Exec,
        }
    }
}

/// A failed spawn: where, and the OS error.
#[derive(Debug)]
pub struct SpawnError {
    /// The child that failed after the fork (its status goes to the reaper).
    pub pid: Option<libc::pid_t>,
    /// The failing step.
    pub stage: Stage,
    /// The error.
    pub error: io::Error,
}

/// Everything a child needs, prepared before fork.
pub struct SpawnPlan {
    /// Program paths to try in order (one, or one per `PATH` entry).
    pub candidates: Vec<CString>,
    /// argv.
    pub argv: Vec<CString>,
    /// envp entries `KEY=VALUE`.
    pub envp: Vec<CString>,
    /// Working directory.
    pub cwd: CString,
    /// Switch to (uid, gid) with no supplementary groups.
    pub user: Option<(u32, u32)>,
    /// An open `cgroup.procs` to write "0" into (joins the cgroup).
    pub cgroup_procs: Option<RawFd>,
    /// The fds that become 0, 1, 2.
    pub stdio: [RawFd; 3],
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec pipe as (read end, write end).
pub fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe()
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Fork and exec according to `plan`; returns the child's pid once its
/// exec has succeeded.
pub fn spawn(plan: &SpawnPlan) -> Result<libc::pid_t, SpawnError> {
    let fail = |stage, error| SpawnError {
        pid: None,
        stage,
        error,
    };
    let (err_r, err_w) = pipe().map_err(|e| fail(Stage::Exec, e))?;
    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.envp);
    let candidates: Vec<*const libc::c_char> = plan.candidates.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let empty_set = unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    };
    let groups = plan.user.map(|(_, gid)| [gid as libc::gid_t]);

    // SAFETY: the child runs only async-signal-safe calls on data prepared
    // above (no allocation, no locks) and ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(Stage::Exec, io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see the fork above; `child` never returns.
        unsafe {
            child(
                plan,
                &argv,
                &envp,
                &candidates,
                &empty_set,
                groups.as_ref(),
                err_w.as_raw_fd(),
            )
        }
    }
    drop(err_w);
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                err_r.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n == 0 {
            break;
        }
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        got += n as usize;
    }
    if got == 0 {
        return Ok(pid);
    }
    let stage = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Err(SpawnError {
        pid: Some(pid),
        stage: Stage::from_code(stage),
        error: io::Error::from_raw_os_error(errno),
    })
}

/// The child side of [`spawn`]: never returns.
///
/// # Safety
/// Must only be called in a freshly forked child; all pointers must point
/// into data prepared by the parent before the fork.
unsafe fn child(
    plan: &SpawnPlan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    candidates: &[*const libc::c_char],
    empty_set: &libc::sigset_t,
    groups: Option<&[libc::gid_t; 1]>,
    err_fd: RawFd,
) -> ! {
    let report = |stage: Stage, errno: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&stage.code().to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write and _exit are async-signal-safe; `msg` is on the
        // stack.
        unsafe {
            libc::write(err_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: (whole block) each call is async-signal-safe and only
    // touches data prepared before the fork.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, empty_set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::setsid() < 0 {
            report(Stage::Session, errno());
        }
        if let Some(fd) = plan.cgroup_procs {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                report(Stage::Cgroup, errno());
            }
        }
        for (target, &fd) in plan.stdio.iter().enumerate() {
            let target = target as RawFd;
            if fd == target {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    report(Stage::Stdio, errno());
                }
            } else if libc::dup2(fd, target) < 0 {
                report(Stage::Stdio, errno());
            }
        }
        if let (Some((uid, gid)), Some(groups)) = (plan.user, groups) {
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                report(Stage::User, errno());
            }
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            report(Stage::Chdir, errno());
        }
        let mut last = libc::ENOENT;
        for &path in candidates {
            libc::execve(path, argv.as_ptr(), envp.as_ptr());
            let e = errno();
            // Like execvp: a later ENOENT does not hide an earlier EACCES.
            if e != libc::ENOENT && e != libc::ENOTDIR {
                last = e;
            }
        }
        report(Stage::Exec, last)
    }
}
