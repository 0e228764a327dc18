//! WriteFile and ReadFile against `embervm-agent --serve-unix`.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{bytes, Agent};
use embervm_protocol::{ClientError, ErrorKind};

#[test]
fn round_trips_0_1_and_5_mib() {
    let agent = Agent::start();
    let mut c = agent.client();
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("big", 5 << 20),
        ("odd", 65537),
    ] {
        let data = bytes(len, len as u64);
        let path = agent.dir.join(name);
        let p = path.to_string_lossy();
        assert_eq!(c.write_file(&p, 0o640, &data).expect("write"), len as u64);
        assert!(std::fs::read(&path).expect("on disk") == data);
        let back = c.read_file(&p, 8 << 20).expect("read");
        assert_eq!(back.len(), len);
        assert!(back == data, "{name} differs");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
    }
}

#[test]
fn creates_parents_and_overwrites() {
    let agent = Agent::start();
    let mut c = agent.client();
    let path = agent.dir.join("a/b/c.txt");
    let p = path.to_string_lossy();
    c.write_file(&p, 0o755, b"first version, longer")
        .expect("write");
    c.write_file(&p, 0o755, b"second").expect("overwrite");
    assert_eq!(c.read_file(&p, 100).expect("read"), b"second");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

fn kind(e: ClientError) -> ErrorKind {
    match e {
        ClientError::Agent(e) => e.kind,
        other => panic!("not an agent error: {other}"),
    }
}

#[test]
fn errors_are_typed_and_keep_the_connection() {
    let agent = Agent::start();
    let mut c = agent.client();
    let missing = agent.dir.join("missing");
    let e = c
        .read_file(&missing.to_string_lossy(), 10)
        .expect_err("missing");
    assert_eq!(kind(e), ErrorKind::NotFound);
    let e = c.read_file("relative/path", 10).expect_err("relative");
    assert_eq!(kind(e), ErrorKind::BadRequest);
    let dir = agent.dir.to_string_lossy().into_owned();
    let e = c.read_file(&dir, 10).expect_err("dir");
    assert_eq!(kind(e), ErrorKind::BadRequest);
    let e = c.write_file(&dir, 0o644, b"x").expect_err("dir");
    assert_eq!(kind(e), ErrorKind::BadRequest);
    // A write that fails still consumes its data: a 1 MiB write to a bad
    // path is answered once, and the connection goes on.
    let e = c
        .write_file(&dir, 0o644, &bytes(1 << 20, 3))
        .expect_err("dir");
    assert_eq!(kind(e), ErrorKind::BadRequest);
    let big = agent.dir.join("big");
    c.write_file(&big.to_string_lossy(), 0o644, &[7u8; 1000])
        .expect("write");
    let e = c
        .read_file(&big.to_string_lossy(), 999)
        .expect_err("too large");
    assert_eq!(kind(e), ErrorKind::TooLarge);
    // A short source: the agent reports the missing bytes.
    let mut short: &[u8] = b"abc";
    let e = c
        .write_file_from(&big.to_string_lossy(), 0o644, None, &mut short, 10)
        .expect_err("short");
    assert_eq!(kind(e), ErrorKind::BadRequest);
    c.ping().expect("still in step");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let e = c
            .write_file("/proc/version", 0o644, b"x")
            .expect_err("perm");
        assert_eq!(kind(e), ErrorKind::PermissionDenied);
    }
}

#[test]
fn reads_proc_files_that_report_size_zero() {
    let agent = Agent::start();
    let mut c = agent.client();
    let v = c.read_file("/proc/self/status", 1 << 20).expect("read");
    assert!(String::from_utf8_lossy(&v).contains("Name:"));
}
