//! The agent's command server: vsock port 1024 in the guest, a Unix socket
//! in host-side tests.
//!
//! [`serve`] accepts connections and gives each its own thread
//! ([`conn::serve`]); a connection exchanges hellos and then handles one
//! request at a time: exec ([`exec`], with [`spawn`], [`cgroup`] and
//! [`user`]), files ([`files`]), sync ([`sync`]) and ping. What the server
//! can enforce is fixed at start in a [`Ctx`]: PID 1 in the guest sets up
//! cgroups, the sandbox user and may set the clock; a test server on a host
//! (`--serve-unix`) leaves the host alone, runs code as its own user unless
//! told otherwise, and says what it does not enforce in its hello.

pub mod cgroup;
pub mod conn;
pub mod exec;
pub mod files;
pub mod listener;
pub mod spawn;
pub mod sync;
pub mod user;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use embervm_protocol::{
    Capabilities, ErrorKind, ErrorReply, Hello, Response, Role, UserSpec, DEFAULT_GID,
    DEFAULT_HOME, DEFAULT_UID,
};

use crate::reaper::Reaper;
use cgroup::CgroupRoot;
use listener::Listener;
use user::UserPolicy;

/// The agent's software version, sent in its hello.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest wait for the host's hello on a new connection; a connection that
/// sends none by then is closed (it would otherwise hold a thread and one of
/// the [`MAX_CONNECTIONS`] slots forever).
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections served at once; more are answered `Busy` and closed.
pub const MAX_CONNECTIONS: usize = 64;

/// What every connection shares.
pub struct Ctx {
    /// Collects child exit statuses.
    pub reaper: Reaper,
    /// Who user code runs as.
    pub users: UserPolicy,
    /// The exec cgroup parent, when cgroups are in use.
    pub cgroups: Option<CgroupRoot>,
    /// `Sync` may set the clock and reseed the RNG.
    pub sync_allowed: bool,
    /// The hello sent on every connection.
    pub hello: Hello,
    /// Longest wait for the host's hello ([`HELLO_TIMEOUT`]).
    pub hello_timeout: std::time::Duration,
    active: AtomicUsize,
}

fn hello(
    users: &UserPolicy,
    cgroups: &Option<CgroupRoot>,
    sync: bool,
    notes: Vec<String>,
) -> Hello {
    let caps = Capabilities {
        cgroups: cgroups.is_some(),
        switch_user: users.can_switch,
        sync,
        notes: notes.join("; "),
    };
    Hello::new(Role::Agent, AGENT_VERSION, caps)
}

impl Ctx {
    /// PID 1 in the guest: cgroups under `/sys/fs/cgroup`, the sandbox user,
    /// real `Sync`.
    pub fn guest(reaper: Reaper) -> Ctx {
        let mut notes = Vec::new();
        if let Err(e) = prepare_user_home() {
            notes.push(format!("cannot prepare {DEFAULT_HOME}: {e}"));
        }
        let cgroups = match CgroupRoot::setup(Path::new("/sys/fs/cgroup"), true) {
            Ok(c) => {
                if !(c.controllers.memory && c.controllers.pids && c.controllers.cpu) {
                    notes.push(format!(
                        "some cgroup controllers are missing: {:?}",
                        c.controllers
                    ));
                }
                Some(c)
            }
            Err(e) => {
                notes.push(format!("no cgroups, limits are not enforced: {e}"));
                None
            }
        };
        let users = UserPolicy::guest();
        Ctx {
            hello: hello(&users, &cgroups, true, notes),
            reaper,
            users,
            cgroups,
            sync_allowed: true,
            hello_timeout: HELLO_TIMEOUT,
            active: AtomicUsize::new(0),
        }
    }

    /// A test server on a host: no clock or RNG changes; cgroups only under
    /// an explicit `cgroup_root`; code runs as `default_user` or the agent.
    pub fn host(reaper: Reaper, default_user: Option<UserSpec>, cgroup_root: Option<&Path>) -> Ctx {
        let mut notes = vec!["test server: Sync does not touch the host clock or RNG".to_owned()];
        let users = UserPolicy::host(default_user);
        if !users.can_switch {
            notes.push("not root: code runs as the agent's own user".into());
        }
        let cgroups = match cgroup_root {
            Some(root) => match CgroupRoot::setup(root, false) {
                Ok(c) => Some(c),
                Err(e) => {
                    notes.push(format!("no cgroups under {}: {e}", root.display()));
                    None
                }
            },
            None => None,
        };
        if cgroups.is_none() {
            notes.push(
                "no cgroups: memory/pids/cpu limits are not enforced, timeouts kill the process group"
                    .into(),
            );
        }
        Ctx {
            hello: hello(&users, &cgroups, false, notes),
            reaper,
            users,
            cgroups,
            sync_allowed: false,
            hello_timeout: HELLO_TIMEOUT,
            active: AtomicUsize::new(0),
        }
    }
}

/// Make the sandbox user's home and its passwd/group entries (the image
/// may lack them; tools like `whoami` and `python -m site` want them).
fn prepare_user_home() -> std::io::Result<()> {
    std::fs::create_dir_all(DEFAULT_HOME)?;
    std::os::unix::fs::chown(DEFAULT_HOME, Some(DEFAULT_UID), Some(DEFAULT_GID))?;
    let entries = [
        (
            "/etc/passwd",
            format!("user:x:{DEFAULT_UID}:{DEFAULT_GID}:sandbox user:{DEFAULT_HOME}:/bin/sh\n"),
            "root:x:0:0:root:/root:/bin/sh\n",
        ),
        (
            "/etc/group",
            format!("user:x:{DEFAULT_GID}:\n"),
            "root:x:0:\n",
        ),
    ];
    for (path, line, root_line) in entries {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut add = String::new();
        if !text.lines().any(|l| l.starts_with("root:")) {
            add.push_str(root_line);
        }
        if !text.lines().any(|l| l.starts_with("user:")) {
            add.push_str(&line);
        }
        if !add.is_empty() {
            std::fs::create_dir_all("/etc")?;
            let mut new = text;
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&add);
            std::fs::write(path, new)?;
        }
    }
    Ok(())
}

/// Decrements the active connection count when a connection ends.
struct Slot(Arc<Ctx>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept connections forever, one thread each.
pub fn serve(listener: Listener, ctx: Arc<Ctx>) {
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("embervm-agent: accept: {e}");
                // Back off on resource exhaustion (EMFILE) instead of spinning.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if ctx.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            ctx.active.fetch_sub(1, Ordering::SeqCst);
            let sink = conn::Sink::new(conn.writer);
            sink.send(&ctx.hello);
            sink.send(&Response::Error(ErrorReply::new(
                ErrorKind::Busy,
                format!("the agent already serves {MAX_CONNECTIONS} connections"),
            )));
            continue;
        }
        let slot = Slot(ctx.clone());
        let c = ctx.clone();
        let started = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                let _slot = slot;
                conn::serve(conn.reader, conn.writer, conn.fd, c);
            });
        if let Err(e) = started {
            eprintln!("embervm-agent: cannot start a connection thread: {e}");
        }
    }
}
