//! What runs beside the namespaces: a private bpffs per agent ([`BpfRoot`]) and child
//! processes with only their network namespace switched ([`Process`], [`spawn_in_netns`]),
//! killed and reaped on drop, their output kept in a log file.
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use super::host::{
    cleanup_stale_once, require_root, unique_name, unmount_and_remove, wait_until, BPF_TEST_DIR,
};
use super::netns::Netns;

/// A private bpffs mounted on a unique directory under /run/podlb-test (outside /sys, which
/// `ip netns exec` remounts). Drop unmounts it (lazily) and removes the directory.
#[derive(Debug)]
pub struct BpfRoot {
    path: PathBuf,
}

impl BpfRoot {
    pub fn new() -> Result<BpfRoot> {
        require_root()?;
        cleanup_stale_once();
        let path = Path::new(BPF_TEST_DIR).join(unique_name("bpf"));
        fs::create_dir_all(&path).with_context(|| format!("mkdir -p {}", path.display()))?;
        let root = BpfRoot { path };
        podlb::datapath::mount_bpffs(&root.path)
            .with_context(|| format!("mount -t bpf bpf {}", root.path.display()))?;
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfRoot {
    fn drop(&mut self) {
        unmount_and_remove(&self.path);
    }
}

/// A child process running in a network namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

/// Spawns `cmd` with only its network namespace switched to `ns` (it keeps the caller's mount
/// namespace, so it sees the caller's bpffs mounts). stdin is /dev/null; stdout and stderr go to
/// a log file, see [`Process::log`].
pub fn spawn_in_netns(ns: &Netns, cmd: Command) -> io::Result<Process> {
    spawn_in_netns_path(&ns.path(), cmd)
}

/// [`spawn_in_netns`] for a namespace given by its path (`/run/netns/NAME`).
pub fn spawn_in_netns_path(ns: &Path, mut cmd: Command) -> io::Result<Process> {
    let nsfile = File::open(ns)?; // opened before fork; O_CLOEXEC, so the child won't keep it
    let fd = nsfile.as_raw_fd();
    let dir = std::env::temp_dir().join("podlb-test");
    fs::create_dir_all(&dir)?;
    let log_path = dir.join(format!("{}.log", unique_name("proc")));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setns is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        });
    }
    let child = cmd.spawn()?;
    drop(nsfile);
    Ok(Process {
        child,
        log_path,
        status: None,
    })
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Waits up to `d` for the process to exit.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        wait_until(d, Duration::from_millis(10), || self.try_wait().is_some());
        self.status
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.try_wait() {
            return s;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        *self.status.insert(status)
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(s) = self.try_wait() {
            return s;
        }
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        match self.wait_timeout(Duration::from_secs(5)) {
            Some(s) => s,
            None => self.kill9(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(8192)..];
            eprintln!(
                "--- log of pid {} ({}), tail ---\n{}\n--- end of log ---",
                self.child.id(),
                self.log_path.display(),
                tail.trim_end()
            );
        } else {
            let _ = fs::remove_file(&self.log_path);
        }
    }
}
