//! Who user code runs as, and its environment.
//!
//! There is no NSS in the static agent (no `getpwnam`): the guest knows two
//! users by number, root (0, `/root`) and the sandbox user
//! ([`DEFAULT_UID`], `user`, [`DEFAULT_HOME`]); any other uid runs with
//! HOME `/tmp`. A non-root agent (tests on a host) cannot switch users and
//! runs code as itself.

use embervm_protocol::{ErrorKind, ErrorReply, UserSpec, DEFAULT_GID, DEFAULT_HOME, DEFAULT_UID};

/// The base `PATH` of user code.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the server picks a user.
#[derive(Debug, Clone)]
pub struct UserPolicy {
    /// The agent is root and may run code as anyone.
    pub can_switch: bool,
    /// The user when a request names none.
    pub default: UserSpec,
    /// Home of the agent's own user (used when running code as itself).
    pub self_home: String,
}

impl UserPolicy {
    /// The policy of the guest: root agent, sandbox user by default.
    pub fn guest() -> UserPolicy {
        UserPolicy {
            can_switch: true,
            default: UserSpec {
                uid: DEFAULT_UID,
                gid: DEFAULT_GID,
            },
            self_home: "/root".into(),
        }
    }

    /// The policy of a test server: code runs as the agent's own user
    /// unless `default` says otherwise (and the agent is root).
    pub fn host(default: Option<UserSpec>) -> UserPolicy {
        let me = current();
        UserPolicy {
            // SAFETY: geteuid has no preconditions.
            can_switch: unsafe { libc::geteuid() } == 0,
            default: default.unwrap_or(me),
            self_home: std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()),
        }
    }
}

/// The agent's own uid and gid.
pub fn current() -> UserSpec {
    // SAFETY: getuid/getgid have no preconditions.
    unsafe {
        UserSpec {
            uid: libc::getuid(),
            gid: libc::getgid(),
        }
    }
}

/// The resolved identity of one exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// uid and gid.
    pub user: UserSpec,
    /// Login name for USER/LOGNAME.
    pub name: String,
    /// HOME.
    pub home: String,
    /// Whether the child must switch to `user` (false: it runs as the agent).
    pub switch: bool,
}

/// Resolve the requested user against the policy.
pub fn resolve(requested: Option<UserSpec>, policy: &UserPolicy) -> Result<Identity, ErrorReply> {
    let user = requested.unwrap_or(policy.default);
    let me = current();
    if user == me {
        let (name, home) = known(user.uid).unwrap_or(("agent", policy.self_home.as_str()));
        return Ok(Identity {
            user,
            name: name.into(),
            home: home.into(),
            switch: false,
        });
    }
    if !policy.can_switch {
        return Err(ErrorReply::new(
            ErrorKind::PermissionDenied,
            format!(
                "the agent runs as uid {} without root and cannot run code as uid {}",
                me.uid, user.uid
            ),
        ));
    }
    let (name, home) = known(user.uid).unwrap_or(("sandbox", "/tmp"));
    Ok(Identity {
        user,
        name: name.into(),
        home: home.into(),
        switch: true,
    })
}

fn known(uid: u32) -> Option<(&'static str, &'static str)> {
    match uid {
        0 => Some(("root", "/root")),
        DEFAULT_UID => Some(("user", DEFAULT_HOME)),
        _ => None,
    }
}

/// The environment of user code: the base variables, then the request's
/// (which win). Keys must be non-empty without `=`; nothing may hold NUL.
pub fn environment(id: &Identity, extra: &[(String, String)]) -> Result<Vec<String>, ErrorReply> {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), BASE_PATH.into()),
        ("HOME".into(), id.home.clone()),
        ("USER".into(), id.name.clone()),
        ("LOGNAME".into(), id.name.clone()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for (k, v) in extra {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ErrorReply::new(
                ErrorKind::BadRequest,
                format!("invalid environment variable {k:?}"),
            ));
        }
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The value of `key` in a `KEY=VALUE` list.
pub fn lookup<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_env_overrides_base() {
        let id = Identity {
            user: UserSpec {
                uid: 1000,
                gid: 1000,
            },
            name: "user".into(),
            home: "/home/user".into(),
            switch: true,
        };
        let env = environment(
            &id,
            &[("PATH".into(), "/x".into()), ("A".into(), "b=c".into())],
        )
        .expect("valid env");
        assert_eq!(lookup(&env, "PATH"), Some("/x"));
        assert_eq!(lookup(&env, "A"), Some("b=c"));
        assert_eq!(lookup(&env, "HOME"), Some("/home/user"));
        assert!(environment(&id, &[("A=B".into(), "x".into())]).is_err());
        assert!(environment(&id, &[("".into(), "x".into())]).is_err());
    }

    #[test]
    fn non_root_cannot_switch() {
        let me = current();
        let policy = UserPolicy {
            can_switch: false,
            default: me,
            self_home: "/tmp".into(),
        };
        let id = resolve(None, &policy).expect("self is fine");
        assert!(!id.switch);
        let other = UserSpec {
            uid: me.uid.wrapping_add(1),
            gid: me.gid,
        };
        let err = resolve(Some(other), &policy).expect_err("cannot switch");
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
    }
}
