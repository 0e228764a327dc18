//! Exec over a Unix socket against `embervm-agent --serve-unix`.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::{bytes, cmd, run, sh, Agent};
use embervm_protocol::{ClientError, ErrorKind, ExecRequest, OutputStream, Stdin, UserSpec};

#[test]
fn echo() {
    let agent = Agent::start();
    let mut c = agent.client();
    let out = run(&mut c, &cmd(&["echo", "hello", "world"]));
    assert_eq!(out.stdout, b"hello world\n");
    assert_eq!(out.stderr, b"");
    assert_eq!(out.exit.code, Some(0));
    assert_eq!(out.exit.signal, None);
    assert!(!out.exit.timed_out && !out.exit.truncated && !out.exit.oom_killed);
    assert!(out.exit.wall_us > 0);
    // The connection serves more requests after an exec.
    let out = run(&mut c, &sh("echo err >&2; echo out"));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    c.ping().expect("ping");
}

#[test]
fn stdin_bytes_and_stream() {
    let agent = Agent::start();
    let mut c = agent.client();
    let mut req = cmd(&["cat"]);
    req.stdin = Stdin::Bytes(b"from the request\n".to_vec());
    assert_eq!(run(&mut c, &req).stdout, b"from the request\n");

    // 3 MiB streamed through cat, byte-exact, with credit-paced stdin.
    let data = bytes(3 << 20, 7);
    let mut req = cmd(&["cat"]);
    req.stdin = Stdin::Stream;
    let mut src = Cursor::new(data.clone());
    let mut got = Vec::new();
    let exit = c
        .exec(&req, Some(&mut src), |s, d| {
            assert_eq!(s, OutputStream::Stdout);
            got.extend_from_slice(d)
        })
        .expect("exec");
    assert_eq!(exit.code, Some(0));
    assert!(got == data, "streamed stdin came back different");

    // A child that reads only a little stdin must not wedge the connection.
    let mut req = cmd(&["head", "-c", "10"]);
    req.stdin = Stdin::Stream;
    let mut src = Cursor::new(bytes(4 << 20, 9));
    let mut got = Vec::new();
    c.exec(&req, Some(&mut src), |_, d| got.extend_from_slice(d))
        .expect("exec");
    assert_eq!(got.len(), 10);
    // Empty streamed stdin is an immediate EOF.
    let mut req = cmd(&["wc", "-c"]);
    req.stdin = Stdin::Stream;
    let mut empty = Cursor::new(Vec::new());
    let mut got = Vec::new();
    c.exec(&req, Some(&mut empty), |_, d| got.extend_from_slice(d))
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&got).trim(), "0");
    c.ping().expect("connection still in step");
}

#[test]
fn env_and_cwd() {
    let agent = Agent::start();
    let mut c = agent.client();
    let mut req = sh("echo \"$FOO|$EMPTY|$PATH\"; pwd");
    req.env = vec![
        ("FOO".into(), "bar baz".into()),
        ("EMPTY".into(), "".into()),
    ];
    req.cwd = Some(agent.dir.to_string_lossy().into_owned());
    let out = run(&mut c, &req);
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut lines = text.lines();
    let first = lines.next().expect("line 1");
    assert!(first.starts_with("bar baz||/usr/local/sbin:"), "{first}");
    assert_eq!(lines.next(), Some(agent.dir.to_string_lossy().as_ref()));
    // The agent's own environment does not leak into user code.
    let out = run(&mut c, &sh("env"));
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(!env.contains("CARGO"), "{env}");
    assert!(env.contains("HOME="));
}

#[test]
fn exit_codes_and_signals() {
    let agent = Agent::start();
    let mut c = agent.client();
    for code in [0, 1, 7, 255] {
        let out = run(&mut c, &sh(&format!("exit {code}")));
        assert_eq!(out.exit.code, Some(code));
        assert_eq!(out.exit.signal, None);
    }
    let out = run(&mut c, &sh("kill -TERM $$"));
    assert_eq!(out.exit.code, None);
    assert_eq!(out.exit.signal, Some(libc::SIGTERM));
    let out = run(&mut c, &sh("kill -KILL $$"));
    assert_eq!(out.exit.signal, Some(libc::SIGKILL));
    // SIGPIPE is back to its default in user code: `yes` dies of it quietly
    // instead of reporting a write error.
    let out = run(&mut c, &sh("yes | head -c 1 >/dev/null"));
    assert_eq!(out.exit.code, Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn spawn_errors_are_typed() {
    let agent = Agent::start();
    let mut c = agent.client();
    let err = c
        .exec_collect(&cmd(&["/no/such/program"]))
        .expect_err("no program");
    match err {
        ClientError::Agent(e) => assert_eq!(e.kind, ErrorKind::NotFound, "{e}"),
        other => panic!("{other}"),
    }
    let err = c
        .exec_collect(&cmd(&["no-such-program-in-path"]))
        .expect_err("no program");
    assert!(
        matches!(err, ClientError::Agent(ref e) if e.kind == ErrorKind::NotFound),
        "{err}"
    );
    let mut req = cmd(&["true"]);
    req.cwd = Some("/no/such/dir".into());
    let err = c.exec_collect(&req).expect_err("no dir");
    assert!(
        matches!(err, ClientError::Agent(ref e) if e.kind == ErrorKind::NotFound && e.message.contains("/no/such/dir")),
        "{err}"
    );
    let mut req = cmd(&["true"]);
    req.env = vec![("A=B".into(), "x".into())];
    let err = c.exec_collect(&req).expect_err("bad env");
    assert!(
        matches!(err, ClientError::Agent(ref e) if e.kind == ErrorKind::BadRequest),
        "{err}"
    );
    // Still in step.
    assert_eq!(run(&mut c, &cmd(&["true"])).exit.code, Some(0));
}

fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z")
        }
    }
}

#[test]
fn timeout_kills_the_process_tree() {
    let agent = Agent::start();
    let mut c = agent.client();
    let mut req = sh("sleep 60 & echo $!; sh -c 'sleep 61 & echo $!; wait' & wait");
    // Long enough for both shells to start and print their pids even in the
    // emulated test host, far below the sleeps.
    req.timeout_ms = Some(3000);
    let start = Instant::now();
    let out = run(&mut c, &req);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(out.exit.timed_out);
    assert_eq!(out.exit.signal, Some(libc::SIGKILL));
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let until = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&p| dead(p)) && Instant::now() < until {
        std::thread::yield_now();
    }
    for p in pids {
        assert!(dead(p), "pid {p} survived the timeout");
    }
    // Background processes do not outlive a command that exits normally.
    let out = run(&mut c, &sh("sleep 60 >/dev/null 2>&1 & echo $!"));
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let until = Instant::now() + Duration::from_secs(5);
    while !dead(pid) && Instant::now() < until {
        std::thread::yield_now();
    }
    assert!(dead(pid), "background pid {pid} survived");
}

#[test]
fn ten_mib_of_binary_output_byte_exact() {
    let agent = Agent::start();
    let mut c = agent.client();
    let data = bytes(10 << 20, 42);
    let path = agent.dir.join("blob");
    let path = path.to_string_lossy();
    c.write_file(&path, 0o644, &data).expect("write");
    let out = run(&mut c, &cmd(&["cat", &path]));
    assert_eq!(out.exit.code, Some(0));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "output differs");
    // Same on stderr.
    let out = run(&mut c, &sh(&format!("cat '{path}' >&2")));
    assert!(out.stderr == data && out.stdout.is_empty());
}

#[test]
fn max_output_truncates_and_drains() {
    let agent = Agent::start();
    let mut c = agent.client();
    let mut req = sh("head -c 5000000 /dev/zero; echo done >&2");
    req.max_output = Some(1000);
    let out = run(&mut c, &req);
    assert_eq!(out.exit.code, Some(0), "the child was not blocked");
    assert!(out.exit.truncated);
    assert_eq!(out.stdout.len() + out.stderr.len(), 1000);
    let mut req = cmd(&["echo", "short"]);
    req.max_output = Some(1000);
    let out = run(&mut c, &req);
    assert!(!out.exit.truncated);
}

#[test]
fn eight_concurrent_execs_on_eight_connections() {
    let agent = Agent::start();
    let start = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let mut c = agent.client();
            std::thread::spawn(move || {
                let out = c
                    .exec_collect(&sh(&format!("sleep 3; echo {i}; head -c 200000 /dev/zero")))
                    .expect("exec");
                (i, out)
            })
        })
        .collect();
    for w in workers {
        let (i, out) = w.join().expect("worker");
        assert_eq!(out.exit.code, Some(0));
        assert!(out.stdout.starts_with(format!("{i}\n").as_bytes()));
        assert_eq!(out.stdout.len(), format!("{i}\n").len() + 200000);
    }
    // Serially this would take 24 s (slack for the emulated test host).
    assert!(
        start.elapsed() < Duration::from_secs(18),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn reports_cpu_time() {
    let agent = Agent::start();
    let mut c = agent.client();
    let out = run(
        &mut c,
        &sh("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"),
    );
    assert_eq!(out.exit.code, Some(0));
    assert!(
        out.exit.cpu_user_us + out.exit.cpu_sys_us > 0,
        "{:?}",
        out.exit
    );
    assert!(out.exit.wall_us >= out.exit.cpu_user_us / 2);
}

#[test]
fn degraded_test_server_says_so() {
    let agent = Agent::start();
    let mut c = agent.client();
    let caps = c.agent_hello().capabilities.clone();
    assert!(!caps.cgroups);
    assert!(!caps.sync);
    assert!(
        caps.notes.contains("limits are not enforced"),
        "{}",
        caps.notes
    );
    let mut req = cmd(&["true"]);
    req.limits.memory_bytes = Some(64 << 20);
    let out = run(&mut c, &req);
    assert!(!out.exit.limits_enforced);
    assert!(run(&mut c, &cmd(&["true"])).exit.limits_enforced);
    let r = c
        .sync(b"0123456789abcdef", std::time::SystemTime::now())
        .expect("sync");
    assert!(!r.clock_set && !r.entropy_added);
}

#[test]
fn runs_as_another_user_when_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let agent = Agent::start();
        let mut c = agent.client();
        let mut req = cmd(&["id", "-u"]);
        req.user = Some(UserSpec { uid: 0, gid: 0 });
        let err = c.exec_collect(&req).expect_err("not root");
        assert!(matches!(err, ClientError::Agent(ref e) if e.kind == ErrorKind::PermissionDenied));
        return;
    }
    let agent = Agent::start_with(&["--user", "1000:1000"]);
    let mut c = agent.client();
    let mut req: ExecRequest = sh("id -u; id -g; id -G; echo $HOME $USER");
    req.cwd = Some("/".into());
    let out = run(&mut c, &req);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n1000\n/home/user user\n"
    );
    req.user = Some(UserSpec { uid: 0, gid: 0 });
    let out = run(&mut c, &req);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0\n0\n"));
}
