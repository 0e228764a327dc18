//! A test server: `embervm-agent --serve-unix` as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use embervm_protocol::{AgentClient, ExecRequest, Output};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running agent and its scratch directory; both go away on drop.
pub struct Agent {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Agent {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("embervm-agent-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let socket = dir.join("agent.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_embervm-agent"))
            .arg("--serve-unix")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        // Readiness is the "serving on" line, printed after bind.
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("serving on") => break,
                Some(Ok(_)) => continue,
                _ => panic!("agent exited before serving"),
            }
        }
        // Keep draining stderr so the agent never blocks on it.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("[agent] {l}");
            }
        });
        Agent { child, dir, socket }
    }

    pub fn stream(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect")
    }

    pub fn client(&self) -> AgentClient<UnixStream> {
        AgentClient::connect(self.stream()).expect("hello")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn cmd(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ExecRequest::default()
    }
}

pub fn sh(script: &str) -> ExecRequest {
    cmd(&["sh", "-c", script])
}

pub fn run(c: &mut AgentClient<UnixStream>, req: &ExecRequest) -> Output {
    c.exec_collect(req).expect("exec")
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}
