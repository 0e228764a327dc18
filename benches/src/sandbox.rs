//! `sandbox`: the `Sandbox` API end to end on the default guest.
//!
//! Figures:
//! - `Sandbox::new` → first exec result: boot, agent hello, sync, and one
//!   `true` (a few boots; this still cold-boots, snapshots come later);
//! - exec round trip of `true` on an open sandbox (pooled connection),
//!   p50/p99, and an agent ping for the transport alone;
//! - host → guest and guest → host throughput over one connection:
//!   `write_file` and `read_file` of 64 MiB (one connection, 64 KiB frames).

use std::time::Instant;

use embervm_core::{Command, Sandbox, SandboxConfig};

use crate::stats::{ms, pct, row};

const BOOTS: usize = 3;
const BULK: usize = 64 * 1024 * 1024;

fn config() -> SandboxConfig {
    SandboxConfig::default().memory_mib(512)
}

/// Run the benchmark with `runs` exec round trips.
pub fn run(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut first = Vec::new();
    let mut boot_only = Vec::new();
    for _ in 0..BOOTS {
        let t = Instant::now();
        let sb = Sandbox::new(config())?;
        let o = sb.exec(&Command::new(["true"]))?;
        first.push(ms(t.elapsed()));
        boot_only.push(ms(sb.boot_time()));
        if !o.success() {
            return Err(format!("`true` failed: {o:?}").into());
        }
    }

    let sb = Sandbox::new(config())?;
    let cmd = Command::new(["true"]);
    // Warm the connection pool and the page cache of /bin/true.
    for _ in 0..3 {
        sb.exec(&cmd)?;
    }
    let mut rtt = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        sb.exec(&cmd)?;
        rtt.push(ms(t.elapsed()));
    }
    let mut ping = Vec::with_capacity(runs);
    for _ in 0..runs {
        ping.push(ms(sb.ping()?));
    }

    let data: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    let mut up = Vec::new();
    let mut down = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        sb.write_file("/tmp/bench.bin", &data)?;
        up.push(mibps(t.elapsed()));
        let t = Instant::now();
        let back = sb.read_file("/tmp/bench.bin")?;
        down.push(mibps(t.elapsed()));
        if back.len() != data.len() {
            return Err("read_file returned a different length".into());
        }
    }
    sb.close();

    println!("| sandbox | runs | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|");
    println!("{}", row("Sandbox::new → first exec result", &mut first));
    println!(
        "{}",
        row("Sandbox::new (boot + hello + sync)", &mut boot_only)
    );
    println!("{}", row("exec `true` round trip", &mut rtt));
    println!("{}", row("agent ping round trip", &mut ping));
    println!();
    println!("| throughput, one connection, 64 MiB | runs | p50 (MiB/s) | best (MiB/s) |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("host → guest (write_file)", &mut up),
        ("guest → host (read_file)", &mut down),
    ] {
        let best = v.iter().cloned().fold(f64::MIN, f64::max);
        println!(
            "| {name} | {} | {:.1} | {:.1} |",
            v.len(),
            pct(v, 50.0),
            best
        );
    }
    Ok(())
}

fn mibps(d: std::time::Duration) -> f64 {
    (BULK as f64 / (1024.0 * 1024.0)) / d.as_secs_f64()
}
