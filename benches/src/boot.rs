//! `boot`: time from start to the guest agent's ready line, embervm next to
//! QEMU `-M microvm`, same kernel, initramfs and command line, same host,
//! runs interleaved (so a host that slows down over time hits both alike).
//!
//! Figures (ms), default guest, 128 MiB, 1 vCPU:
//! - embervm in-process: `Vm::new` → ready line (the `Vm` API);
//! - embervm process: spawn `embervm boot` → ready line on its stdout;
//! - QEMU process: spawn `qemu-system-x86_64 -M microvm ...` → ready line.
//!
//! The ratio compares the two process figures (like for like). The guest
//! reboots right after the ready line (`embervm.action=reboot`, `reboot=t`),
//! so each run also ends on its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use embervm_core::{ConsoleConfig, Vm, VmConfig};

use crate::stats::{ms, pct, row};
use crate::vm_setup::default_guest;

const MARKER: &str = "EMBERVM_READY";
const CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 quiet embervm.action=reboot";
const DEADLINE: Duration = Duration::from_secs(120);

fn in_process(kernel: &Path, initrd: &Path) -> Result<f64, String> {
    let (tx, rx) = mpsc::channel::<Instant>();
    let mut c = VmConfig::new(kernel);
    c.initrd = Some(initrd.to_path_buf());
    c.cmdline = CMDLINE.into();
    c.memory_mib = 128;
    c.console = ConsoleConfig::callback(move |line| {
        if String::from_utf8_lossy(line).contains(MARKER) {
            let _ = tx.send(Instant::now());
        }
    });
    let t0 = Instant::now();
    let vm = Vm::new(c).map_err(|e| e.to_string())?;
    let h = vm.handle();
    let runner = std::thread::spawn(move || vm.run());
    let ready = rx.recv_timeout(DEADLINE);
    if ready.is_err() {
        h.kill();
    }
    let exit = runner
        .join()
        .map_err(|_| "vCPU runner panicked".to_string())?;
    match ready {
        Ok(t) => Ok(ms(t - t0)),
        Err(_) => Err(format!("embervm: no ready line; VM ended with {exit:?}")),
    }
}

/// Spawn `cmd`, return ms from spawn to the first stdout line with the
/// marker; the child is waited for (killed at the deadline).
fn process(mut cmd: Command) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel::<Instant>();
    let reader = std::thread::spawn(move || {
        let mut tail = Vec::new();
        for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line).into_owned();
            if text.contains(MARKER) {
                let _ = tx.send(Instant::now());
            }
            tail.push(text);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        tail
    });
    let ready = rx.recv_timeout(DEADLINE);
    if ready.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let tail = reader.join().unwrap_or_default();
    match ready {
        Ok(t) => Ok(ms(t - t0)),
        Err(_) => Err(format!(
            "{cmd:?}: no ready line; last output:\n{}",
            tail.join("\n")
        )),
    }
}

fn embervm_cmd(exe: &Path, kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "boot",
        "--memory",
        "128",
        "--vcpus",
        "1",
        "--cmdline",
        CMDLINE,
    ])
    .arg("--kernel")
    .arg(kernel)
    .arg("--initrd")
    .arg(initrd);
    c
}

fn qemu_cmd(qemu: &Path, kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new(qemu);
    c.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,rtc=on",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", CMDLINE]);
    c
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Run the comparison `runs` times.
pub fn run(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (kernel, initrd) = default_guest();
    let exe = std::env::current_exe()?;
    let embervm = exe.with_file_name("embervm");
    if !embervm.is_file() {
        return Err(format!(
            "{} not found: build the CLI in the same profile (cargo build --release)",
            embervm.display()
        )
        .into());
    }
    let qemu = std::env::var_os("EMBERVM_QEMU")
        .map(PathBuf::from)
        .or_else(|| find_in_path("qemu-system-x86_64"));
    if qemu.is_none() {
        eprintln!("qemu-system-x86_64 not found (set EMBERVM_QEMU): embervm figures only");
    }

    // Warm-up: page cache, first-VM effects.
    in_process(&kernel, &initrd)?;
    process(embervm_cmd(&embervm, &kernel, &initrd))?;
    if let Some(q) = &qemu {
        process(qemu_cmd(q, &kernel, &initrd))?;
    }

    let (mut api, mut cli, mut qm) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        api.push(in_process(&kernel, &initrd)?);
        cli.push(process(embervm_cmd(&embervm, &kernel, &initrd))?);
        if let Some(q) = &qemu {
            qm.push(process(qemu_cmd(q, &kernel, &initrd))?);
        }
        eprintln!(
            "run {}/{runs}: api {:.1} ms, embervm {:.1} ms{}",
            i + 1,
            api[i],
            cli[i],
            qm.get(i)
                .map(|q| format!(", qemu {q:.1} ms"))
                .unwrap_or_default()
        );
    }
    println!("Boot to EMBERVM_READY, default guest (vmlinux + initramfs), 128 MiB, 1 vCPU,");
    println!("cmdline \"{CMDLINE}\"");
    println!();
    println!("| what | runs | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!("{}", row("embervm in-process: Vm::new → ready", &mut api));
    println!(
        "{}",
        row("embervm process: spawn `embervm boot` → ready", &mut cli)
    );
    if !qm.is_empty() {
        println!("{}", row("QEMU -M microvm process: spawn → ready", &mut qm));
        let r50 = pct(&mut qm, 50.0) / pct(&mut cli, 50.0);
        let r99 = pct(&mut qm, 99.0) / pct(&mut cli, 99.0);
        println!("| ratio QEMU / embervm (process) | | {r50:.2}× | {r99:.2}× |");
    }
    Ok(())
}
