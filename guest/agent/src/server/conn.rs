//! One connection: the hello, then requests one at a time.
//!
//! The connection thread owns the read half and decodes requests. Answers go
//! through a [`Sink`], the write half behind a lock, because an exec's
//! output threads and its supervisor write too. An exec is started and left
//! running (see [`super::exec`]); while it runs, the connection thread
//! forwards stdin frames and signals to it, and when the host goes away the
//! exec's process tree is killed.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use embervm_protocol::{
    check_hello, decode, read_frame_into, write_frame, ErrorKind, ErrorReply, ProtocolError,
    Request, Response, Role,
};

use super::{exec, files, sync, Ctx, AGENT_VERSION};

/// The shared write half of a connection.
#[derive(Clone)]
pub struct Sink(Arc<Mutex<SinkInner>>);

struct SinkInner {
    w: Box<dyn Write + Send>,
    broken: bool,
}

impl Sink {
    /// Wrap a write half.
    pub fn new(w: Box<dyn Write + Send>) -> Sink {
        Sink(Arc::new(Mutex::new(SinkInner { w, broken: false })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut SinkInner) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn write<T: Serialize>(inner: &mut SinkInner, r: &T) -> bool {
        if inner.broken {
            return false;
        }
        if write_frame(&mut inner.w, r).is_err() {
            inner.broken = true;
        }
        !inner.broken
    }

    /// Send one message; false once the host is gone.
    pub fn send<T: Serialize>(&self, r: &T) -> bool {
        self.with(|i| Sink::write(i, r))
    }

    /// Send unless `finished` is set (checked under the write lock, so
    /// nothing of an exec follows its `Exit`).
    pub fn send_unless(&self, finished: &AtomicBool, r: &Response) -> bool {
        self.with(|i| !finished.load(Ordering::SeqCst) && Sink::write(i, r))
    }

    /// Set `finished` and send the last answer of an exec.
    pub fn send_last(&self, finished: &AtomicBool, r: &Response) -> bool {
        self.with(|i| {
            finished.store(true, Ordering::SeqCst);
            Sink::write(i, r)
        })
    }
}

/// Requests decoded from the read half.
pub struct Requests {
    r: Box<dyn Read + Send>,
    buf: Vec<u8>,
}

impl Requests {
    /// The next request; `Ok(None)` at a clean end of stream.
    pub fn next(&mut self) -> Result<Option<Request>, ProtocolError> {
        if !read_frame_into(&mut self.r, &mut self.buf)? {
            return Ok(None);
        }
        decode(&self.buf).map(Some)
    }
}

/// What a request handler tells the loop.
pub enum Flow {
    /// Go on with the next request.
    Continue,
    /// The connection is out of step or gone: close it.
    Close,
}

/// Serve one connection to its end. The host's hello must come within
/// `ctx.hello_timeout`; later requests may be as far apart as they like.
pub fn serve(
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    fd: std::os::fd::RawFd,
    ctx: Arc<Ctx>,
) {
    let sink = Sink::new(writer);
    let mut reqs = Requests {
        r: reader,
        buf: Vec::new(),
    };
    if !sink.send(&ctx.hello) {
        return;
    }
    if let Err(e) = super::listener::set_read_timeout(fd, Some(ctx.hello_timeout)) {
        eprintln!("embervm-agent: cannot bound the hello wait: {e}");
    }
    match read_frame_into(&mut reqs.r, &mut reqs.buf) {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            eprintln!("embervm-agent: closing a connection that sent no hello: {e}");
            return;
        }
    }
    if let Err(e) = super::listener::set_read_timeout(fd, None) {
        eprintln!("embervm-agent: cannot clear the hello timeout: {e}");
        return;
    }
    if let Err(e) = check_hello(&reqs.buf, AGENT_VERSION, Role::Host) {
        let kind = match e {
            ProtocolError::VersionMismatch { .. } => ErrorKind::VersionMismatch,
            _ => ErrorKind::BadRequest,
        };
        eprintln!("embervm-agent: refusing a connection: {e}");
        sink.send(&Response::Error(ErrorReply::new(kind, e.to_string())));
        return;
    }
    let mut running: Option<Arc<exec::ExecHandle>> = None;
    loop {
        let req = match reqs.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(ProtocolError::Io(_)) | Err(ProtocolError::Truncated { .. }) => break,
            Err(e) => {
                sink.send(&Response::Error(ErrorReply::new(
                    ErrorKind::BadRequest,
                    e.to_string(),
                )));
                break;
            }
        };
        if running.as_ref().is_some_and(|r| r.is_finished()) {
            running = None;
        }
        let flow = match (req, running.as_ref()) {
            (Request::StdinData(d), Some(r)) => {
                r.stdin_data(d);
                Flow::Continue
            }
            (Request::StdinEof, Some(r)) => {
                r.stdin_eof();
                Flow::Continue
            }
            (Request::Signal { signal }, Some(r)) => {
                r.signal(signal);
                Flow::Continue
            }
            // Stdin or a signal after the exec ended: stale, dropped.
            (Request::StdinData(_) | Request::StdinEof | Request::Signal { .. }, None) => {
                Flow::Continue
            }
            (_, Some(_)) => {
                sink.send(&Response::Error(ErrorReply::new(
                    ErrorKind::BadRequest,
                    "an exec is running on this connection; open another one",
                )));
                Flow::Continue
            }
            (req, None) => handle(req, &ctx, &sink, &mut reqs, &mut running),
        };
        if let Flow::Close = flow {
            break;
        }
    }
    if let Some(r) = running {
        r.abort();
    }
}

fn handle(
    req: Request,
    ctx: &Arc<Ctx>,
    sink: &Sink,
    reqs: &mut Requests,
    running: &mut Option<Arc<exec::ExecHandle>>,
) -> Flow {
    let answer = match req {
        Request::Ping { nonce } => Ok(Response::Pong { nonce }),
        Request::Sync {
            entropy,
            wall_clock,
        } => sync::apply(&entropy, wall_clock, ctx.sync_allowed),
        Request::Exec(e) => {
            match exec::start(e, ctx, sink) {
                Ok(h) => *running = Some(h),
                Err(e) => {
                    sink.send(&Response::Error(e));
                }
            }
            return Flow::Continue;
        }
        Request::WriteFile {
            path,
            mode,
            len,
            owner,
        } => match files::write(reqs, ctx, &path, mode, len, owner) {
            Ok(answer) => answer,
            Err(flow) => return flow,
        },
        Request::ReadFile { path, max_len } => {
            files::read(sink, &path, max_len);
            return Flow::Continue;
        }
        Request::FileData(_) | Request::FileEnd => Err(ErrorReply::new(
            ErrorKind::BadRequest,
            "file data outside a WriteFile",
        )),
        Request::StdinData(_) | Request::StdinEof | Request::Signal { .. } => {
            return Flow::Continue;
        }
    };
    let r = match answer {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    };
    if sink.send(&r) {
        Flow::Continue
    } else {
        Flow::Close
    }
}
