//! AgentClient against a scripted fake agent on a socket pair: the client
//! side of the exchanges, including an agent that misbehaves.

use std::io::{Cursor, Read};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use embervm_protocol::*;

/// Run `script` as the agent on one end of a socket pair; the client gets
/// the other end.
fn fake_agent(
    hello: Hello,
    script: impl FnOnce(&mut UnixStream) + Send + 'static,
) -> (UnixStream, JoinHandle<()>) {
    let (host, mut agent) = UnixStream::pair().expect("pair");
    let t = std::thread::spawn(move || {
        let _: Option<Hello> = read_frame(&mut agent).expect("host hello");
        write_frame(&mut agent, &hello).expect("hello");
        script(&mut agent);
    });
    (host, t)
}

fn agent_hello() -> Hello {
    Hello::new(Role::Agent, "0.1.0", Capabilities::default())
}

fn next(s: &mut UnixStream) -> Request {
    read_frame(s).expect("read").expect("frame")
}

#[test]
fn refuses_an_agent_of_another_version() {
    let mut h = agent_hello();
    h.protocol = PROTOCOL_VERSION + 1;
    h.software = "2.0.0".into();
    let (s, t) = fake_agent(h, |_| {});
    let err = AgentClient::connect(s).err().expect("mismatch");
    let text = err.to_string();
    assert!(
        text.contains("2.0.0") && text.contains(SOFTWARE_VERSION),
        "{text}"
    );
    assert!(matches!(
        err,
        ClientError::Protocol(ProtocolError::VersionMismatch { .. })
    ));
    t.join().expect("agent");
}

#[test]
fn exec_streams_stdin_by_credit_and_calls_back() {
    let (s, t) = fake_agent(agent_hello(), |a| {
        let Request::Exec(req) = next(a) else {
            panic!("exec")
        };
        assert_eq!(req.stdin, Stdin::Stream);
        write_frame(a, &Response::Started { pid: 9 }).expect("w");
        write_frame(a, &Response::StdinCredit { chunks: 2 }).expect("w");
        let mut got = Vec::new();
        // Exactly two chunks may arrive before more credit.
        for _ in 0..2 {
            match next(a) {
                Request::StdinData(d) => got.extend(d),
                other => panic!("{other:?}"),
            }
        }
        write_frame(
            a,
            &Response::Output {
                stream: OutputStream::Stdout,
                data: b"out".to_vec(),
            },
        )
        .expect("w");
        write_frame(a, &Response::StdinCredit { chunks: 10 }).expect("w");
        loop {
            match next(a) {
                Request::StdinData(d) => got.extend(d),
                Request::StdinEof => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got.len(), CHUNK_SIZE * 3 + 5);
        write_frame(
            a,
            &Response::Output {
                stream: OutputStream::Stderr,
                data: b"err".to_vec(),
            },
        )
        .expect("w");
        write_frame(
            a,
            &Response::Exit(ExitInfo {
                code: Some(0),
                ..ExitInfo::default()
            }),
        )
        .expect("w");
    });
    let mut c = AgentClient::connect(s).expect("hello");
    let req = ExecRequest {
        argv: vec!["cat".into()],
        stdin: Stdin::Stream,
        ..ExecRequest::default()
    };
    let mut src = Cursor::new(vec![1u8; CHUNK_SIZE * 3 + 5]);
    let mut seen = Vec::new();
    let exit = c
        .exec(&req, Some(&mut src as &mut dyn Read), |s, d| {
            seen.push((s, d.to_vec()))
        })
        .expect("exec");
    assert_eq!(exit.code, Some(0));
    assert_eq!(
        seen,
        vec![
            (OutputStream::Stdout, b"out".to_vec()),
            (OutputStream::Stderr, b"err".to_vec())
        ]
    );
    t.join().expect("agent");
}

#[test]
fn checks_requests_before_sending() {
    let (s, t) = fake_agent(agent_hello(), |_| {});
    let mut c = AgentClient::connect(s).expect("hello");
    let stream_without_source = ExecRequest {
        argv: vec!["cat".into()],
        stdin: Stdin::Stream,
        ..ExecRequest::default()
    };
    assert!(matches!(
        c.exec(&stream_without_source, None, |_, _| {}),
        Err(ClientError::Invalid(_))
    ));
    assert!(matches!(
        c.exec_collect(&ExecRequest::default()),
        Err(ClientError::Invalid(_))
    ));
    t.join().expect("agent");
}

#[test]
fn a_lying_agent_is_caught() {
    let (s, t) = fake_agent(agent_hello(), |a| {
        // read_file: more than max_len.
        assert!(matches!(next(a), Request::ReadFile { max_len: 4, .. }));
        write_frame(a, &Response::FileData(vec![0; 5])).expect("w");
    });
    let mut c = AgentClient::connect(s).expect("hello");
    assert!(matches!(
        c.read_file("/x", 4),
        Err(ClientError::TooLarge { max: 4 })
    ));
    t.join().expect("agent");

    let (s, t) = fake_agent(agent_hello(), |a| {
        assert!(matches!(next(a), Request::Ping { .. }));
        write_frame(a, &Response::Started { pid: 1 }).expect("w");
        assert!(matches!(next(a), Request::Ping { .. }));
        // Close mid-exchange.
    });
    let mut c = AgentClient::connect(s).expect("hello");
    assert!(matches!(
        c.ping(),
        Err(ClientError::Unexpected { during: "ping", .. })
    ));
    assert!(matches!(c.ping(), Err(ClientError::Closed("ping"))));
    t.join().expect("agent");
}

#[test]
fn write_file_chunks_and_reports_agent_errors() {
    let (s, t) = fake_agent(agent_hello(), |a| {
        let Request::WriteFile { len, mode, .. } = next(a) else {
            panic!("write")
        };
        assert_eq!(mode, 0o600);
        let mut got = 0;
        loop {
            match next(a) {
                Request::FileData(d) => {
                    assert!(d.len() <= CHUNK_SIZE);
                    got += d.len() as u64;
                }
                Request::FileEnd => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, len);
        write_frame(a, &Response::FileWritten { len }).expect("w");
        assert!(matches!(next(a), Request::WriteFile { .. }));
        assert!(matches!(next(a), Request::FileEnd));
        write_frame(
            a,
            &Response::Error(ErrorReply::new(ErrorKind::PermissionDenied, "ro")),
        )
        .expect("w");
    });
    let mut c = AgentClient::connect(s).expect("hello");
    let data = vec![3u8; 5 << 20];
    assert_eq!(c.write_file("/f", 0o600, &data).expect("write"), 5 << 20);
    match c.write_file("/g", 0o600, &[]) {
        Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::PermissionDenied),
        other => panic!("{other:?}"),
    }
    t.join().expect("agent");
}
