//! Run a child process with a deadline and watch its output for a line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a watched run produced.
#[derive(Debug)]
pub struct Watched {
    /// Every output line seen, in order (stdout and stderr interleaved).
    pub lines: Vec<String>,
    /// The first line containing the marker, if any.
    pub marker_line: Option<String>,
    /// Time from spawn to the marker line.
    pub time_to_marker: Option<Duration>,
    /// The child's exit code (None if killed at the deadline or by a signal).
    pub exit_code: Option<i32>,
    /// True when the deadline passed and the child was killed.
    pub timed_out: bool,
}

impl Watched {
    /// All output as one string, for assertion messages.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Spawn `cmd`, collect its output, note when a line containing `marker`
/// appears, and kill it if it has not exited by `deadline`.
pub fn run_watching(mut cmd: Command, marker: &str, deadline: Duration) -> Watched {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let mut readers = Vec::new();
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    for stream in [
        Box::new(out) as Box<dyn std::io::Read + Send>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send((Instant::now(), text)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut w = Watched {
        lines: Vec::new(),
        marker_line: None,
        time_to_marker: None,
        exit_code: None,
        timed_out: false,
    };
    let end = start + deadline;
    loop {
        let now = Instant::now();
        if now >= end {
            w.timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(end - now) {
            Ok((at, line)) => {
                if w.marker_line.is_none() && line.contains(marker) {
                    w.marker_line = Some(line.clone());
                    w.time_to_marker = Some(at - start);
                }
                w.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let status = child.wait().expect("wait for child");
    for r in readers {
        let _ = r.join();
    }
    while let Ok((_, line)) = rx.try_recv() {
        w.lines.push(line);
    }
    w.exit_code = status.code();
    w
}
