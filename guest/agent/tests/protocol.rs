//! The hello and hostile frames against `embervm-agent --serve-unix`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::Agent;
use embervm_protocol::{
    check_hello, decode, encode_frame, read_frame_into, write_frame, Capabilities, ErrorKind,
    Hello, Request, Response, Role, PROTOCOL_VERSION, SOFTWARE_VERSION,
};

fn read_response(s: &mut UnixStream) -> Option<Response> {
    let mut buf = Vec::new();
    match read_frame_into(s, &mut buf) {
        Ok(true) => Some(decode(&buf).expect("agent frames decode")),
        _ => None,
    }
}

fn raw_hello(s: &mut UnixStream) -> Hello {
    let mut buf = Vec::new();
    assert!(read_frame_into(s, &mut buf).expect("hello"));
    check_hello(&buf, SOFTWARE_VERSION, Role::Agent).expect("agent hello")
}

#[test]
fn agent_hello_names_its_version() {
    let agent = Agent::start();
    let c = agent.client();
    let h = c.agent_hello();
    assert_eq!(h.protocol, PROTOCOL_VERSION);
    assert_eq!(h.software, env!("CARGO_PKG_VERSION"));
    assert_eq!(h.role, Role::Agent);
}

#[test]
fn refuses_a_host_of_another_version() {
    let agent = Agent::start();
    let mut s = agent.stream();
    let mut h = Hello::host();
    h.protocol = PROTOCOL_VERSION + 1;
    h.software = "9.9.9".into();
    write_frame(&mut s, &h).expect("send");
    raw_hello(&mut s);
    match read_response(&mut s) {
        Some(Response::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::VersionMismatch);
            assert!(
                e.message.contains(&format!("version {PROTOCOL_VERSION}")),
                "{}",
                e.message
            );
            assert!(e
                .message
                .contains(&format!("version {}", PROTOCOL_VERSION + 1)));
            assert!(e.message.contains("9.9.9"), "{}", e.message);
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(read_response(&mut s).is_none(), "connection closed");
    // The agent serves the next connection.
    agent.client().ping().expect("ping");
}

#[test]
fn refuses_a_non_hello() {
    let agent = Agent::start();
    let mut s = agent.stream();
    write_frame(&mut s, &Request::Ping { nonce: 1 }).expect("send");
    raw_hello(&mut s);
    assert!(
        matches!(read_response(&mut s), Some(Response::Error(e)) if e.kind == ErrorKind::BadRequest)
    );
    let mut s = agent.stream();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    raw_hello(&mut s);
    assert!(matches!(
        read_response(&mut s),
        Some(Response::Error(_)) | None
    ));
    agent.client().ping().expect("ping");
}

fn hello_then(agent: &Agent, bytes: &[u8]) -> (UnixStream, Option<Response>) {
    let mut s = agent.stream();
    write_frame(&mut s, &Hello::host()).expect("hello");
    raw_hello(&mut s);
    s.write_all(bytes).expect("send");
    let r = read_response(&mut s);
    (s, r)
}

#[test]
fn malformed_frames_are_rejected_without_harm() {
    let agent = Agent::start();
    // Garbage payload.
    let (_, r) = hello_then(&agent, &[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(r, Some(Response::Error(e)) if e.kind == ErrorKind::BadRequest));
    // A length far above the limit: refused, nothing allocated.
    let (_, r) = hello_then(&agent, &u32::MAX.to_le_bytes());
    match r {
        Some(Response::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("exceeds the limit"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // A valid message with trailing bytes.
    let mut f = encode_frame(&Request::Ping { nonce: 3 }).expect("encode");
    f.push(0);
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_le_bytes());
    let (_, r) = hello_then(&agent, &f);
    assert!(matches!(r, Some(Response::Error(e)) if e.kind == ErrorKind::BadRequest));
    // A frame cut short, then the host leaves.
    let (s, _) = {
        let mut s = agent.stream();
        write_frame(&mut s, &Hello::host()).expect("hello");
        raw_hello(&mut s);
        s.write_all(&[100, 0, 0, 0, 1, 2, 3]).expect("send");
        (s, ())
    };
    drop(s);
    // File data out of place, an empty argv, stale stdin: error or ignored.
    let mut c = agent.stream();
    write_frame(&mut c, &Hello::host()).expect("hello");
    raw_hello(&mut c);
    write_frame(&mut c, &Request::FileEnd).expect("send");
    assert!(
        matches!(read_response(&mut c), Some(Response::Error(e)) if e.kind == ErrorKind::BadRequest)
    );
    write_frame(&mut c, &Request::StdinEof).expect("send");
    write_frame(&mut c, &Request::Signal { signal: 9 }).expect("send");
    write_frame(&mut c, &Request::Exec(Default::default())).expect("send");
    assert!(
        matches!(read_response(&mut c), Some(Response::Error(e)) if e.kind == ErrorKind::BadRequest)
    );
    write_frame(&mut c, &Request::Ping { nonce: 77 }).expect("send");
    assert_eq!(read_response(&mut c), Some(Response::Pong { nonce: 77 }));
    // Random junk on many connections: the agent never goes down.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..50 {
        let mut s = agent.stream();
        write_frame(&mut s, &Hello::host()).expect("hello");
        raw_hello(&mut s);
        let len = 1 + (i * 7) % 64;
        let mut junk = Vec::with_capacity(len + 4);
        junk.extend_from_slice(&(len as u32).to_le_bytes());
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push(x as u8);
        }
        s.write_all(&junk).expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    agent.client().ping().expect("agent alive");
}

#[test]
fn a_host_hello_with_capabilities_is_fine() {
    let agent = Agent::start();
    let mut s = agent.stream();
    let h = Hello::new(Role::Host, "host-x", Capabilities::default());
    write_frame(&mut s, &h).expect("hello");
    raw_hello(&mut s);
    write_frame(&mut s, &Request::Ping { nonce: 5 }).expect("send");
    assert_eq!(read_response(&mut s), Some(Response::Pong { nonce: 5 }));
}

fn connected(agent: &Agent) -> UnixStream {
    let mut s = agent.stream();
    write_frame(&mut s, &Hello::host()).expect("hello");
    raw_hello(&mut s);
    s
}

fn exec_req(script: &str) -> Request {
    Request::Exec(embervm_protocol::ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    })
}

#[test]
fn one_exec_at_a_time_per_connection_and_signals() {
    let agent = Agent::start();
    let mut s = connected(&agent);
    write_frame(&mut s, &exec_req("sleep 0.3")).expect("send");
    assert!(matches!(
        read_response(&mut s),
        Some(Response::Started { .. })
    ));
    write_frame(&mut s, &Request::Ping { nonce: 1 }).expect("send");
    match read_response(&mut s) {
        Some(Response::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("open another"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(read_response(&mut s), Some(Response::Exit(e)) if e.code == Some(0)));
    // Signal reaches the process group.
    write_frame(&mut s, &exec_req("sleep 30")).expect("send");
    assert!(matches!(
        read_response(&mut s),
        Some(Response::Started { .. })
    ));
    write_frame(
        &mut s,
        &Request::Signal {
            signal: libc::SIGTERM,
        },
    )
    .expect("send");
    match read_response(&mut s) {
        Some(Response::Exit(e)) => assert_eq!(e.signal, Some(libc::SIGTERM)),
        other => panic!("{other:?}"),
    }
    // Stale stdin after Exit is ignored; the connection goes on.
    write_frame(&mut s, &Request::StdinEof).expect("send");
    write_frame(&mut s, &Request::Ping { nonce: 2 }).expect("send");
    assert_eq!(read_response(&mut s), Some(Response::Pong { nonce: 2 }));
}

#[test]
fn host_leaving_kills_the_exec() {
    let agent = Agent::start();
    let mut s = connected(&agent);
    write_frame(&mut s, &exec_req("echo $$; exec sleep 30")).expect("send");
    assert!(matches!(
        read_response(&mut s),
        Some(Response::Started { .. })
    ));
    let pid: i32 = match read_response(&mut s) {
        Some(Response::Output { data, .. }) => {
            String::from_utf8_lossy(&data).trim().parse().expect("pid")
        }
        other => panic!("{other:?}"),
    };
    drop(s);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    while !gone() && std::time::Instant::now() < until {
        std::thread::yield_now();
    }
    assert!(gone(), "exec {pid} outlived its connection");
}

#[test]
fn connection_limit_answers_busy() {
    let agent = Agent::start();
    let held: Vec<UnixStream> = (0..64).map(|_| connected(&agent)).collect();
    // The agent may close a refused connection before our hello is written.
    let mut s = agent.stream();
    let _ = write_frame(&mut s, &Hello::host());
    raw_hello(&mut s);
    assert!(matches!(read_response(&mut s), Some(Response::Error(e)) if e.kind == ErrorKind::Busy));
    drop(held);
    // Slots free up as connections end.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut s = agent.stream();
        let _ = write_frame(&mut s, &Hello::host());
        raw_hello(&mut s);
        let _ = write_frame(&mut s, &Request::Ping { nonce: 3 });
        match read_response(&mut s) {
            Some(Response::Pong { nonce: 3 }) => break,
            _ if std::time::Instant::now() < until => std::thread::yield_now(),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_connection_without_a_hello_is_closed() {
    let agent = Agent::start_with(&["--hello-timeout-ms", "300"]);
    let mut s = agent.stream();
    raw_hello(&mut s);
    let t = std::time::Instant::now();
    // Send nothing: the agent gives up on this connection ...
    assert!(read_response(&mut s).is_none(), "connection closed");
    let waited = t.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(250),
        "{waited:?}"
    );
    // ... and one that does say hello may then idle as long as it likes.
    let mut c = agent.client();
    std::thread::sleep(std::time::Duration::from_millis(600));
    c.ping().expect("ping after idling past the hello timeout");
}
