//! Where the guest's serial output goes.
//!
//! The UART hands every transmitted byte to a [`ConsoleOut`]. It watches the
//! stream for a kernel panic (always: a byte compare, so a panicking guest is
//! reported even when the console is off), and, unless the console is
//! [`ConsoleSink::Off`], collects a line and hands whole lines (or 1 KiB
//! chunks) to the sink: a callback, a shared buffer, a file or stdout, and
//! optionally echoes them to stdout as well. With the sink off and no echo,
//! bytes are dropped on the spot: no buffering, no syscalls.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// A buffer the caller keeps a clone of to read the console afterwards.
pub type ConsoleBuffer = Arc<Mutex<Vec<u8>>>;

/// A console callback: receives lines (with their `\n`) or chunks.
pub type ConsoleCallback = Box<dyn FnMut(&[u8]) + Send>;

/// The destination of the guest console.
#[derive(Default)]
pub enum ConsoleSink {
    /// Discard output (the fast path).
    #[default]
    Off,
    /// Write to the host's stdout.
    Stdout,
    /// Append to a shared buffer.
    Buffer(ConsoleBuffer),
    /// Write to a file.
    File(File),
    /// Call a function.
    Callback(ConsoleCallback),
}

impl std::fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConsoleSink::Off => "Off",
            ConsoleSink::Stdout => "Stdout",
            ConsoleSink::Buffer(_) => "Buffer",
            ConsoleSink::File(_) => "File",
            ConsoleSink::Callback(_) => "Callback",
        })
    }
}

/// The guest console configuration.
#[derive(Debug, Default)]
pub struct ConsoleConfig {
    /// Where output goes.
    pub sink: ConsoleSink,
    /// Also copy output to the host's stdout.
    pub echo: bool,
}

impl ConsoleConfig {
    /// Console off.
    pub fn off() -> Self {
        Self::default()
    }
    /// Console to stdout.
    pub fn stdout() -> Self {
        Self {
            sink: ConsoleSink::Stdout,
            echo: false,
        }
    }
    /// Console to a fresh shared buffer; returns the config and the buffer.
    pub fn buffer() -> (Self, ConsoleBuffer) {
        let b = ConsoleBuffer::default();
        (
            Self {
                sink: ConsoleSink::Buffer(b.clone()),
                echo: false,
            },
            b,
        )
    }
    /// Console to a callback.
    pub fn callback(f: impl FnMut(&[u8]) + Send + 'static) -> Self {
        Self {
            sink: ConsoleSink::Callback(Box::new(f)),
            echo: false,
        }
    }
}

/// The text the kernel prints when it panics.
pub const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";
const PANIC_MESSAGE_MAX: usize = 256;
const LINE_MAX: usize = 1024;

/// Shared record of a guest kernel panic seen on the console.
pub type PanicRecord = Arc<OnceLock<String>>;

/// The console end of the UART.
pub struct ConsoleOut {
    config: ConsoleConfig,
    line: Vec<u8>,
    matched: usize,
    capture: Option<Vec<u8>>,
    panic: PanicRecord,
}

impl ConsoleOut {
    /// A console writing to `config`, recording panics in `panic`.
    pub fn new(config: ConsoleConfig, panic: PanicRecord) -> Self {
        Self {
            config,
            line: Vec::new(),
            matched: 0,
            capture: None,
            panic,
        }
    }

    fn off(&self) -> bool {
        matches!(self.config.sink, ConsoleSink::Off) && !self.config.echo
    }

    /// One byte from the guest.
    pub fn put(&mut self, byte: u8) {
        self.watch(byte);
        if self.off() {
            return;
        }
        self.line.push(byte);
        if byte == b'\n' || self.line.len() >= LINE_MAX {
            self.flush();
        }
    }

    fn watch(&mut self, byte: u8) {
        if let Some(cap) = &mut self.capture {
            if byte == b'\n' || cap.len() >= PANIC_MESSAGE_MAX {
                let msg = String::from_utf8_lossy(cap).trim().to_string();
                let _ = self.panic.set(msg);
                self.capture = None;
            } else {
                cap.push(byte);
            }
            return;
        }
        if byte == PANIC_MARKER[self.matched] {
            self.matched += 1;
            if self.matched == PANIC_MARKER.len() {
                self.matched = 0;
                if self.panic.get().is_none() {
                    self.capture = Some(PANIC_MARKER.to_vec());
                }
            }
        } else {
            self.matched = usize::from(byte == PANIC_MARKER[0]);
        }
    }

    /// Hand the collected bytes to the sink.
    pub fn flush(&mut self) {
        if let Some(cap) = self.capture.take() {
            // A panic line the guest never finished: keep what we have.
            let _ = self
                .panic
                .set(String::from_utf8_lossy(&cap).trim().to_string());
        }
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        // Console output is best effort: a full disk or a closed pipe must
        // not stop the guest.
        match &mut self.config.sink {
            ConsoleSink::Off => {}
            ConsoleSink::Stdout => {
                let _ = std::io::stdout().lock().write_all(&line);
                let _ = std::io::stdout().flush();
            }
            ConsoleSink::Buffer(b) => {
                if let Ok(mut b) = b.lock() {
                    b.extend_from_slice(&line);
                }
            }
            ConsoleSink::File(f) => {
                let _ = f.write_all(&line);
            }
            ConsoleSink::Callback(cb) => cb(&line),
        }
        if self.config.echo {
            let _ = std::io::stdout().lock().write_all(&line);
            let _ = std::io::stdout().flush();
        }
        self.line = line;
        self.line.clear();
    }
}

impl Drop for ConsoleOut {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_buffer() {
        let (cfg, buf) = ConsoleConfig::buffer();
        let mut c = ConsoleOut::new(cfg, PanicRecord::default());
        for b in b"hello\nwor" {
            c.put(*b);
        }
        assert_eq!(&*buf.lock().unwrap(), b"hello\n");
        drop(c);
        assert_eq!(&*buf.lock().unwrap(), b"hello\nwor");
    }

    #[test]
    fn callback_gets_lines() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        let cfg = ConsoleConfig::callback(move |l| {
            s.lock().unwrap().push(String::from_utf8_lossy(l).into())
        });
        let mut c = ConsoleOut::new(cfg, PanicRecord::default());
        for b in b"a\nb\n" {
            c.put(*b);
        }
        assert_eq!(*seen.lock().unwrap(), vec!["a\n", "b\n"]);
    }

    #[test]
    fn panic_is_seen_even_when_off() {
        let rec = PanicRecord::default();
        let mut c = ConsoleOut::new(ConsoleConfig::off(), rec.clone());
        for b in b"[ 1.0] KKernel panic - not syncing: Attempted to kill init!\nmore\n" {
            c.put(*b);
        }
        assert_eq!(
            rec.get().map(String::as_str),
            Some("Kernel panic - not syncing: Attempted to kill init!")
        );
        assert!(c.line.is_empty());
    }
}
