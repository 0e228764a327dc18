//! The project's tools fail with one clear error that names the fix, and the
//! image builder turns a user's directory or tar archive into an initramfs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("embervm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn kvm_host_without_dev_kvm_names_the_fix() {
    let out = Command::new(repo().join("tests/kvm-host/run"))
        .args(["true"])
        .env_remove("EMBERVM_IN_KVM_HOST")
        .env("EMBERVM_KVM_HOST", "direct")
        .env("EMBERVM_DEV_KVM", "/nonexistent/kvm")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/kvm does not exist"), "{err}");
    assert!(err.contains("modprobe kvm_intel"), "{err}");
}

fn build_image(from: &Path, out: &Path) -> Output {
    Command::new(repo().join("guest/image/build.sh"))
        .arg("--agent")
        .arg("/bin/true")
        .arg("--from")
        .arg(from)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn image_from_a_missing_or_bad_source_is_refused() {
    let d = scratch("image-bad");
    let out = build_image(&d.join("missing"), &d.join("i.cpio.gz"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    let not_tar = d.join("not.tar");
    std::fs::write(&not_tar, b"plain text, not an archive").unwrap();
    let out = build_image(&not_tar, &d.join("i.cpio.gz"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("neither a directory nor a tar archive"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("i.cpio.gz").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

fn cpio_list(image: &Path) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | cpio -it --quiet", image.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn image_from_a_directory_and_a_tar_adds_the_agent_reproducibly() {
    let d = scratch("image-dir");
    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hello"), b"hi\n").unwrap();
    std::fs::write(root.join("init"), b"#!/bin/sh\n").unwrap();

    let a = d.join("a.cpio.gz");
    let out = build_image(&root, &a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("MiB uncompressed"),
        "{}",
        stderr(&out)
    );
    let names = cpio_list(&a);
    for want in ["init", "etc/hello", "dev/console", "proc", "tmp"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");

    // The same input gives the same bytes; a tar of it gives the same image.
    let b = d.join("b.cpio.gz");
    assert!(build_image(&root, &b).status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let tar = d.join("root.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let c = d.join("c.cpio.gz");
    let out = build_image(&tar, &c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cpio_list(&c), names);
    std::fs::remove_dir_all(&d).unwrap();
}
