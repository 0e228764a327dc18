//! The `Sandbox` API against the real guest: one sandbox is booted for the
//! whole file (boots are slow in the emulated test host) and shared by
//! every test, which also exercises concurrent use of one sandbox.
//!
//! Covers: echo, exit codes and signals; python, javascript and shell code;
//! stdin (inline and streamed); 10 MiB of binary output byte-exact; env and
//! cwd; files in and out (0 B, 1 B, 5 MiB); a timeout that leaves no process
//! behind; a memory limit (OOM); 8 execs at once; `call` with JSON args in
//! both languages and a function that throws; a guest-initiated vsock
//! connection to a host listener from user code. (The device-level hybrid
//! socket cases live in `vsock_device.rs`.)
//!
//! Needs a KVM that runs Linux guests; `EMBERVM_SKIP_GUEST_TESTS=1` skips.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use embervm_core::sandbox::serde_json::json;
use embervm_core::sandbox::ErrorKind;
use embervm_core::{CallError, Command, Language, Sandbox, SandboxConfig, SandboxError};
use embervm_tests::guest;

fn sandbox() -> Option<&'static Sandbox> {
    if std::env::var_os("EMBERVM_SKIP_GUEST_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: EMBERVM_SKIP_GUEST_TESTS=1");
        return None;
    }
    static SB: OnceLock<Result<Sandbox, String>> = OnceLock::new();
    let sb = SB.get_or_init(|| {
        let mut c = SandboxConfig::from_paths(guest::vmlinux(), guest::initramfs());
        c.memory_mib = 512;
        // The emulated test host is slow and these tests run in parallel:
        // leave the agent time to answer after a timeout.
        c.grace = Duration::from_secs(60);
        c.boot_timeout = Duration::from_secs(600);
        let t = Instant::now();
        let r = Sandbox::new(c).map_err(|e| e.to_string());
        eprintln!("sandbox boot: {:?}", t.elapsed());
        r
    });
    match sb {
        Ok(s) => Some(s),
        Err(e) => panic!("Sandbox::new: {e}"),
    }
}

fn sh(script: &str) -> Command {
    Command::shell(script)
}

#[test]
fn echo_exit_codes_and_signals() {
    let Some(sb) = sandbox() else { return };
    let o = sb.exec(&Command::new(["echo", "hello", "world"])).unwrap();
    assert_eq!(o.stdout_str(), "hello world\n");
    assert!(o.success() && o.stderr.is_empty(), "{o:?}");

    let o = sb.exec(&sh("echo oops >&2; exit 7")).unwrap();
    assert_eq!(
        (o.exit_code, o.signal, o.shell_status()),
        (Some(7), None, 7)
    );
    assert_eq!(o.stderr_str(), "oops\n");

    let o = sb.exec(&sh("kill -TERM $$; sleep 5")).unwrap();
    assert_eq!(
        (o.exit_code, o.signal, o.shell_status()),
        (None, Some(15), 143)
    );
    let o = sb.exec(&sh("kill -KILL $$")).unwrap();
    assert_eq!(o.signal, Some(9));
    assert!(!o.timed_out);

    let e = sb.exec(&Command::new(["no-such-program"])).unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::NotFound), "{e}");
    // The sandbox is still usable after an agent refusal.
    assert!(sb.exec(&Command::new(["true"])).unwrap().success());
    // whoami: the unprivileged user.
    let o = sb.exec(&sh("id -u; echo $HOME")).unwrap();
    assert_eq!(o.stdout_str(), "1000\n/home/user\n");
}

#[test]
fn python_javascript_and_shell_code() {
    let Some(sb) = sandbox() else { return };
    let o = sb
        .run(
            "import sys\nprint(6*7)\nprint('err', file=sys.stderr)",
            Language::Python,
        )
        .unwrap();
    assert_eq!(
        (o.stdout_str().as_ref(), o.stderr_str().as_ref()),
        ("42\n", "err\n")
    );
    let o = sb
        .run(
            "const x = await Promise.resolve(6);\nconsole.log(x * 7);",
            Language::JavaScript,
        )
        .unwrap();
    assert_eq!(o.stdout_str(), "42\n", "{o:?}");
    let o = sb.run("echo $((6*7))", Language::Shell).unwrap();
    assert_eq!(o.stdout_str(), "42\n");
    let o = sb.run("raise SystemExit(3)", Language::Python).unwrap();
    assert_eq!(o.exit_code, Some(3));
    let o = sb
        .run("throw new Error('boom')", Language::JavaScript)
        .unwrap();
    assert_eq!(o.exit_code, Some(1));
    assert!(o.stderr_str().contains("boom"), "{o:?}");
}

#[test]
fn stdin_inline_and_streamed() {
    let Some(sb) = sandbox() else { return };
    let data = b"line one\n\x00\xff binary\n".to_vec();
    let o = sb.exec(&Command::new(["cat"]).stdin(data.clone())).unwrap();
    assert_eq!(o.stdout, data);
    // Larger than the inline limit: streamed with credit.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let o = sb.exec(&sh("wc -c; ").stdin(big.clone())).unwrap();
    assert_eq!(o.stdout_str().trim(), big.len().to_string());
    // From a reader.
    let mut src: &[u8] = &big;
    let mut got = Vec::new();
    let o = sb
        .exec_streaming(&Command::new(["cat"]), Some(&mut src), &mut |s, d| {
            assert_eq!(s, embervm_core::sandbox::Stream::Stdout);
            got.extend_from_slice(d)
        })
        .unwrap();
    assert!(o.success());
    assert!(
        got == big,
        "streamed stdin came back different ({} bytes)",
        got.len()
    );
}

#[test]
fn ten_mib_of_binary_output_byte_exact() {
    let Some(sb) = sandbox() else { return };
    let code = "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 40960)\n\
                sys.stderr.buffer.write(b'\\x00\\xfe')";
    let o = sb.run(code, Language::Python).unwrap();
    let want: Vec<u8> = (0..40960).flat_map(|_| 0..=255u8).collect();
    assert_eq!(o.stdout.len(), 10 * 1024 * 1024);
    assert!(o.stdout == want, "10 MiB differ");
    assert_eq!(o.stderr, b"\x00\xfe");
    assert!(!o.truncated);
    // A limit truncates, and says so.
    let mut c = sh("head -c 1000000 /dev/zero");
    c.max_output = Some(1000);
    let o = sb.exec(&c).unwrap();
    assert!(o.truncated && o.stdout.len() <= 1000, "{}", o.stdout.len());
}

#[test]
fn env_and_cwd() {
    let Some(sb) = sandbox() else { return };
    let c = sh("echo \"$FOO|$EMPTY|$LANG\"; pwd")
        .env("FOO", "bar baz")
        .env("EMPTY", "")
        .cwd("/tmp");
    let o = sb.exec(&c).unwrap();
    assert_eq!(o.stdout_str(), "bar baz||C.UTF-8\n/tmp\n");
    let o = sb.exec(&Command::new(["pwd"])).unwrap();
    assert_eq!(o.stdout_str(), "/home/user\n");
    let e = sb
        .exec(&Command::new(["pwd"]).cwd("/no/such/dir"))
        .unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::NotFound), "{e}");
}

#[test]
fn files_in_and_out() {
    let Some(sb) = sandbox() else { return };
    let five: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    for (name, data) in [("zero", Vec::new()), ("one", vec![0xa5u8]), ("five", five)] {
        let path = format!("/tmp/files/{name}.bin");
        sb.write_file(&path, &data).unwrap();
        let back = sb.read_file(&path).unwrap();
        assert!(
            back == data,
            "{name}: {} bytes back of {}",
            back.len(),
            data.len()
        );
        let o = sb.exec(&Command::new(["wc", "-c", path.as_str()])).unwrap();
        assert!(
            o.stdout_str().starts_with(&format!("{} ", data.len())),
            "{o:?}"
        );
    }
    // A file made in the guest comes out.
    sb.exec(&sh("printf 'made\\n' > /tmp/files/made.txt"))
        .unwrap();
    assert_eq!(sb.read_file("/tmp/files/made.txt").unwrap(), b"made\n");
    let e = sb.read_file("/tmp/files/missing").unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::NotFound), "{e}");
    let e = sb.read_file_max("/tmp/files/five.bin", 1000).unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::TooLarge), "{e}");
    let e = sb.write_file("relative/path", b"x").unwrap_err();
    assert!(matches!(e, SandboxError::Agent { .. }), "{e}");
}

/// Processes of the sandbox user whose command line contains `marker`.
fn user_processes(sb: &Sandbox, marker: &str) -> String {
    let code = format!(
        "import os\nme = os.getpid()\nfor p in os.listdir('/proc'):\n    \
         if not p.isdigit() or int(p) == me: continue\n    \
         try:\n        st = os.stat('/proc/' + p)\n        \
         cmd = open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\\0', b' ').decode()\n    \
         except OSError: continue\n    \
         if st.st_uid == 1000 and '{marker}' in cmd: print(p, cmd)\n"
    );
    let o = sb.run(&code, Language::Python).unwrap();
    assert!(o.success(), "{o:?}");
    o.stdout_str().into_owned()
}

#[test]
fn timeout_kills_the_whole_tree() {
    let Some(sb) = sandbox() else { return };
    let t = Instant::now();
    let c = sh("sleep 4242 & (setsid sleep 4243 &); echo started; sleep 4244")
        .timeout(Duration::from_secs(2));
    let o = sb.exec(&c).unwrap();
    assert!(o.timed_out, "{o:?}");
    assert_eq!(o.shell_status(), 124);
    assert_eq!(o.stdout_str(), "started\n");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(user_processes(sb, "sleep 424"), "", "processes left behind");
}

#[test]
fn memory_limit_ooms_the_command_not_the_agent() {
    let Some(sb) = sandbox() else { return };
    let mut c = Command::new([
        "python3",
        "-c",
        "x = bytearray(200 * 1024 * 1024); print(len(x))",
    ]);
    c.memory_limit = Some(32 * 1024 * 1024);
    let o = sb.exec(&c).unwrap();
    assert!(o.oom_killed || o.exit_code == Some(1), "{o:?}");
    assert!(!o.success());
    assert!(sb.exec(&Command::new(["true"])).unwrap().success());
}

#[test]
fn eight_execs_at_once() {
    let Some(sb) = sandbox() else { return };
    sb.exec(&sh("rm -rf /tmp/conc; mkdir -p /tmp/conc"))
        .unwrap();
    // Each waits until all 8 have started: only concurrent execs finish.
    let script =
        "touch /tmp/conc/$N; while [ $(ls /tmp/conc | wc -l) -lt 8 ]; do sleep 0.05; done; echo $N";
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    sb.exec(
                        &sh(script)
                            .env("N", i.to_string())
                            .timeout(Duration::from_secs(300)),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.into_iter().enumerate() {
        let o = o.unwrap();
        assert!(!o.timed_out, "exec {i} timed out: not concurrent");
        assert_eq!(o.stdout_str(), format!("{i}\n"));
    }
}

#[test]
fn call_python_and_javascript() {
    let Some(sb) = sandbox() else { return };
    let py = "def add(a, b):\n    print('noise')\n    return {'sum': a + b, 'args': [a, b]}\n\
              async def later(x):\n    return x * 2\n\
              def fails(x):\n    raise ValueError('bad value %r' % x)\n";
    let v = sb
        .call(Language::Python, py, "add", &json!([2, 3]))
        .unwrap();
    assert_eq!(v, json!({"sum": 5, "args": [2, 3]}));
    assert_eq!(
        sb.call(Language::Python, py, "later", &json!(21)).unwrap(),
        json!(42)
    );
    match sb.call(Language::Python, py, "fails", &json!(["x"])) {
        Err(CallError::Thrown {
            name,
            message,
            stack,
        }) => {
            assert_eq!(name, "ValueError");
            assert_eq!(message, "bad value 'x'");
            assert!(stack.contains("fails"), "{stack}");
        }
        other => panic!("{other:?}"),
    }
    match sb.call(Language::Python, py, "missing", &json!([])) {
        Err(CallError::Thrown { name, .. }) => assert_eq!(name, "AttributeError"),
        other => panic!("{other:?}"),
    }

    let js = "export default function (payload) {\n  console.log('noise');\n  \
              return { id: payload.id, tags: payload.tags.map(t => t.toUpperCase()) };\n}\n\
              export async function sum(a, b) { return a + b; }\n\
              export function fails() { throw new TypeError('nope'); }\n";
    let v = sb
        .call(
            Language::JavaScript,
            js,
            "default",
            &json!({"id": 7, "tags": ["a", "b"]}),
        )
        .unwrap();
    assert_eq!(v, json!({"id": 7, "tags": ["A", "B"]}));
    assert_eq!(
        sb.call(Language::JavaScript, js, "sum", &json!([1.5, 2]))
            .unwrap(),
        json!(3.5)
    );
    match sb.call(Language::JavaScript, js, "fails", &json!([])) {
        Err(CallError::Thrown { name, message, .. }) => {
            assert_eq!((name.as_str(), message.as_str()), ("TypeError", "nope"))
        }
        other => panic!("{other:?}"),
    }
    // A call that never returns ends as a timeout, not a hang.
    let opts = Command::default().timeout(Duration::from_secs(2));
    let r = sb.call_with(
        Language::Python,
        "def f():\n    while True: pass\n",
        "f",
        &json!([]),
        &opts,
    );
    assert!(
        matches!(
            r,
            Err(CallError::NoResult {
                timed_out: true,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(matches!(
        sb.call(Language::Shell, "true", "f", &json!([])),
        Err(CallError::Unsupported(_))
    ));
}

#[test]
fn guest_connects_to_a_host_listener() {
    let Some(sb) = sandbox() else { return };
    let listener = sb.listen(7000).unwrap();
    let server = std::thread::spawn(move || {
        let mut s = listener
            .accept_timeout(Duration::from_secs(300))
            .unwrap()
            .expect("a guest connection");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong:").unwrap();
        s.write_all(&buf).unwrap();
    });
    let code = "import socket\ns = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n\
                s.connect((2, 7000))\ns.sendall(b'ping')\nb = b''\nwhile True:\n    \
                x = s.recv(100)\n    if not x: break\n    b += x\nprint(b.decode())\n";
    let o = sb.run(code, Language::Python).unwrap();
    server.join().unwrap();
    assert_eq!(o.stdout_str(), "pong:ping\n", "{o:?}");
}
