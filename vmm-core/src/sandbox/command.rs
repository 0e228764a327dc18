//! What to run ([`Command`], [`Language`]) and what came of it ([`Output`]).

use std::borrow::Cow;
use std::time::Duration;

use embervm_protocol::{CpuQuota, ExitInfo, Limits};

use super::error::{Result, SandboxError};

/// A command to run in the sandbox.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// Program and arguments; `argv[0]` without a `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Environment added to the guest's base environment (wins over it).
    pub env: Vec<(String, String)>,
    /// Working directory; `None` is the user's home (`/home/user`).
    pub cwd: Option<String>,
    /// Bytes for standard input (then end of file); `None` is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Kill the whole process tree after this long; `None` uses the
    /// sandbox default ([`super::SandboxConfig::default_timeout`]).
    pub timeout: Option<Duration>,
    /// `memory.max` of the command's cgroup, bytes (swap is off).
    pub memory_limit: Option<u64>,
    /// `pids.max` of the command's cgroup.
    pub pids_limit: Option<u32>,
    /// CPU share as a fraction of one CPU (`0.5` = half a CPU; `2.0` = two).
    pub cpu_limit: Option<f64>,
    /// Stdout and stderr bytes kept together; the rest is dropped and
    /// [`Output::truncated`] set. `None` uses the sandbox default.
    pub max_output: Option<u64>,
    /// Run as root (uid 0) instead of the unprivileged user 1000.
    pub as_root: bool,
}

impl Command {
    /// A command from a program and its arguments.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// `sh -c script`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(["sh".to_string(), "-c".to_string(), script.into()])
    }

    /// Add an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Set the working directory.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Set standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Set the timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// The protocol's limits for this command; checks the CPU fraction.
    pub(crate) fn limits(&self) -> Result<Limits> {
        let cpu = match self.cpu_limit {
            None => None,
            Some(f) if f.is_finite() && f > 0.0 && f <= 1024.0 => {
                const PERIOD_US: u64 = 100_000;
                let quota_us = ((f * PERIOD_US as f64) as u64).max(1000);
                Some(CpuQuota {
                    quota_us,
                    period_us: PERIOD_US,
                })
            }
            Some(f) => {
                return Err(SandboxError::Invalid(format!(
                    "cpu_limit {f}: give a fraction of one CPU above 0 (e.g. 0.5)"
                )))
            }
        };
        Ok(Limits {
            memory_bytes: self.memory_limit,
            pids: self.pids_limit,
            cpu,
        })
    }
}

/// A language [`super::Sandbox::run`] and [`super::Sandbox::call`] know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// Python 3 (`/usr/bin/python3`).
    Python,
    /// JavaScript as an ES module (`qjs`, QuickJS).
    JavaScript,
    /// POSIX shell (busybox `sh`).
    Shell,
}

impl Language {
    /// The language for a file name's extension (`.py`, `.js`/`.mjs`, `.sh`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "py" => Some(Language::Python),
            "js" | "mjs" => Some(Language::JavaScript),
            "sh" => Some(Language::Shell),
            _ => None,
        }
    }

    /// The language for a name: `python`/`py`, `javascript`/`js`/`node`,
    /// `shell`/`sh`/`bash`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "python" | "python3" | "py" => Some(Language::Python),
            "javascript" | "js" | "node" | "mjs" => Some(Language::JavaScript),
            "shell" | "sh" | "bash" => Some(Language::Shell),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Shell => "shell",
        }
    }

    /// The file extension used for code of this language in the guest.
    pub fn extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::JavaScript => "mjs",
            Language::Shell => "sh",
        }
    }

    /// The interpreter argv that runs a file of this language.
    pub fn interpreter(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["python3", "-u"],
            Language::JavaScript => &["qjs"],
            Language::Shell => &["sh"],
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a command ended, with its output.
///
/// A non-zero exit, a signal, a timeout or an OOM kill is recorded here, not
/// returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Standard output, raw bytes (empty when streamed to a callback).
    pub stdout: Vec<u8>,
    /// Standard error, raw bytes (empty when streamed to a callback).
    pub stderr: Vec<u8>,
    /// The exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// The command's timeout passed and its process tree was killed.
    pub timed_out: bool,
    /// The OOM killer killed something in the command's cgroup.
    pub oom_killed: bool,
    /// Output beyond the limit was dropped.
    pub truncated: bool,
    /// User CPU time of the command's whole process tree.
    pub cpu_user: Duration,
    /// System CPU time of the command's whole process tree.
    pub cpu_sys: Duration,
    /// Wall time in the guest, from exec to exit.
    pub wall: Duration,
    /// Wall time seen by the host, from request to result.
    pub host_wall: Duration,
    /// Every requested limit was enforced.
    pub limits_enforced: bool,
}

impl Output {
    /// Stdout as text (invalid UTF-8 replaced; borrowed when valid).
    pub fn stdout_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text (invalid UTF-8 replaced; borrowed when valid).
    pub fn stderr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// Exited with code 0 (and did not time out).
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// The status a shell would report: 124 after a timeout (as
    /// `timeout(1)`), 128 + signal for a signal, else the exit code.
    pub fn shell_status(&self) -> i32 {
        if self.timed_out {
            124
        } else if let Some(sig) = self.signal {
            128 + sig
        } else {
            self.exit_code.unwrap_or(1)
        }
    }

    /// Checks the agent's exit record and fills in the status fields.
    pub(crate) fn from_exit(exit: &ExitInfo, host_wall: Duration) -> Result<Output> {
        match (exit.code, exit.signal) {
            (Some(c), None) if (0..=255).contains(&c) => {}
            (None, Some(s)) if (1..=64).contains(&s) => {}
            (code, signal) => {
                return Err(SandboxError::BadReply(format!(
                    "exit record with code {code:?} and signal {signal:?}: \
                     want one exit code 0..=255 or one signal 1..=64"
                )))
            }
        }
        Ok(Output {
            exit_code: exit.code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            oom_killed: exit.oom_killed,
            truncated: exit.truncated,
            cpu_user: Duration::from_micros(exit.cpu_user_us),
            cpu_sys: Duration::from_micros(exit.cpu_sys_us),
            wall: Duration::from_micros(exit.wall_us),
            host_wall,
            limits_enforced: exit.limits_enforced,
            ..Output::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages() {
        assert_eq!(Language::from_extension("mjs"), Some(Language::JavaScript));
        assert_eq!(Language::from_extension("rb"), None);
        assert_eq!(Language::from_name("Python"), Some(Language::Python));
        assert_eq!(Language::from_name("bash"), Some(Language::Shell));
    }

    #[test]
    fn exit_records_are_checked() {
        let ok = ExitInfo {
            code: Some(3),
            ..Default::default()
        };
        let o = Output::from_exit(&ok, Duration::ZERO).unwrap();
        assert_eq!((o.exit_code, o.shell_status()), (Some(3), 3));
        let sig = ExitInfo {
            signal: Some(9),
            timed_out: true,
            ..Default::default()
        };
        let o = Output::from_exit(&sig, Duration::ZERO).unwrap();
        assert_eq!(o.shell_status(), 124);
        for (code, signal) in [
            (None, None),
            (Some(1), Some(9)),
            (Some(256), None),
            (None, Some(0)),
        ] {
            let bad = ExitInfo {
                code,
                signal,
                ..Default::default()
            };
            assert!(Output::from_exit(&bad, Duration::ZERO).is_err());
        }
    }

    #[test]
    fn cpu_limits() {
        let mut c = Command::new(["true"]);
        c.cpu_limit = Some(0.5);
        let l = c.limits().unwrap();
        assert_eq!(l.cpu.map(|q| q.quota_us), Some(50_000));
        c.cpu_limit = Some(f64::NAN);
        assert!(c.limits().is_err());
        c.cpu_limit = Some(-1.0);
        assert!(c.limits().is_err());
    }

    #[test]
    fn lossless_text() {
        let o = Output {
            stdout: vec![b'a', 0xff, b'b'],
            ..Default::default()
        };
        assert_eq!(o.stdout_str(), "a\u{fffd}b");
        assert_eq!(o.stdout, vec![b'a', 0xff, b'b']);
    }
}
