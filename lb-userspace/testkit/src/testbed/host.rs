//! What the test bed does on the host, below the namespaces: the root check, names unique per
//! process and call, scratch directories, running commands, waiting for a condition, and the removal of what dead
//! test processes left behind.
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Directory under which [`BpfRoot`](super::BpfRoot) mounts its bpffs instances.
pub const BPF_TEST_DIR: &str = "/run/podlb-test";

const NAME_PREFIX: &str = "plb";

/// `plb{pid}-{counter}`: unique within the machine for as long as this process lives.
pub(crate) fn unique_prefix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}-{n}", std::process::id())
}

/// A short unique name such as `plb1234-7-pod0` (process id + per-process counter + role).
pub fn unique_name(role: &str) -> String {
    format!("{}-{role}", unique_prefix())
}

/// A scratch directory, `$TMPDIR/podlb-test/<unique name>`, removed with what it holds on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(role: &str) -> TempDir {
        let dir = std::env::temp_dir()
            .join("podlb-test")
            .join(unique_name(role));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes the file `name` in the directory with `text`; returns its path.
    pub fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Fails with a clear message unless running as root (the test bed needs it; never skip).
pub fn require_root() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the podlb test bed needs root (network namespaces, veths, bpffs mounts); run as root"
        );
    }
    Ok(())
}

/// Polls `cond` every `poll` until it returns true (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(poll);
    }
}

/// Retries `f` every 50 ms until it returns `Ok` or `timeout` passes; then returns the last error.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs a command, returns its stdout; the error carries the command line, status and stderr.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {desc}"))?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin
                .map(|s| format!("\nbatch input:\n{s}"))
                .unwrap_or_default()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Serialises `ip netns add/del` within this process: concurrent first-time setup of the
/// /run/netns shared mount by iproute2 is racy.
pub(crate) static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Removes leftovers (namespaces and bpffs mounts named `plb{pid}-…`) of test processes that died
/// without cleaning up. Runs once per process, automatically, before the first namespace or bpf
/// root is created.
pub fn cleanup_stale() {
    fn dead_owner(name: &str) -> bool {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
    }
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead_owner(&name) {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let _ = run(Command::new("ip").args(["netns", "del", &name]), None);
        }
    }
    for entry in fs::read_dir(BPF_TEST_DIR).into_iter().flatten().flatten() {
        if dead_owner(&entry.file_name().to_string_lossy()) {
            unmount_and_remove(&entry.path());
        }
    }
}

pub(crate) fn cleanup_stale_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(cleanup_stale);
}

/// Unmounts the bpffs at `path` (lazily) and removes the directory.
pub(crate) fn unmount_and_remove(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir(path);
}
