//! The bpf root and what podlb pins under it (see the pin layout in the module doc of
//! `datapath`): the bpffs mount, the layout version record and its check, the link pins'
//! names, and `reset`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use lb_common::{
    ALL_MAPS, LAYOUT_VERSION_FILE, PIN_LAYOUT_VERSION, PROG_TC_EGRESS, PROG_TC_POD, PROG_XDP_EXT,
};

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Makes sure `root` exists on a bpffs, mounting one at `root` when it is not.
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    fs::create_dir_all(root)
        .with_context(|| format!("cannot create bpf root {}", root.display()))?;
    if fs_magic(root)? == BPF_FS_MAGIC {
        return Ok(());
    }
    let rc = mount_bpffs(root);
    if let Err(e) = rc {
        bail!(
            "bpf root {} is not on a bpffs, and mounting one there failed: {e}. Mount one \
             (`mount -t bpf bpf {}`), or, when running under `ip netns exec` (which remounts \
             /sys), use a bpf root outside /sys.",
            root.display(),
            root.display()
        );
    }
    tracing::info!(root = %root.display(), "mounted a bpffs at the bpf root");
    Ok(())
}

/// Mounts a new bpffs instance at `path` (`mount -t bpf bpf PATH`).
pub fn mount_bpffs(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn fs_magic(p: &Path) -> Result<i64> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!(
            "statfs {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(st.f_type as i64)
}

/// How a program is attached to an interface; part of the link's pin name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC ingress (a TCX link).
    Tc,
    /// TC egress (a TCX link): ICMP error translation only.
    TcEgress,
    /// Native (driver) XDP.
    XdpNative,
    /// Generic (skb) XDP, when the driver has no native XDP.
    XdpGeneric,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Tc => "tc",
            Hook::TcEgress => "tc-egress",
            Hook::XdpNative => "xdp-native",
            Hook::XdpGeneric => "xdp-generic",
        }
    }
    pub(super) const ALL: [Hook; 4] = [Hook::Tc, Hook::TcEgress, Hook::XdpNative, Hook::XdpGeneric];

    fn parse(s: &str) -> Option<Hook> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }
}

/// A link pin: `links/<hook>:<ifname>@<ifindex>`.
pub(super) fn link_pin_name(hook: Hook, ifname: &str, index: u32) -> String {
    format!("{}:{ifname}@{index}", hook.name())
}

pub(super) fn parse_link_pin(file: &str) -> Option<(Hook, &str, u32)> {
    let (hook, rest) = file.split_once(':')?;
    let (name, index) = rest.rsplit_once('@')?;
    Some((Hook::parse(hook)?, name, index.parse().ok()?))
}

/// The link pins under `root`, as (hook, interface, ifindex).
pub(super) fn link_pins(root: &Path) -> Vec<(Hook, String, u32)> {
    fs::read_dir(root.join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            parse_link_pin(&f).map(|(h, n, i)| (h, n.to_string(), i))
        })
        .collect()
}

/// Map pins of the layouts before version 3 (IPv4-only maps); `reset` removes them too.
const LEGACY_MAPS: [&str; 5] = [
    "lb4_frontends",
    "lb4_slots",
    "lb4_backends",
    "lb4_conntrack",
    "lb4_vips",
];

/// Every pin podlb may have left under `root` that exists now: links first, then the
/// programs, then the maps (current and legacy names). The layout-version record is not a pin.
pub(super) fn existing_pins(root: &Path) -> Vec<PathBuf> {
    let mut pins: Vec<PathBuf> = fs::read_dir(root.join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    let named = [PROG_TC_POD, PROG_XDP_EXT, PROG_TC_EGRESS]
        .into_iter()
        .chain(ALL_MAPS)
        .chain(LEGACY_MAPS);
    pins.extend(named.map(|n| root.join(n)));
    pins.retain(|p| p.symlink_metadata().is_ok());
    pins
}

/// The pin layout version recorded under `root` (`<root>/layout-version`), as written: `None`
/// when nothing is recorded. Read as a symlink target, or as a file's content for a root that
/// is not on a bpffs.
pub fn layout_version(root: &Path) -> Option<String> {
    let path = root.join(LAYOUT_VERSION_FILE);
    match fs::read_link(&path) {
        Ok(target) => Some(target.to_string_lossy().trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => fs::read_to_string(&path).ok().map(|s| s.trim().to_string()),
    }
}

/// Refuses pins under `root` whose layout version is not `PIN_LAYOUT_VERSION` (or is not
/// recorded). Ok when they match or when there are no pins at all.
pub fn check_layout(root: &Path) -> Result<()> {
    let found = layout_version(root);
    let expected = PIN_LAYOUT_VERSION.to_string();
    if found.as_deref() == Some(expected.as_str()) || existing_pins(root).is_empty() {
        return Ok(());
    }
    let found = match found {
        Some(v) => format!("pin layout version {v:?}"),
        None => format!("no pin layout version recorded (no {LAYOUT_VERSION_FILE} symlink)"),
    };
    bail!(
        "the pins under {root} have {found}, but this podlb uses pin layout version \
         {expected}, so it cannot adopt them. Run `podlb reset --bpf-root {root}` to remove them \
         (Services are not forwarded until the agent starts again), then start the agent.",
        root = root.display()
    )
}

/// Records `PIN_LAYOUT_VERSION` as `<root>/layout-version -> <version>`.
pub(super) fn write_layout_version(root: &Path) -> Result<()> {
    let path = root.join(LAYOUT_VERSION_FILE);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => {}
    }
    std::os::unix::fs::symlink(PIN_LAYOUT_VERSION.to_string(), &path)
        .with_context(|| format!("recording the pin layout version in {}", path.display()))
}

/// Detaches and removes everything podlb pinned under `root`, of any layout version, and the
/// layout-version record. Returns how many pins it removed. Only podlb's own pins are touched
/// (a fresh bpffs also holds `maps.debug`/`progs.debug`).
pub fn reset(root: &Path) -> Result<usize> {
    // Links first, so that traffic stops being rewritten before the maps go away.
    let mut n = 0;
    for p in existing_pins(root) {
        match fs::remove_file(&p) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    let _ = fs::remove_dir(root.join("links"));
    // Last: while any pin is left, the record still describes it.
    let version = root.join(LAYOUT_VERSION_FILE);
    match fs::remove_file(&version) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", version.display()))
        }
        _ => {}
    }
    Ok(n)
}
