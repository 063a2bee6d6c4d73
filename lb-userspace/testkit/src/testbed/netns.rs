//! Named network namespaces ([`Netns`]): created with IPv6 on and no duplicate address
//! detection, entered by a thread ([`Netns::run_in`]) or a command ([`Netns::exec`]), configured
//! with `ip -batch`, deleted on drop.
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use anyhow::{Context, Result};

use super::host::{cleanup_stale_once, require_root, run, unique_name, NETNS_LOCK};
/// Runs several `ip` commands (one per line) in namespace `ns` with `ip -n NS -batch -`.
pub(crate) fn ip_batch(ns: &Netns, lines: &[String]) -> Result<()> {
    let input = lines.join("\n") + "\n";
    run(
        Command::new("ip").args(["-n", ns.name(), "-batch", "-"]),
        Some(&input),
    )?;
    Ok(())
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `unique_name(role)` with `lo` up.
    pub fn new(role: &str) -> Result<Netns> {
        Self::with_name(unique_name(role))
    }

    pub(crate) fn with_name(name: String) -> Result<Netns> {
        require_root()?;
        cleanup_stale_once();
        {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run(Command::new("ip").args(["netns", "add", &name]), None)?;
        }
        let ns = Netns { name };
        // IPv6 on, and no duplicate address detection for the interfaces created from now on
        // (`default`) or already there (`all`): addresses are usable at once.
        ns.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ])?;
        run(
            Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]),
            None,
        )?;
        Ok(ns)
    }

    /// The namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`: open it for `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `args` inside the namespace (`ip netns exec`; note: that also remounts /sys) and
    /// returns its stdout; a failure carries the exit status and stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
            None,
        )
        .with_context(|| format!("in netns {}", self.name))
    }

    /// Runs `f` on a fresh OS thread that has entered this network namespace (mount namespace
    /// unchanged) and returns its result. Sockets created in `f` belong to the namespace and may
    /// be used from any thread afterwards. Panics if the namespace cannot be entered; a panic in
    /// `f` is propagated.
    pub fn run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.try_run_in(f).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Netns::run_in`], but failing to enter the namespace is an error, not a panic.
    pub fn try_run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let file =
            File::open(self.path()).with_context(|| format!("opening netns {}", self.name))?;
        let joined = thread::scope(|s| {
            s.spawn(move || {
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(r) => r.with_context(|| format!("setns into netns {}", self.name)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Writes sysctls (`net.ipv4.ip_forward` style keys) from inside the namespace.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.try_run_in(|| -> Result<()> {
            for (key, value) in settings {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                fs::write(&path, value).with_context(|| format!("sysctl {key}={value}"))?;
            }
            Ok(())
        })?
        .with_context(|| format!("in netns {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]), None);
    }
}

/// A pod, client or bridge namespace (IPv6 on, no DAD, like every [`Netns`]).
pub(crate) fn new_leaf_ns(name: String) -> Result<Netns> {
    Netns::with_name(name)
}
