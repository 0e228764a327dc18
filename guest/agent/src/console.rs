//! Makes sure stdin, stdout and stderr are the console.
//!
//! The kernel gives init `/dev/console` as fds 0-2 only when the initramfs
//! has that node; when it is missing we mount devtmpfs early and open it.

use std::ffi::CString;

/// Point fds 0, 1 and 2 at `/dev/console` if they are not open.
pub fn ensure_stdio() {
    // SAFETY: fcntl(F_GETFD) on a small integer only queries the fd table.
    let stdout_open = unsafe { libc::fcntl(1, libc::F_GETFD) } != -1;
    if stdout_open {
        return;
    }
    let _ = std::fs::create_dir_all("/dev");
    let _ = crate::mounts::mount_one("devtmpfs", "/dev", "devtmpfs", 0, "");
    let path = CString::new("/dev/console").expect("static path has no NUL");
    // SAFETY: `path` is a valid NUL-terminated string; the returned fd is
    // checked before use.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return;
    }
    for target in 0..3 {
        if fd != target {
            // SAFETY: both fds are valid; dup2 replaces `target` atomically.
            unsafe { libc::dup2(fd, target) };
        }
    }
    if fd > 2 {
        // SAFETY: `fd` is ours and no longer needed after the dup2 calls.
        unsafe { libc::close(fd) };
    }
}
