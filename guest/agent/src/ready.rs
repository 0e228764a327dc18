//! The ready marker: one console line the host waits for.
//!
//! `EMBERVM_READY version=<v> cpus=<online cpus> mem_total_kib=<MemTotal>`
//! tells the host that PID 1 is up and what the guest sees of its vCPUs and
//! memory, so a boot test can check both against what it configured.

/// The text every ready line starts with.
pub const MARKER: &str = "EMBERVM_READY";

/// Print the ready line on the console.
pub fn announce() {
    // SAFETY: sysconf only reads a system value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total_kib(&s))
        .unwrap_or(0);
    println!(
        "{MARKER} version={} cpus={cpus} mem_total_kib={mem}",
        env!("CARGO_PKG_VERSION")
    );
}

/// `MemTotal` in KiB from the text of `/proc/meminfo`.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mem_total() {
        let s = "MemFree: 10 kB\nMemTotal:     123456 kB\n";
        assert_eq!(mem_total_kib(s), Some(123456));
        assert_eq!(mem_total_kib("nothing"), None);
    }
}
