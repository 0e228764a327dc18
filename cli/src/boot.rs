//! `embervm boot`: boot a kernel and print its console.
//!
//! Exit status says how the guest ended (see [`USAGE`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use embervm_core::memory::parse_memory_size;
use embervm_core::paths;
use embervm_core::vm::{DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB};
use embervm_core::{ConsoleConfig, ExitReason, Vm, VmConfig, VmError, VmHandle};

/// The line the embervm guest agent prints once it is up.
pub const READY_MARKER: &str = "EMBERVM_READY";

/// Help for `embervm boot`.
pub const USAGE: &str = "usage: embervm boot [options]

Boots a kernel (default: the guest built by `make guest`) and prints its
serial console on stdout.

options:
  --kernel PATH     vmlinux (ELF, PVH entry if present) or bzImage
                    [default: <cache>/default/vmlinux]
  --initrd PATH     initramfs [default: <cache>/default/initramfs.cpio.gz]
  --no-initrd       boot without an initramfs
  --cmdline TEXT    kernel command line
                    [default: \"console=ttyS0 reboot=k panic=-1 quiet\"]
  --append TEXT     add to the command line
  --memory SIZE     guest memory, e.g. 256, 256M, 2G [default: 256 MiB]
  --vcpus N         number of vCPUs [default: 1]
  --until-ready     stop the VM once the guest agent prints EMBERVM_READY
  --timeout SECS    kill the VM after SECS seconds
  --quiet           do not print the console

exit status:
  0    the guest reset (a clean `reboot -f`), or reached EMBERVM_READY with --until-ready
  1    the VM could not be built or run (the error names the value and the limit)
  2    usage error
  3    the guest shut down (triple fault or power off)
  4    the guest kernel panicked
  5    a vCPU failed (KVM internal error, entry failure, unhandled exit)
  124  killed at --timeout";

#[derive(Debug)]
struct Args {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    no_initrd: bool,
    cmdline: String,
    append: Vec<String>,
    memory: u32,
    vcpus: u32,
    until_ready: bool,
    timeout: Option<Duration>,
    quiet: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        kernel: None,
        initrd: None,
        no_initrd: false,
        cmdline: DEFAULT_CMDLINE.to_string(),
        append: Vec::new(),
        memory: DEFAULT_MEMORY_MIB,
        vcpus: 1,
        until_ready: false,
        timeout: None,
        quiet: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--kernel" => a.kernel = Some(value()?.into()),
            "--initrd" => a.initrd = Some(value()?.into()),
            "--no-initrd" => a.no_initrd = true,
            "--cmdline" => a.cmdline = value()?,
            "--append" => a.append.push(value()?),
            "--memory" => a.memory = parse_memory_size(&value()?).map_err(|e| e.to_string())?,
            "--vcpus" => {
                let v = value()?;
                a.vcpus = v
                    .parse()
                    .map_err(|_| format!("--vcpus {v:?} is not a number"))?;
            }
            "--until-ready" => a.until_ready = true,
            "--timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        format!("--timeout {v:?} is not a positive number of seconds")
                    })?;
                a.timeout = Some(Duration::from_secs_f64(secs));
            }
            "--quiet" => a.quiet = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

/// Run `embervm boot ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("embervm boot: {e} (see `embervm boot --help`)");
            return ExitCode::from(2);
        }
    };
    let dir = paths::default_guest_dir();
    let kernel = a.kernel.unwrap_or_else(|| dir.join(paths::VMLINUX));
    let initrd = if a.no_initrd {
        None
    } else {
        Some(a.initrd.unwrap_or_else(|| dir.join(paths::INITRAMFS)))
    };
    let mut cmdline = a.cmdline;
    for extra in &a.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }

    let handle: Arc<OnceLock<VmHandle>> = Arc::default();
    let ready = Arc::new(AtomicBool::new(false));
    let console = {
        let (handle, ready, quiet, until_ready) =
            (handle.clone(), ready.clone(), a.quiet, a.until_ready);
        ConsoleConfig::callback(move |line| {
            if !quiet {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line);
                let _ = out.flush();
            }
            if until_ready && !ready.load(Ordering::Relaxed) {
                let text = String::from_utf8_lossy(line);
                if text.contains(READY_MARKER) {
                    ready.store(true, Ordering::SeqCst);
                    if let Some(h) = handle.get() {
                        h.kill();
                    }
                }
            }
        })
    };
    let config = VmConfig {
        kernel,
        initrd,
        cmdline,
        memory_mib: a.memory,
        vcpus: a.vcpus,
        console,
        vsock: None,
    };
    let vm = match Vm::new(config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("embervm boot: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = handle.set(vm.handle());

    let timed_out = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = a.timeout.map(|t| {
        let (h, flag) = (vm.handle(), timed_out.clone());
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(t) {
                flag.store(true, Ordering::SeqCst);
                h.kill();
            }
        })
    });

    let result = vm.run();
    drop(done_tx);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    status(
        result,
        ready.load(Ordering::SeqCst),
        timed_out.load(Ordering::SeqCst),
    )
}

fn status(result: Result<ExitReason, VmError>, ready: bool, timed_out: bool) -> ExitCode {
    match result {
        Ok(ExitReason::Killed) if ready => {
            eprintln!("embervm: guest reached {READY_MARKER}; VM stopped");
            ExitCode::SUCCESS
        }
        Ok(ExitReason::Killed) if timed_out => {
            eprintln!("embervm: timeout; VM killed");
            ExitCode::from(124)
        }
        Ok(r @ ExitReason::Killed) => {
            eprintln!("embervm: {r}");
            ExitCode::from(124)
        }
        Ok(r @ ExitReason::Reset) => {
            eprintln!("embervm: {r}");
            ExitCode::SUCCESS
        }
        Ok(r @ ExitReason::Shutdown(_)) => {
            eprintln!("embervm: {r}");
            ExitCode::from(3)
        }
        Err(e @ VmError::GuestPanic { .. }) => {
            eprintln!("embervm: {e}");
            ExitCode::from(4)
        }
        Err(e @ VmError::VcpuFault { .. }) => {
            eprintln!("embervm: {e}");
            ExitCode::from(5)
        }
        Err(e) => {
            eprintln!("embervm: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_options() {
        let a = parse(&s(&[
            "--memory",
            "2G",
            "--vcpus",
            "2",
            "--append",
            "x=1",
            "--until-ready",
        ]))
        .unwrap();
        assert_eq!((a.memory, a.vcpus, a.until_ready), (2048, 2, true));
        assert_eq!(a.append, vec!["x=1"]);
        assert!(parse(&s(&["--memory", "1000K"]))
            .unwrap_err()
            .contains("whole number of MiB"));
        assert!(parse(&s(&["--vcpus"])).is_err());
        assert!(parse(&s(&["--bogus"])).is_err());
        assert!(parse(&s(&["--timeout", "-1"])).is_err());
    }
}
