//! WriteFile and ReadFile.
//!
//! A write consumes every `FileData` frame up to `FileEnd` even when the
//! file cannot be written, so the connection stays in step, and answers
//! once at the end. Missing parent directories are created; the file and
//! the directories created are given to the owner (the default user when
//! the request names none and the agent can switch users). A read checks
//! the size first and streams `CHUNK_SIZE` chunks; a file that grows past
//! `max_len` while being read ends in a `TooLarge` error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use embervm_protocol::{ErrorKind, ErrorReply, Request, Response, UserSpec, CHUNK_SIZE};

use super::conn::{Flow, Requests, Sink};
use super::Ctx;

/// An error reply for an I/O error on `what`.
pub fn io_error(what: &str, e: &io::Error) -> ErrorReply {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ if e.raw_os_error() == Some(libc::EISDIR) => ErrorKind::BadRequest,
        _ => ErrorKind::Io,
    };
    ErrorReply::new(kind, format!("{what}: {e}"))
}

fn check_path(path: &str) -> Result<&Path, ErrorReply> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ErrorReply::new(
            ErrorKind::BadRequest,
            format!("path {path:?} must be absolute and free of NUL"),
        ));
    }
    Ok(Path::new(path))
}

fn chown(path: &Path, owner: Option<UserSpec>) -> io::Result<()> {
    match owner {
        Some(o) => std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid)),
        None => Ok(()),
    }
}

/// Create the missing ancestors of `path`, owned by `owner`.
fn create_parents(path: &Path, owner: Option<UserSpec>) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let missing: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|p| !p.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(parent)?;
    for dir in missing.iter().rev() {
        chown(dir, owner)?;
    }
    Ok(())
}

fn open_for_write(path: &Path, mode: u32, owner: Option<UserSpec>) -> io::Result<File> {
    create_parents(path, owner)?;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .open(path)?;
    // The umask may have cleared bits of `mode`; set them exactly.
    f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    if let Some(o) = owner {
        std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid))?;
    }
    Ok(f)
}

/// Handle a `WriteFile` whose data follows on `reqs`. `Err` closes the
/// connection (it ended, or sent something else before `FileEnd`).
pub fn write(
    reqs: &mut Requests,
    ctx: &Arc<Ctx>,
    path: &str,
    mode: u32,
    len: u64,
    owner: Option<UserSpec>,
) -> Result<Result<Response, ErrorReply>, Flow> {
    let owner = owner.or(ctx.users.can_switch.then_some(ctx.users.default));
    let mut file = check_path(path).and_then(|p| {
        open_for_write(p, mode, owner).map_err(|e| io_error(&format!("open {path}"), &e))
    });
    let mut got: u64 = 0;
    loop {
        match reqs.next() {
            Ok(Some(Request::FileData(d))) => {
                got = got.saturating_add(d.len() as u64);
                if got > len {
                    file = Err(ErrorReply::new(
                        ErrorKind::BadRequest,
                        format!("more than the announced {len} bytes for {path}"),
                    ));
                }
                if let Ok(f) = file.as_mut() {
                    if let Err(e) = f.write_all(&d) {
                        file = Err(io_error(&format!("write {path}"), &e));
                    }
                }
            }
            Ok(Some(Request::FileEnd)) => break,
            _ => return Err(Flow::Close),
        }
    }
    let f = match file {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    if got != len {
        return Ok(Err(ErrorReply::new(
            ErrorKind::BadRequest,
            format!("{path}: got {got} of the announced {len} bytes"),
        )));
    }
    if let Err(e) = f.sync_data() {
        return Ok(Err(io_error(&format!("sync {path}"), &e)));
    }
    Ok(Ok(Response::FileWritten { len }))
}

/// Handle a `ReadFile`: send its chunks and `FileEnd`, or an error.
pub fn read(sink: &Sink, path: &str, max_len: u64) {
    if let Err(e) = read_inner(sink, path, max_len) {
        sink.send(&Response::Error(e));
    }
}

fn read_inner(sink: &Sink, path: &str, max_len: u64) -> Result<(), ErrorReply> {
    let p = check_path(path)?;
    let mut f = File::open(p).map_err(|e| io_error(&format!("open {path}"), &e))?;
    let meta = f
        .metadata()
        .map_err(|e| io_error(&format!("stat {path}"), &e))?;
    if meta.is_dir() {
        return Err(ErrorReply::new(
            ErrorKind::BadRequest,
            format!("{path} is a directory"),
        ));
    }
    let too_large = || {
        ErrorReply::new(
            ErrorKind::TooLarge,
            format!("{path} is larger than the limit of {max_len} bytes"),
        )
    };
    if meta.len() > max_len {
        return Err(too_large());
    }
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut total: u64 = 0;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(&format!("read {path}"), &e)),
        };
        total += n as u64;
        if total > max_len {
            return Err(too_large());
        }
        if !sink.send(&Response::FileData(buf[..n].to_vec())) {
            return Ok(());
        }
    }
    sink.send(&Response::FileEnd { len: total });
    Ok(())
}
