//! Boot options the host passes on the kernel command line.
//!
//! `embervm.action=idle` (default) keeps PID 1 serving; `embervm.action=reboot`
//! reboots right after the ready line (the VMM sees the reset or, with
//! `reboot=t`, a triple fault); `embervm.action=run` runs the command in
//! `embervm.run=` (words joined by commas) on the console, then reboots.

/// What PID 1 does after it is ready.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Stay up and serve.
    Idle,
    /// Reboot at once (`reboot -f`).
    Reboot,
    /// Run this argv, then reboot.
    Run(Vec<String>),
}

/// The options parsed from the kernel command line.
#[derive(Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// What to do after the ready line.
    pub action: Action,
}

impl BootOptions {
    /// Parse `/proc/cmdline`; unreadable or absent options mean defaults.
    pub fn from_proc() -> BootOptions {
        // /proc is not mounted yet at this point on a fresh boot.
        let _ = std::fs::create_dir_all("/proc");
        crate::mounts::mount_one("proc", "/proc", "proc", 0, "").ok();
        let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        BootOptions::parse(&text)
    }

    /// Parse a kernel command line.
    pub fn parse(cmdline: &str) -> BootOptions {
        let mut action = "idle";
        let mut run = None;
        for word in cmdline.split_whitespace() {
            if let Some(v) = word.strip_prefix("embervm.action=") {
                action = v;
            } else if let Some(v) = word.strip_prefix("embervm.run=") {
                run = Some(v.split(',').map(str::to_owned).collect::<Vec<_>>());
            }
        }
        let action = match (action, run) {
            ("reboot", _) => Action::Reboot,
            ("run", Some(argv)) => Action::Run(argv),
            _ => Action::Idle,
        };
        BootOptions { action }
    }
}

/// Flush the console and reboot, as `reboot -f` does.
pub fn reboot_now() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    // SAFETY: reboot(RB_AUTOBOOT) has no memory arguments; as PID 1 with
    // CAP_SYS_BOOT it does not return on success.
    let rc = unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    eprintln!(
        "embervm-agent: reboot failed: {}",
        std::io::Error::last_os_error()
    );
    let _ = rc;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_idle() {
        assert_eq!(
            BootOptions::parse("console=ttyS0 quiet").action,
            Action::Idle
        );
        assert_eq!(BootOptions::parse("").action, Action::Idle);
    }

    #[test]
    fn reboot_and_run() {
        assert_eq!(
            BootOptions::parse("embervm.action=reboot").action,
            Action::Reboot
        );
        let o = BootOptions::parse("a embervm.action=run embervm.run=/bin/echo,hi b");
        assert_eq!(o.action, Action::Run(vec!["/bin/echo".into(), "hi".into()]));
        // run without a command stays idle rather than guessing
        assert_eq!(
            BootOptions::parse("embervm.action=run").action,
            Action::Idle
        );
        assert_eq!(
            BootOptions::parse("embervm.action=bogus").action,
            Action::Idle
        );
    }
}
