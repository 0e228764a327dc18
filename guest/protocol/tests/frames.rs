//! Framing and decoding: round trips, limits, and hostile bytes.

use std::io::Cursor;

use embervm_protocol::*;

fn all_requests() -> Vec<Request> {
    vec![
        Request::Sync {
            entropy: vec![1, 2, 3],
            wall_clock: WallClock {
                secs: 1_700_000_000,
                nanos: 5,
            },
        },
        Request::Ping { nonce: u64::MAX },
        Request::Exec(ExecRequest {
            argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
            env: vec![("A".into(), "b".into())],
            cwd: Some("/tmp".into()),
            stdin: Stdin::Bytes(vec![0, 255, 10]),
            timeout_ms: Some(5000),
            limits: Limits {
                memory_bytes: Some(128 << 20),
                pids: Some(64),
                cpu: Some(CpuQuota {
                    quota_us: 50_000,
                    period_us: 100_000,
                }),
            },
            user: Some(UserSpec {
                uid: 1000,
                gid: 1000,
            }),
            max_output: Some(1 << 20),
        }),
        Request::Exec(ExecRequest {
            stdin: Stdin::Stream,
            ..ExecRequest::default()
        }),
        Request::StdinData(vec![7; 100]),
        Request::StdinEof,
        Request::Signal { signal: 15 },
        Request::WriteFile {
            path: "/x".into(),
            mode: 0o644,
            len: 3,
            owner: None,
        },
        Request::FileData(vec![]),
        Request::FileEnd,
        Request::ReadFile {
            path: "/etc/hostname".into(),
            max_len: 10,
        },
    ]
}

fn all_responses() -> Vec<Response> {
    vec![
        Response::Synced {
            entropy_added: true,
            clock_set: false,
        },
        Response::Pong { nonce: 1 },
        Response::Started { pid: 42 },
        Response::Output {
            stream: OutputStream::Stderr,
            data: vec![0; CHUNK_SIZE],
        },
        Response::StdinCredit { chunks: 4 },
        Response::Exit(ExitInfo {
            code: Some(3),
            signal: None,
            timed_out: true,
            oom_killed: true,
            truncated: true,
            cpu_user_us: 1,
            cpu_sys_us: 2,
            wall_us: 3,
            limits_enforced: true,
        }),
        Response::FileWritten { len: 5 << 20 },
        Response::FileData(vec![1]),
        Response::FileEnd { len: 1 },
        Response::Error(ErrorReply::new(ErrorKind::NotFound, "nope")),
    ]
}

#[test]
fn every_message_round_trips() {
    let mut stream = Vec::new();
    for r in all_requests() {
        write_frame(&mut stream, &r).expect("encode");
    }
    let mut cur = Cursor::new(stream);
    for want in all_requests() {
        let got: Request = read_frame(&mut cur).expect("decode").expect("frame");
        assert_eq!(got, want);
    }
    assert!(read_frame::<_, Request>(&mut cur).expect("eof").is_none());
    for want in all_responses() {
        let bytes = encode_frame(&want).expect("encode");
        let got: Response = decode(&bytes[4..]).expect("decode");
        assert_eq!(got, want);
    }
}

#[test]
fn data_is_compact() {
    // A 64 KiB chunk costs a handful of bytes of overhead, not base64.
    let f = encode_frame(&Response::Output {
        stream: OutputStream::Stdout,
        data: vec![0xAB; CHUNK_SIZE],
    })
    .expect("encode");
    assert!(f.len() < CHUNK_SIZE + 16, "{}", f.len());
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let mut cur = Cursor::new(((MAX_FRAME_LEN + 1) as u32).to_le_bytes().to_vec());
    let err = read_frame::<_, Request>(&mut cur).expect_err("too large");
    assert!(matches!(err, ProtocolError::FrameTooLarge { .. }), "{err}");
    // A legal but absent 16 MiB payload: only what arrives is buffered.
    let mut bytes = (MAX_FRAME_LEN as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&[1, 2, 3]);
    let mut buf = Vec::new();
    let err = read_frame_into(&mut Cursor::new(bytes), &mut buf).expect_err("truncated");
    assert!(
        matches!(err, ProtocolError::Truncated { got: 3, .. }),
        "{err}"
    );
    assert!(buf.capacity() < 1 << 20, "{}", buf.capacity());
    let mut d = FrameDecoder::new();
    d.push(&u32::MAX.to_le_bytes());
    assert!(d.next_payload().is_err());
}

#[test]
fn encoding_refuses_oversized_messages() {
    let err = encode_frame(&Request::StdinData(vec![0; MAX_FRAME_LEN + 1])).expect_err("big");
    assert!(matches!(err, ProtocolError::Encode(_)));
}

#[test]
fn truncated_header_and_trailing_bytes() {
    let err = read_frame::<_, Request>(&mut Cursor::new(vec![1, 0])).expect_err("short");
    assert!(matches!(err, ProtocolError::Truncated { got: 2, want: 4 }));
    let mut f = encode_frame(&Request::Ping { nonce: 9 }).expect("encode");
    f.push(0);
    assert!(matches!(
        decode::<Request>(&f[4..]),
        Err(ProtocolError::TrailingBytes(1))
    ));
}

#[test]
fn frame_decoder_splits_a_byte_stream() {
    let mut stream = Vec::new();
    for r in all_requests() {
        stream.extend(encode_frame(&r).expect("encode"));
    }
    // Feed it in awkward pieces.
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    for piece in stream.chunks(3) {
        d.push(piece);
        while let Some(m) = d.next_message::<Request>().expect("decode") {
            out.push(m);
        }
    }
    assert_eq!(out, all_requests());
    assert_eq!(d.pending(), 0);
}

/// xorshift64: deterministic pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn try_everything(bytes: &[u8]) {
    let _ = decode::<Request>(bytes);
    let _ = decode::<Response>(bytes);
    let _ = check_hello(bytes, "test", Role::Agent);
    let _ = check_hello(bytes, "test", Role::Host);
    let mut d = FrameDecoder::new();
    d.push(bytes);
    while let Ok(Some(p)) = d.next_payload() {
        let _ = decode::<Request>(&p);
    }
    let mut cur = Cursor::new(bytes);
    let _ = read_frame::<_, Response>(&mut cur);
}

#[test]
fn hostile_bytes_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Pure noise of many lengths.
    for i in 0..3000 {
        let len = rng.below(64 + i % 512);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        try_everything(&bytes);
    }
    // Valid frames, truncated at every length and mutated at random.
    let mut valid: Vec<Vec<u8>> = all_requests()
        .iter()
        .map(|r| encode_frame(r).expect("encode"))
        .collect();
    valid.extend(
        all_responses()
            .iter()
            .map(|r| encode_frame(r).expect("encode")),
    );
    valid.push(encode_frame(&Hello::host()).expect("encode"));
    for f in &valid {
        for cut in 0..f.len().min(300) {
            try_everything(&f[..cut]);
            try_everything(&f[4.min(cut)..cut]);
        }
        for _ in 0..200 {
            let mut m = f.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len());
                m[at] = rng.next() as u8;
            }
            try_everything(&m);
            try_everything(&m[4..]);
        }
    }
    // Huge announced sequence lengths inside a small payload.
    for tag in 0u8..12 {
        let payload = [tag, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        try_everything(&payload);
    }
}

#[test]
fn wire_format_is_pinned() {
    // Changing any of these bytes changes the protocol: bump
    // PROTOCOL_VERSION and guest/PROTOCOL.md with it.
    let payload = |m: &Request| encode_frame(m).expect("encode")[4..].to_vec();
    assert_eq!(payload(&Request::Ping { nonce: 300 }), [1, 0xac, 0x02]);
    assert_eq!(payload(&Request::StdinEof), [4]);
    assert_eq!(payload(&Request::StdinData(vec![9, 8])), [3, 2, 9, 8]);
    assert_eq!(
        payload(&Request::ReadFile {
            path: "/a".into(),
            max_len: 1
        }),
        [9, 2, b'/', b'a', 1]
    );
    let r = encode_frame(&Response::Error(ErrorReply::new(ErrorKind::Busy, "b"))).expect("encode");
    assert_eq!(r, [4, 0, 0, 0, 9, 7, 1, b'b']);
    let h = encode_frame(&Hello::new(Role::Agent, "1", Capabilities::default())).expect("encode");
    assert_eq!(
        &h[4..],
        [
            b'E',
            b'M',
            b'B',
            b'V',
            PROTOCOL_VERSION as u8,
            1,
            b'1',
            1,
            0,
            0,
            0,
            0
        ]
    );
}
