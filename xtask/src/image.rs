//! `cargo xtask image`: podlb's OCI image, built without any registry.
//!
//! 1. A root filesystem from Debian packages (mmdebstrap, the `essential` set with merged /usr,
//!    plus bpftool, iproute2, iptables and nftables; no docs, man pages, locales or gconv),
//!    imported into the local store as `localhost/podlb-base:<key>`, where the key is a hash of
//!    that recipe. It is made once per recipe.
//! 2. `buildah bud` of deploy/image/Containerfile on that base, with the release `podlb`
//!    (stripped) as the only file of the build context: `/usr/bin/podlb`, the entrypoint, and
//!    OCI labels (version, revision, the unstripped binary's sha256).
//!
//! The image is tagged `localhost/podlb:<version>` (what deploy/base names) and
//! `localhost/podlb:<version>-<git short sha>[-dirty]`. When the second tag already holds this
//! binary on this base, nothing is built. A lock file serializes concurrent runs (parallel
//! test processes build through here too).
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The image's repository, as deploy/base's `images:` names it.
pub const REPOSITORY: &str = "localhost/podlb";
const BASE_REPOSITORY: &str = "localhost/podlb-base";
const SUITE: &str = "bookworm";
/// What an operator runs inside the pod besides podlb: bpftool and ip to look at the datapath,
/// iptables and nftables for `podlb cleanup-kube-proxy`.
const INCLUDE: &[&str] = &["bpftool", "iproute2", "iptables", "nftables"];
/// Paths dpkg does not unpack.
const PATH_EXCLUDES: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    "/usr/share/bash-completion/*",
    "/usr/share/zsh/*",
    "/usr/lib/x86_64-linux-gnu/gconv/*",
];
/// The tools this needs; `cargo xtask setup` installs them.
const TOOLS: &[&str] = &["mmdebstrap", "podman", "buildah", "runc", "strip"];

/// Builds the image from `podlb` (a release binary); `root` is the workspace.
pub fn build(root: &Path, podlb: &Path, version: &str) -> Result<()> {
    let t = Instant::now();
    for tool in TOOLS {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            bail!(
                "{tool} is missing: run `cargo xtask setup` (it installs podman buildah runc \
                 mmdebstrap binutils)"
            );
        }
    }
    if !podlb.is_file() {
        bail!(
            "the podlb binary {} does not exist: run `cargo xtask build`",
            podlb.display()
        );
    }
    let work = root.join("target/image");
    fs::create_dir_all(&work).with_context(|| format!("mkdir -p {}", work.display()))?;
    let _lock = lock(&work.join(".lock"))?;

    let base = base_image(&work)?;
    let binary_sha = sha256(podlb)?;
    let (revision, short) = git_revision(root)?;
    let tags = vec![
        format!("{REPOSITORY}:{version}"),
        format!("{REPOSITORY}:{version}-{short}"),
    ];
    let labels = image_labels(&tags[1]);
    if labels.as_deref() == Some(format!("{binary_sha} {revision} {base}").as_str()) {
        run(Command::new("podman").args(["tag", &tags[1], &tags[0]]))?;
        eprintln!("image: {} is up to date", tags[1]);
    } else {
        let context = work.join("context");
        let _ = fs::remove_dir_all(&context);
        fs::create_dir_all(&context)?;
        fs::copy(podlb, context.join("podlb"))
            .with_context(|| format!("copying {} into the build context", podlb.display()))?;
        // The symbol table is a fifth of the binary; panics still name the file and line.
        run(Command::new("strip").arg(context.join("podlb")))?;
        let mut bud = Command::new("buildah");
        bud.args(["bud", "--runtime", "runc", "--pull=never", "--layers=false"])
            .arg("--file")
            .arg(root.join("deploy/image/Containerfile"))
            .arg(format!("--build-arg=BASE={base}"))
            .arg(format!("--build-arg=VERSION={version}"))
            .arg(format!("--build-arg=REVISION={revision}"))
            .arg(format!("--build-arg=BINARY_SHA256={binary_sha}"))
            .arg(format!("--label=io.podlb.base={base}"));
        for tag in &tags {
            bud.arg(format!("--tag={tag}"));
        }
        run(bud.arg(&context).env("BUILDAH_FORMAT", "oci"))?;
    }
    let size = output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &tags[0],
    ]))?;
    let size_bytes: u64 = size
        .trim()
        .parse()
        .with_context(|| format!("podman image inspect: size {size:?}"))?;
    eprintln!(
        "image: {} ({:.1} MB) in {:.1?}",
        tags.join(", "),
        size_bytes as f64 / 1e6,
        t.elapsed()
    );
    Ok(())
}

/// The base image for the current recipe, made when missing.
fn base_image(work: &Path) -> Result<String> {
    let args = mmdebstrap_args();
    let tag = format!("{BASE_REPOSITORY}:{:012x}", fnv1a(&args.join("\n")) >> 16);
    let exists = Command::new("podman")
        .args(["image", "exists", &tag])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if exists {
        return Ok(tag);
    }
    let t = Instant::now();
    let tar = work.join("rootfs.tar");
    let _ = fs::remove_file(&tar);
    eprintln!(
        "image: making the root filesystem (mmdebstrap {SUITE}: {})",
        INCLUDE.join(" ")
    );
    run(Command::new("mmdebstrap").args(&args).arg(&tar))?;
    run(Command::new("podman").arg("import").arg(&tar).arg(&tag))?;
    let _ = fs::remove_file(&tar);
    eprintln!("image: base {tag} made in {:.1?}", t.elapsed());
    Ok(tag)
}

/// mmdebstrap's arguments but the output file: the recipe the base image's key hashes.
fn mmdebstrap_args() -> Vec<String> {
    let mut args = vec![
        "--quiet".to_string(),
        "--variant=essential".to_string(),
        // Merged /usr without the usrmerge package (which would pull in perl).
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr".to_string(),
        format!("--include={}", INCLUDE.join(",")),
    ];
    args.extend(
        PATH_EXCLUDES
            .iter()
            .map(|p| format!("--dpkgopt=path-exclude={p}")),
    );
    args.push(SUITE.to_string());
    args
}

/// "binary-sha revision base" from the labels of `tag`, if it exists.
fn image_labels(tag: &str) -> Option<String> {
    let format = r#"{{index .Labels "io.podlb.binary.sha256"}} {{index .Labels "org.opencontainers.image.revision"}} {{index .Labels "io.podlb.base"}}"#;
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", format, tag])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// (full revision, short revision), both with `-dirty` when tracked files have changes.
fn git_revision(root: &Path) -> Result<(String, String)> {
    let git = |args: &[&str]| -> Result<String> {
        output(Command::new("git").current_dir(root).args(args)).map(|s| s.trim().to_string())
    };
    let full = git(&["rev-parse", "HEAD"])?;
    let short = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    let mark = if dirty { "-dirty" } else { "" };
    Ok((format!("{full}{mark}"), format!("{short}{mark}")))
}

fn sha256(path: &Path) -> Result<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("sha256sum {}: no output", path.display()))
}

/// 64-bit FNV-1a: a stable key for the base recipe (not a security hash).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An exclusive lock on `path`, held until the file is dropped.
fn lock(path: &Path) -> Result<File> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(f)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where `cargo xtask image` finds the binary when none is given.
pub fn default_binary(root: &Path) -> PathBuf {
    root.join("target/release/podlb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_key_follows_the_recipe() {
        let a = fnv1a(&mmdebstrap_args().join("\n"));
        assert_eq!(a, fnv1a(&mmdebstrap_args().join("\n")));
        assert_ne!(a, fnv1a(&mmdebstrap_args()[1..].join("\n")));
        // FNV-1a test vector.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
