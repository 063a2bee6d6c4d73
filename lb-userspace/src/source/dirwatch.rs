//! Wake-ups when a directory's entries change (inotify), for the `manifests` source
//! ([`super::manifests`]): a file written, renamed in or out, created or deleted wakes the agent
//! at once instead of at its next 200 ms poll. The poll stays, as the fallback (and for what inotify cannot see: changes
//! behind a symlinked file, a directory that does not exist yet).
//!
//! One thread per watch blocks in `poll()` on the inotify descriptor (and an eventfd that
//! stops it), reads the events and calls [`Notify::notify_one`] once per batch that holds one
//! worth a rescan:
//! - `IN_MOVED_TO`, `IN_MOVED_FROM`, `IN_DELETE`: always (a manifest renamed in or away, or a
//!   ConfigMap-style `..data` symlink swapped);
//! - `IN_CLOSE_WRITE`: for the names the watch's owner reads only (its name rule, given to
//!   [`DirWatch::start`]; the manifests source passes its own: `*.yaml`/`*.yml`, not hidden):
//!   a hidden temp file only counts when it is renamed in;
//! - `IN_CREATE`: unless the new entry is a regular file with one link, i.e. being written:
//!   its `IN_CLOSE_WRITE` follows, and a rescan now would read it half-written (links,
//!   symlinks and directories have no `IN_CLOSE_WRITE`);
//! - a queue overflow.
//!
//! The thread also wakes the agent whenever the watch starts: at first, and after the directory
//! went away (`IN_IGNORED`) or could not be watched, which it tries again every second.
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tokio::sync::Notify;

const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_CREATE;

/// How often a directory that cannot be watched is tried again (ms).
const RETRY_MS: i32 = 1000;

/// A watch on one directory; stops its thread on drop.
pub struct DirWatch {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl DirWatch {
    /// Watches `dir` and calls `notify.notify_one()` when its entries change; a file written
    /// in place counts only when `wanted(name)`. Fails only when inotify itself is
    /// unavailable; a directory that is missing is watched once it exists.
    pub fn start(
        dir: &Path,
        wanted: fn(&OsStr) -> bool,
        notify: Arc<Notify>,
    ) -> io::Result<DirWatch> {
        let fd = cvt(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stop = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let watcher = Watcher {
            fd,
            stop: stop.try_clone()?,
            dir: dir.to_path_buf(),
            path,
            wanted,
            notify,
        };
        let thread = thread::Builder::new()
            .name("manifests-inotify".into())
            .spawn(move || watcher.run())?;
        Ok(DirWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Watcher {
    fd: OwnedFd,
    stop: OwnedFd,
    dir: PathBuf,
    path: CString,
    /// The names whose `IN_CLOSE_WRITE` counts.
    wanted: fn(&OsStr) -> bool,
    notify: Arc<Notify>,
}

/// Room for many events per read (each is 16 bytes and its name, at most NAME_MAX + 1).
#[repr(C, align(8))]
struct Buf([u8; 64 * 1024]);

impl Watcher {
    fn run(self) {
        let mut buf = Box::new(Buf([0; 64 * 1024]));
        let mut wd: Option<i32> = None;
        let mut failed: Option<String> = None;
        loop {
            if wd.is_none() {
                match cvt(unsafe {
                    libc::inotify_add_watch(self.fd.as_raw_fd(), self.path.as_ptr(), MASK)
                }) {
                    Ok(w) => {
                        wd = Some(w);
                        if failed.take().is_some() {
                            tracing::info!(dir = %self.dir.display(), "watching the manifests directory");
                        }
                        // Whatever changed before the watch (re)started.
                        self.notify.notify_one();
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if failed.as_ref() != Some(&e) {
                            tracing::debug!(dir = %self.dir.display(), "cannot watch (polling): {e}");
                        }
                        failed = Some(e);
                    }
                }
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = if wd.is_some() { -1 } else { RETRY_MS };
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("manifests directory watch stopped (polling only): {e}");
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            if fds[0].revents == 0 {
                continue;
            }
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), buf.0.as_mut_ptr().cast(), buf.0.len()) };
            if n <= 0 {
                continue;
            }
            let mut wake = false;
            for (mask, ev_wd, name) in events(&buf.0[..n as usize]) {
                if mask & libc::IN_IGNORED != 0 && Some(ev_wd) == wd {
                    // The directory is gone (or unmounted): watch it again once it is back.
                    wd = None;
                    failed = Some("removed".into());
                }
                wake |= self.worth_a_rescan(mask, name);
            }
            if wake {
                self.notify.notify_one();
            }
        }
    }

    fn worth_a_rescan(&self, mask: u32, name: &OsStr) -> bool {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            return true;
        }
        if mask & (libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
            return true;
        }
        if mask & libc::IN_CLOSE_WRITE != 0 && (self.wanted)(name) {
            return true;
        }
        if mask & libc::IN_CREATE != 0 {
            if mask & libc::IN_ISDIR != 0 {
                return true;
            }
            return match std::fs::symlink_metadata(self.dir.join(name)) {
                // Being written: IN_CLOSE_WRITE follows.
                Ok(m) => !(m.file_type().is_file() && m.nlink() == 1),
                Err(_) => true,
            };
        }
        false
    }
}

/// (mask, wd, name) of each event in `buf` (what one read returned).
fn events(buf: &[u8]) -> impl Iterator<Item = (u32, i32, &OsStr)> {
    let header = size_of::<libc::inotify_event>();
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + header > buf.len() {
            return None;
        }
        let ev: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
        let end = (at + header + ev.len as usize).min(buf.len());
        let name = &buf[at + header..end];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        at = end;
        Some((ev.mask, ev.wd, OsStr::from_bytes(name)))
    })
}

fn cvt(r: i32) -> io::Result<i32> {
    match r {
        -1 => Err(io::Error::last_os_error()),
        r => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::super::manifests::is_manifest_name;
    use super::*;
    use std::fs;
    use std::time::Duration;

    /// Waits for a wake-up: true if one came within `within`.
    fn woken(rt: &tokio::runtime::Runtime, notify: &Notify, within: Duration) -> bool {
        rt.block_on(async { tokio::time::timeout(within, notify.notified()).await })
            .is_ok()
    }

    #[test]
    fn wakes_on_manifest_changes_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("podlb-dirwatch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let notify = Arc::new(Notify::new());
        // The directory does not exist yet: watched (and a wake-up) once it does.
        let watch = DirWatch::start(&dir, is_manifest_name, notify.clone()).unwrap();
        fs::create_dir_all(&dir).unwrap();
        let long = Duration::from_secs(10);
        let wakes = |what: &str| assert!(woken(&rt, &notify, long), "no wake-up {what}");
        wakes("when the directory appeared");
        // A hidden temp file written: no wake-up (a short wait, so this check can pass
        // wrongly on a slow machine, never fail wrongly).
        fs::write(dir.join(".a.yaml.tmp"), "x").unwrap();
        assert!(
            !woken(&rt, &notify, Duration::from_millis(300)),
            "woken by a hidden temp file"
        );
        // Renamed in: woken.
        fs::rename(dir.join(".a.yaml.tmp"), dir.join("a.yaml")).unwrap();
        wakes("on a rename into the directory");
        // Written in place (create, write, close): woken (by the close).
        fs::write(dir.join("b.yml"), "y").unwrap();
        wakes("on a file written in place");
        fs::write(dir.join("b.yml"), "z").unwrap();
        wakes("on a file rewritten");
        // A symlink created: woken.
        std::os::unix::fs::symlink(dir.join("a.yaml"), dir.join("c.yaml")).unwrap();
        wakes("on a symlink");
        fs::remove_file(dir.join("a.yaml")).unwrap();
        wakes("on a deletion");
        // The directory removed and made again: watched again.
        fs::remove_dir_all(&dir).unwrap();
        let _ = woken(&rt, &notify, Duration::from_millis(100));
        fs::create_dir_all(&dir).unwrap();
        wakes("when the directory came back");
        fs::write(dir.join("d.yaml"), "w").unwrap();
        wakes("after the directory came back");
        drop(watch);
        let _ = fs::remove_dir_all(&dir);
    }
}
