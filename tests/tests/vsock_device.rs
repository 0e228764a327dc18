//! The virtio-vsock device against the real guest kernel's virtio-vsock
//! driver, through both host faces.
//!
//! `guest_sockets_both_ways` boots the default guest with
//! `embervm.action=run` and a Python script (the image has python3, whose
//! `socket` module speaks AF_VSOCK; no other vsock client is in the image).
//! The script, and what the host does for each step:
//! 1. connects to host port 5000 (an in-process [`VsockListener`] that
//!    echoes), sends 1 MiB and half-closes, reads the echo back: both data
//!    directions with credit, half-close, the guest's full close;
//! 2. connects to host port 5001, which the hybrid socket forwards to
//!    `<uds_path>_5001` (a plain Unix listener here);
//! 3. connects to port 5999, where nobody listens: must be refused (RST);
//! 4. listens on guest port 6000 and serves two host-initiated connections:
//!    one from [`Vm::connect`], one from a hybrid `CONNECT 6000\n`.
//!
//! `agent_over_vsock` boots the guest idle and talks to the agent on port
//! 1024 with the protocol client (hello and an exec).
//!
//! Needs a KVM that runs Linux guests (see `boot_linux.rs`); set
//! `EMBERVM_SKIP_GUEST_TESTS=1` to skip on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use embervm_core::devices::virtio::vsock::{VsockConfig, VsockError};
use embervm_core::{ConsoleConfig, ExitReason, Vm, VmConfig, VmError};
use embervm_tests::guest;

const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// Generous: the test host is emulated (TCG) and runs KVM nested.
const DEADLINE: Duration = Duration::from_secs(240);

const GUEST_SCRIPT: &str = r#"import socket as S
V=S.AF_VSOCK
def c(p):
 s=S.socket(V,S.SOCK_STREAM);s.connect((2,p));return s
def rd(s):
 b=b''
 while 1:
  x=s.recv(65536)
  if not x:return b
  b+=x
d=bytes(range(256))*4096
s=c(5000);s.sendall(d);s.shutdown(S.SHUT_WR)
print('VS_ECHO',rd(s)==d,flush=1);s.close()
s=c(5001);s.sendall(b'uds');s.shutdown(S.SHUT_WR)
print('VS_UDS',rd(s)==b'ack:uds',flush=1);s.close()
try:
 c(5999);print('VS_REFUSED False',flush=1)
except OSError as e:print('VS_REFUSED True',e.errno,flush=1)
l=S.socket(V,S.SOCK_STREAM);l.bind((S.VMADDR_CID_ANY,6000));l.listen(2)
print('VS_LISTEN',flush=1)
for i in range(2):
 a,_=l.accept();m=rd(a);a.sendall(m.upper());a.close()
print('VS_DONE',flush=1)
"#;

use embervm_tests::host::{one_guest_at_a_time as serial, skip_guest_tests as skipped};

/// The script as one kernel command line word without spaces or commas.
fn script_cmdline() -> String {
    let hex: String = GUEST_SCRIPT.bytes().map(|b| format!("{b:02x}")).collect();
    format!("embervm.action=run embervm.run=python3,-c,exec(bytes.fromhex('{hex}').decode())")
}

/// A running guest whose console lines arrive on a channel.
struct Running {
    lines: mpsc::Receiver<String>,
    console: Vec<String>,
    runner: Option<JoinHandle<Result<ExitReason, VmError>>>,
    kill: embervm_core::VmHandle,
}

impl Running {
    fn start(vm: Vm, lines: mpsc::Receiver<String>) -> Self {
        let kill = vm.handle();
        let runner = Some(std::thread::spawn(move || vm.run()));
        Self {
            lines,
            console: Vec::new(),
            runner,
            kill,
        }
    }

    /// Wait for a console line containing `marker`; returns it.
    fn wait_for(&mut self, marker: &str, until: Instant) -> String {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push(line.clone());
                    if line.contains(marker) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no {marker:?} on the console ({e:?}, {} lines)\n{}",
                    self.console.len(),
                    self.tail()
                ),
            }
        }
    }

    fn tail(&self) -> String {
        let n = self.console.len().saturating_sub(60);
        self.console[n..].join("\n")
    }

    fn finish(mut self) -> (Result<ExitReason, VmError>, String) {
        self.kill.kill();
        let exit = self
            .runner
            .take()
            .map(|r| r.join().expect("VM runner thread"))
            .unwrap_or(Ok(ExitReason::Killed));
        while let Ok(line) = self.lines.try_recv() {
            self.console.push(line);
        }
        (exit, self.tail())
    }
}

fn config(extra: &str, uds: Option<&Path>) -> (VmConfig, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel::<String>();
    let mut config = VmConfig::new(guest::vmlinux());
    config.initrd = Some(guest::initramfs());
    config.cmdline = format!("{BASE_CMDLINE} {extra}").trim().to_string();
    config.memory_mib = 512;
    config.console = ConsoleConfig::callback(move |line| {
        let _ = tx.send(String::from_utf8_lossy(line).trim_end().to_string());
    });
    config.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.map(Path::to_path_buf),
    });

    (config, rx)
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("embervm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn read_all(s: &mut UnixStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to end");
    v
}

#[test]
fn guest_sockets_both_ways() {
    if skipped("guest_sockets_both_ways") {
        return;
    }
    let _g = serial();
    let dir = scratch_dir("vsock");
    let uds = dir.join("v.sock");
    let (config, lines) = config(&script_cmdline(), Some(&uds));
    let vm = Vm::new(config).unwrap_or_else(|e| panic!("Vm::new: {e}"));
    let vsock = vm.vsock().expect("vsock configured");

    // 1. In-process listener on host port 5000: echo everything back.
    let listener = vsock.listen(5000).expect("listen 5000");
    assert!(matches!(
        vsock.listen(5000),
        Err(VsockError::PortInUse(5000))
    ));
    let echo = std::thread::spawn(move || {
        let mut s = listener.accept().expect("guest connects to 5000");
        let data = read_all(&mut s);
        s.write_all(&data).expect("echo");
        data.len()
    });
    // 2. Hybrid: guest connections to port 5001 land on `<uds>_5001`.
    let side = UnixListener::bind(format!("{}_5001", uds.display())).expect("bind _5001");
    let hybrid = std::thread::spawn(move || {
        let (mut s, _) = side.accept().expect("guest connects to 5001");
        let data = read_all(&mut s);
        s.write_all(b"ack:").unwrap();
        s.write_all(&data).unwrap();
    });

    let until = Instant::now() + DEADLINE;
    let mut run = Running::start(vm, lines);
    let line = run.wait_for("VS_ECHO", until);
    assert!(line.contains("VS_ECHO True"), "{line}\n{}", run.tail());
    assert_eq!(echo.join().expect("echo thread"), 1 << 20);
    let line = run.wait_for("VS_UDS", until);
    assert!(line.contains("VS_UDS True"), "{line}\n{}", run.tail());
    hybrid.join().expect("hybrid thread");
    let line = run.wait_for("VS_REFUSED", until);
    assert!(line.contains("VS_REFUSED True"), "{line}\n{}", run.tail());
    run.wait_for("VS_LISTEN", until);

    // 4a. Host-initiated, in process.
    let mut s = vsock.connect(6000).expect("connect to guest port 6000");
    s.write_all(b"inproc").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), b"INPROC");
    // 4b. Host-initiated through the hybrid socket.
    let mut c = UnixStream::connect(&uds).expect("connect to the hybrid socket");
    c.write_all(b"CONNECT 6000\n").unwrap();
    let mut ok = String::new();
    BufReader::new(&mut c).read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK ") && ok.ends_with('\n'), "{ok:?}");
    c.write_all(b"hybrid").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), b"HYBRID");
    run.wait_for("VS_DONE", until);
    // (A refused port is checked above; checking 6000 again here would race
    // the guest script's own close of its listener.)

    let (exit, tail) = run.finish();
    assert!(exit.is_ok(), "{exit:?}\n{tail}");
    // The device thread is gone with the VM.
    assert!(matches!(vsock.connect(6000), Err(VsockError::Stopped)));
    assert!(!uds.exists(), "the hybrid socket is removed with the VM");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_over_vsock() {
    if skipped("agent_over_vsock") {
        return;
    }
    let _g = serial();
    let (config, lines) = config("", None);
    let vm = Vm::new(config).unwrap_or_else(|e| panic!("Vm::new: {e}"));
    let vsock = vm.vsock();
    let until = Instant::now() + DEADLINE;
    let mut run = Running::start(vm, lines);
    run.wait_for("EMBERVM_READY", until);
    let vsock = vsock.expect("vsock configured");
    // The agent listens right after its ready line; until then the guest
    // refuses (RST), which is an answer, not a hang.
    let stream = loop {
        match vsock.connect(embervm_protocol::AGENT_VSOCK_PORT) {
            Ok(s) => break s,
            Err(VsockError::Refused(_)) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!(
                "connect to the agent: {e} (is the image's agent new enough? `make guest`)\n{}",
                run.tail()
            ),
        }
    };
    let mut client = embervm_protocol::AgentClient::connect(stream).expect("agent hello");
    let req = embervm_protocol::ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo hello; head -c 300000 /dev/zero".into(),
        ],
        ..Default::default()
    };
    let out = client.exec_collect(&req).expect("exec");
    assert_eq!(out.exit.code, Some(0), "{out:?}");
    assert_eq!(&out.stdout[..6], b"hello\n");
    assert_eq!(out.stdout.len(), 6 + 300_000);
    let (exit, tail) = run.finish();
    assert!(matches!(exit, Ok(ExitReason::Killed)), "{exit:?}\n{tail}");
}
