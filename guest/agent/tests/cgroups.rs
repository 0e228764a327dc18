//! The cgroup path of exec on a host that has a writable cgroup v2 tree
//! (`$EMBERVM_TEST_CGROUP_ROOT`, or the hybrid `/sys/fs/cgroup/unified`).
//! Skipped, saying so, where there is none. Controllers are usually bound to
//! v1 on such hosts, so this covers joining, `cgroup.kill`, `cgroup.events`,
//! `cpu.stat` and removal, not the limits themselves (those need the guest).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{run, sh, Agent};

fn cgroup_root() -> Option<PathBuf> {
    let candidates = std::env::var_os("EMBERVM_TEST_CGROUP_ROOT")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/sys/fs/cgroup/unified")]);
    for c in candidates {
        let is_v2 = std::fs::read_to_string(c.join("cgroup.controllers")).is_ok();
        let probe = c.join(format!("embervm-test-{}", std::process::id()));
        if is_v2 && std::fs::create_dir(&probe).is_ok() {
            return Some(probe);
        }
    }
    None
}

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        if let Ok(dirs) = std::fs::read_dir(self.0.join("embervm")) {
            for d in dirs.filter_map(Result::ok) {
                let _ = std::fs::remove_dir(d.path());
            }
        }
        let _ = std::fs::remove_dir(self.0.join("embervm"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn exec_cgroups_kill_the_tree_and_are_removed() {
    let Some(root) = cgroup_root() else {
        eprintln!("SKIPPED: no writable cgroup v2 tree on this host");
        return;
    };
    let root = Root(root);
    let agent = Agent::start_with(&["--cgroup-root", &root.0.to_string_lossy()]);
    let mut c = agent.client();
    assert!(
        c.agent_hello().capabilities.cgroups,
        "{:?}",
        c.agent_hello()
    );

    // The child runs in its own exec cgroup.
    let out = run(&mut c, &sh("cat /proc/self/cgroup"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/embervm/exec-"), "{text}");

    // A process that leaves the process group (setsid) is still killed on
    // timeout: the whole cgroup goes.
    let mut req = sh("setsid sleep 60 & echo $!; sleep 60");
    req.timeout_ms = Some(3000);
    let out = run(&mut c, &req);
    assert!(out.exit.timed_out);
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let until = Instant::now() + Duration::from_secs(5);
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    while !gone() && Instant::now() < until {
        std::thread::yield_now();
    }
    assert!(gone(), "setsid escapee {pid} survived");

    // CPU time comes from cpu.stat of the whole cgroup.
    let out = run(
        &mut c,
        &sh("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"),
    );
    assert!(out.exit.cpu_user_us + out.exit.cpu_sys_us > 0);

    // Every exec cgroup is gone once its Exit arrived.
    let left: Vec<_> = std::fs::read_dir(root.0.join("embervm"))
        .expect("embervm dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(c);
    drop(agent);
}
