//! The host side of a connection to the agent, over any `Read + Write`
//! stream (a vsock stream from `Vm::connect`, a Unix socket in tests).
//!
//! [`AgentClient::connect`] exchanges hellos and refuses an agent of another
//! protocol version. Every call then sends one request and reads its
//! answers on the calling thread, so the client needs no second thread and
//! no clone of the stream. Streamed stdin is paced by the agent's
//! [`Response::StdinCredit`]: the client sends a stdin chunk only when the
//! agent has room for it, and keeps reading output in between, so a child
//! that does not read its stdin can never deadlock the connection.
//!
//! Replies are checked before use: a file larger than the limit asked for,
//! or a message out of place, is an error, never a panic. After any error
//! other than [`ClientError::Agent`] the connection's state is unknown and
//! it should be dropped.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::defs::{CHUNK_SIZE, SOFTWARE_VERSION};
use crate::error::ProtocolError;
use crate::frame::{decode, read_frame_into, write_frame};
use crate::hello::check_hello;
use crate::messages::{
    ErrorReply, ExecRequest, ExitInfo, Hello, OutputStream, Request, Response, Role, Stdin,
    UserSpec, WallClock,
};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Framing, decoding, the hello or the stream failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The agent answered with an error.
    #[error("agent error: {0}")]
    Agent(ErrorReply),
    /// The agent sent a message that does not fit the exchange.
    #[error("unexpected message from the agent during {during}: {got}")]
    Unexpected {
        /// The exchange under way.
        during: &'static str,
        /// The message received (debug form, shortened).
        got: String,
    },
    /// The agent closed the connection.
    #[error("the agent closed the connection during {0}")]
    Closed(&'static str),
    /// A file read is larger than the limit asked for.
    #[error("file is larger than the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The request is not valid as given (checked before sending).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Reading the caller's stdin source failed.
    #[error("reading stdin for the command: {0}")]
    StdinSource(std::io::Error),
}

/// Result with a [`ClientError`].
pub type ClientResult<T> = std::result::Result<T, ClientError>;

/// What a [`Request::Sync`] did in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Entropy was added and the CRNG reseeded.
    pub entropy_added: bool,
    /// The guest clock was set.
    pub clock_set: bool,
}

/// The collected result of [`AgentClient::exec_collect`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// All stdout bytes received.
    pub stdout: Vec<u8>,
    /// All stderr bytes received.
    pub stderr: Vec<u8>,
    /// How the command ended.
    pub exit: ExitInfo,
}

/// A connection to the agent, after the hello.
pub struct AgentClient<S> {
    stream: S,
    agent: Hello,
    buf: Vec<u8>,
    nonce: u64,
}

impl<S: Read + Write> AgentClient<S> {
    /// Exchange hellos over `stream`; fails with
    /// [`ProtocolError::VersionMismatch`] for an agent of another version.
    pub fn connect(mut stream: S) -> ClientResult<AgentClient<S>> {
        write_frame(&mut stream, &Hello::host())?;
        let mut buf = Vec::new();
        if !read_frame_into(&mut stream, &mut buf)? {
            return Err(ClientError::Closed("the hello"));
        }
        let agent = check_hello(&buf, SOFTWARE_VERSION, Role::Agent)?;
        Ok(AgentClient {
            stream,
            agent,
            buf,
            nonce: 0,
        })
    }

    /// The agent's hello (version and capabilities).
    pub fn agent_hello(&self) -> &Hello {
        &self.agent
    }

    /// The stream, for the caller to close or reuse.
    pub fn into_inner(self) -> S {
        self.stream
    }

    fn send(&mut self, req: &Request) -> ClientResult<()> {
        write_frame(&mut self.stream, req)?;
        Ok(())
    }

    fn recv(&mut self, during: &'static str) -> ClientResult<Response> {
        if !read_frame_into(&mut self.stream, &mut self.buf)? {
            return Err(ClientError::Closed(during));
        }
        Ok(decode(&self.buf)?)
    }

    /// Send entropy and the wall-clock time (first, on a fresh connection
    /// to a restored sandbox).
    pub fn sync(&mut self, entropy: &[u8], now: SystemTime) -> ClientResult<SyncReport> {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let wall_clock = WallClock {
            secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: since.subsec_nanos(),
        };
        self.send(&Request::Sync {
            entropy: entropy.to_vec(),
            wall_clock,
        })?;
        match self.recv("sync")? {
            Response::Synced {
                entropy_added,
                clock_set,
            } => Ok(SyncReport {
                entropy_added,
                clock_set,
            }),
            other => Err(unexpected("sync", other)),
        }
    }

    /// Round trip a ping; returns the time it took.
    pub fn ping(&mut self) -> ClientResult<Duration> {
        self.nonce = self.nonce.wrapping_add(1);
        let nonce = self.nonce;
        let start = Instant::now();
        self.send(&Request::Ping { nonce })?;
        match self.recv("ping")? {
            Response::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
            other => Err(unexpected("ping", other)),
        }
    }

    /// Run a command, calling `on_output` for every stdout and stderr chunk
    /// as it arrives. With `Stdin::Stream`, `stdin` is read and streamed
    /// as the agent grants credit (it must be `Some`).
    pub fn exec<F>(
        &mut self,
        req: &ExecRequest,
        mut stdin: Option<&mut dyn Read>,
        mut on_output: F,
    ) -> ClientResult<ExitInfo>
    where
        F: FnMut(OutputStream, &[u8]),
    {
        let streaming = req.stdin == Stdin::Stream;
        if streaming && stdin.is_none() {
            return Err(ClientError::Invalid(
                "Stdin::Stream needs a stdin source".into(),
            ));
        }
        if req.argv.is_empty() {
            return Err(ClientError::Invalid("argv is empty".into()));
        }
        self.send(&Request::Exec(req.clone()))?;
        let mut credit: u32 = 0;
        let mut eof_sent = !streaming;
        let mut chunk = vec![0u8; CHUNK_SIZE];
        loop {
            match self.recv("exec")? {
                Response::Started { .. } => {}
                Response::Output { stream, data } => on_output(stream, &data),
                Response::StdinCredit { chunks } => {
                    credit = credit.saturating_add(chunks);
                    while credit > 0 && !eof_sent {
                        let Some(src) = stdin.as_mut() else { break };
                        let n = read_some(&mut **src, &mut chunk)?;
                        if n == 0 {
                            self.send(&Request::StdinEof)?;
                            eof_sent = true;
                        } else {
                            self.send(&Request::StdinData(chunk[..n].to_vec()))?;
                            credit -= 1;
                        }
                    }
                }
                Response::Exit(exit) => return Ok(exit),
                Response::Error(e) => return Err(ClientError::Agent(e)),
                other => return Err(unexpected("exec", other)),
            }
        }
    }

    /// Run a command and collect its output in memory.
    pub fn exec_collect(&mut self, req: &ExecRequest) -> ClientResult<Output> {
        let mut out = Output::default();
        let exit = self.exec(req, None, |stream, data| match stream {
            OutputStream::Stdout => out.stdout.extend_from_slice(data),
            OutputStream::Stderr => out.stderr.extend_from_slice(data),
        })?;
        out.exit = exit;
        Ok(out)
    }

    /// Write `data` to `path` in the guest with permission bits `mode`.
    pub fn write_file(&mut self, path: &str, mode: u32, data: &[u8]) -> ClientResult<u64> {
        let mut src = data;
        self.write_file_from(path, mode, None, &mut src, data.len() as u64)
    }

    /// Write `len` bytes read from `src` to `path`, owned by `owner` (the
    /// agent's default user when `None`).
    pub fn write_file_from(
        &mut self,
        path: &str,
        mode: u32,
        owner: Option<UserSpec>,
        src: &mut dyn Read,
        len: u64,
    ) -> ClientResult<u64> {
        self.send(&Request::WriteFile {
            path: path.to_owned(),
            mode,
            len,
            owner,
        })?;
        let mut chunk = vec![0u8; CHUNK_SIZE];
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK_SIZE).min(CHUNK_SIZE);
            let n = read_some(src, &mut chunk[..want])?;
            if n == 0 {
                // Short source: end the file so the agent stays in step; it
                // answers with a length error.
                break;
            }
            self.send(&Request::FileData(chunk[..n].to_vec()))?;
            left -= n as u64;
        }
        self.send(&Request::FileEnd)?;
        match self.recv("write_file")? {
            Response::FileWritten { len } => Ok(len),
            Response::Error(e) => Err(ClientError::Agent(e)),
            other => Err(unexpected("write_file", other)),
        }
    }

    /// Read the file at `path`, refusing one longer than `max_len` bytes.
    pub fn read_file(&mut self, path: &str, max_len: u64) -> ClientResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_file_to(path, max_len, &mut out)?;
        Ok(out)
    }

    /// Stream the file at `path` into `sink`; returns its length.
    pub fn read_file_to(
        &mut self,
        path: &str,
        max_len: u64,
        sink: &mut dyn Write,
    ) -> ClientResult<u64> {
        self.send(&Request::ReadFile {
            path: path.to_owned(),
            max_len,
        })?;
        let mut total: u64 = 0;
        loop {
            match self.recv("read_file")? {
                Response::FileData(data) => {
                    total = total.saturating_add(data.len() as u64);
                    if total > max_len {
                        return Err(ClientError::TooLarge { max: max_len });
                    }
                    sink.write_all(&data).map_err(ProtocolError::Io)?;
                }
                Response::FileEnd { len } if len == total => return Ok(total),
                Response::Error(e) => return Err(ClientError::Agent(e)),
                other => return Err(unexpected("read_file", other)),
            }
        }
    }
}

/// One `read` that retries on EINTR.
fn read_some(src: &mut dyn Read, buf: &mut [u8]) -> ClientResult<usize> {
    loop {
        match src.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ClientError::StdinSource(e)),
        }
    }
}

fn unexpected(during: &'static str, got: Response) -> ClientError {
    let mut text = format!("{got:?}");
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    ClientError::Unexpected { during, got: text }
}
