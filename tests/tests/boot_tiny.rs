//! VMM behaviour with tiny hand-assembled guests: no Linux needed, so these
//! run on any KVM that can execute a few instructions (including the
//! kvm_pvm of the build machine): console, reset, triple fault, SMP stop,
//! kill, pause/resume, panic detection, bad input, and resource leaks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use embervm_core::{ConsoleConfig, ExitReason, ShutdownCause, Vm, VmConfig, VmError};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Write a minimal x86-64 ELF whose one segment (code) loads and starts at
/// 1 MiB; with no PVH note it enters in 64-bit mode.
fn tiny_kernel(code: &[u8]) -> PathBuf {
    let paddr: u64 = 0x10_0000;
    let mut b = vec![0u8; 120];
    b[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&paddr.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    let len = code.len() as u64;
    let ph = [
        1u32.to_le_bytes().to_vec(),
        5u32.to_le_bytes().to_vec(),
        120u64.to_le_bytes().to_vec(),
        paddr.to_le_bytes().to_vec(),
        paddr.to_le_bytes().to_vec(),
        len.to_le_bytes().to_vec(),
        len.to_le_bytes().to_vec(),
        0x1000u64.to_le_bytes().to_vec(),
    ]
    .concat();
    b[64..120].copy_from_slice(&ph);
    b.extend_from_slice(code);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("embervm-tiny-{}-{n}.elf", std::process::id()));
    std::fs::write(&p, b).expect("write tiny kernel");
    p
}

const SERIAL_DX: [u8; 4] = [0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
const RESET: [u8; 5] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4]; // mov al, 0xfe; out 0x64, al; hlt

/// Print `msg` with one `out` per byte, then reset through the i8042.
fn print_then_reset(msg: &[u8]) -> Vec<u8> {
    let mut c = SERIAL_DX.to_vec();
    for b in msg {
        c.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    c.extend_from_slice(&RESET);
    c
}

/// Print `msg` with one `rep outsb` (string I/O), then reset.
fn rep_print_then_reset(msg: &[u8]) -> Vec<u8> {
    let mut c = vec![0x48, 0x8d, 0x35]; // lea rsi, [rip + disp32]
    c.extend_from_slice(&16u32.to_le_bytes()); // message sits 16 bytes after this instruction
    c.push(0xb9); // mov ecx, imm32
    c.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    c.extend_from_slice(&SERIAL_DX);
    c.extend_from_slice(&[0xf3, 0x6e]); // rep outsb
    c.extend_from_slice(&RESET);
    c.extend_from_slice(msg);
    c
}

/// Print '.' forever.
fn spin_print() -> Vec<u8> {
    let mut c = SERIAL_DX.to_vec();
    c.extend_from_slice(&[0xb0, b'.', 0xee, 0xeb, 0xfd]); // mov al,'.'; l: out dx,al; jmp l
    c
}

/// Tests in this binary run one at a time: the leak test counts the
/// process's fds, threads and mappings, which parallel VMs would change.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(kernel: PathBuf) -> (VmConfig, embervm_core::ConsoleBuffer) {
    let (console, buf) = ConsoleConfig::buffer();
    let mut c = VmConfig::new(kernel);
    c.memory_mib = 64;
    c.console = console;
    (c, buf)
}

fn text(buf: &embervm_core::ConsoleBuffer) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

#[test]
fn console_then_reset() {
    let _g = serial();
    let (c, buf) = config(tiny_kernel(&print_then_reset(b"hello\n")));
    let r = Vm::new(c).expect("build VM").run();
    assert!(matches!(r, Ok(ExitReason::Reset)), "{r:?}");
    assert_eq!(text(&buf), "hello\n");
}

#[test]
fn string_io_reaches_console() {
    let _g = serial();
    let (c, buf) = config(tiny_kernel(&rep_print_then_reset(b"rep outsb ok\n")));
    let r = Vm::new(c).expect("build VM").run();
    assert!(matches!(r, Ok(ExitReason::Reset)), "{r:?}");
    assert_eq!(text(&buf), "rep outsb ok\n");
}

#[test]
fn triple_fault_is_shutdown() {
    let _g = serial();
    // ud2 with an empty IDT: #UD -> #GP -> double fault -> triple fault.
    let (c, _buf) = config(tiny_kernel(&[0x0f, 0x0b]));
    let r = Vm::new(c).expect("build VM").run();
    assert!(
        matches!(r, Ok(ExitReason::Shutdown(ShutdownCause::TripleFault))),
        "{r:?}"
    );
}

#[test]
fn smp_reset_stops_waiting_aps() {
    let _g = serial();
    let (mut c, buf) = config(tiny_kernel(&print_then_reset(b"bsp\n")));
    c.vcpus = 4;
    let t = Instant::now();
    let r = Vm::new(c).expect("build VM").run();
    assert!(matches!(r, Ok(ExitReason::Reset)), "{r:?}");
    assert_eq!(text(&buf), "bsp\n");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn panic_on_console_is_an_error_with_registers() {
    let _g = serial();
    let code = print_then_reset(b"[    0.5] Kernel panic - not syncing: tiny test\n");
    let (mut c, _buf) = config(tiny_kernel(&code));
    c.console = ConsoleConfig::off(); // detection works with the console off
    let r = Vm::new(c).expect("build VM").run();
    match r {
        Err(VmError::GuestPanic {
            message,
            vcpu,
            regs,
        }) => {
            assert_eq!(message, "Kernel panic - not syncing: tiny test");
            assert_eq!(vcpu, 0);
            // Stopped in the tiny kernel, just after `out 0x64, al`.
            assert!((0x10_0000..0x10_1000).contains(&regs.regs.rip), "{regs}");
        }
        other => panic!("expected GuestPanic, got {other:?}"),
    }
}

#[test]
fn kill_pause_resume() {
    let _g = serial();
    let (mut c, buf) = config(tiny_kernel(&spin_print()));
    c.vcpus = 2;
    let vm = Vm::new(c).expect("build VM");
    let h = vm.handle();
    let runner = std::thread::spawn(move || vm.run());
    let wait_for = |min: usize| {
        let end = Instant::now() + Duration::from_secs(20);
        while buf.lock().unwrap().len() < min {
            assert!(
                Instant::now() < end,
                "console stuck at {} bytes",
                buf.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_for(4096);
    assert!(h.first_kvm_run().is_some());
    assert!(h.pause());
    let paused_len = buf.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        buf.lock().unwrap().len(),
        paused_len,
        "guest ran while paused"
    );
    h.resume();
    wait_for(paused_len + 4096);
    h.kill();
    let r = runner.join().expect("run thread");
    assert!(matches!(r, Ok(ExitReason::Killed)), "{r:?}");
    assert!(!h.pause(), "pause after the end must say no");
}

#[test]
fn kill_before_run() {
    let _g = serial();
    let (c, _buf) = config(tiny_kernel(&spin_print()));
    let vm = Vm::new(c).expect("build VM");
    vm.handle().kill();
    assert!(matches!(vm.run(), Ok(ExitReason::Killed)));
}

fn err(c: VmConfig) -> String {
    match Vm::new(c) {
        Ok(_) => panic!("bad config accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_names_value_and_limit() {
    let _g = serial();
    let k = tiny_kernel(&print_then_reset(b"x"));

    let (mut c, _) = config(k.clone());
    c.vcpus = 0;
    let e = err(c);
    assert!(e.contains("0 vCPUs") && e.contains("1 to 32"), "{e}");

    let (mut c, _) = config(k.clone());
    c.vcpus = 33;
    let e = err(c);
    assert!(e.contains("33 vCPUs") && e.contains("1 to 32"), "{e}");

    let (mut c, _) = config(k.clone());
    c.memory_mib = 16;
    let e = err(c);
    assert!(e.contains("16 MiB") && e.contains("32"), "{e}");

    let (mut c, _) = config(k.clone());
    c.cmdline = "x".repeat(5000);
    let e = err(c);
    assert!(e.contains("5000") && e.contains("2047"), "{e}");

    let garbage = std::env::temp_dir().join(format!("embervm-garbage-{}", std::process::id()));
    std::fs::write(&garbage, vec![0x90u8; 4096]).unwrap();
    let (c, _) = config(garbage.clone());
    let e = err(c);
    assert!(
        e.contains("neither an x86-64 ELF vmlinux nor a bzImage"),
        "{e}"
    );

    // An initrd bigger than the guest: a sparse 100 MiB file for 64 MiB.
    let big = std::env::temp_dir().join(format!("embervm-bigrd-{}", std::process::id()));
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let (mut c, _) = config(k.clone());
    c.initrd = Some(big.clone());
    let e = err(c);
    assert!(e.contains("104857600 bytes") && e.contains("free"), "{e}");

    let (mut c, _) = config(k.clone());
    c.initrd = Some("/nonexistent/initrd".into());
    let e = err(c);
    assert!(e.contains("/nonexistent/initrd"), "{e}");

    let _ = std::fs::remove_file(garbage);
    let _ = std::fs::remove_file(big);
}

#[test]
fn kernel_bigger_than_memory() {
    let _g = serial();
    // One segment whose bss runs to 100 MiB, in a 64 MiB guest.
    let mut elf = std::fs::read(tiny_kernel(&print_then_reset(b"x"))).unwrap();
    elf[64 + 40..64 + 48].copy_from_slice(&(100u64 << 20).to_le_bytes());
    let p = std::env::temp_dir().join(format!("embervm-bigk-{}", std::process::id()));
    std::fs::write(&p, elf).unwrap();
    let (c, _) = config(p.clone());
    let e = err(c);
    assert!(e.contains("0x6500000") && e.contains("0x4000000"), "{e}");
    let _ = std::fs::remove_file(p);
}

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

fn count_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Resource counts of this process.
fn resources() -> (usize, usize, usize) {
    (
        count_dir("/proc/self/fd"),
        count_dir("/proc/self/task"),
        count_maps(),
    )
}

#[test]
fn twenty_vms_leave_nothing_behind() {
    let _g = serial();
    let k = tiny_kernel(&print_then_reset(b"leak\n"));
    let boot = |vcpus| {
        let (mut c, buf) = config(k.clone());
        c.vcpus = vcpus;
        let r = Vm::new(c).expect("build VM").run();
        assert!(matches!(r, Ok(ExitReason::Reset)), "{r:?}");
        assert_eq!(text(&buf), "leak\n");
    };
    // Warm up: the first VM installs the signal handler and lets libc
    // set up its thread-stack cache.
    boot(2);
    let before = resources();
    for i in 0..20 {
        boot(1 + i % 2);
    }
    let after = resources();
    assert_eq!(before, after, "(fds, threads, maps) before vs after 20 VMs");
}
