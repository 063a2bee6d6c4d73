//! Datapath I/O: the bpf root, loading or re-adopting the programs and maps, attaching to
//! interfaces, reading and writing the maps, and `reset`.
//!
//! Pin layout under the bpf root:
//! - `<root>/<map name>` for every map (see `lb_common::ALL_MAPS`), so that
//!   `bpftool map dump pinned <root>/<map>` works;
//! - `<root>/<program name>` for each program (TC ingress, TC egress, XDP);
//! - `<root>/links/<hook>:<ifname>@<ifindex>` for each attachment;
//! - `<root>/layout-version`, a symlink whose target is the `PIN_LAYOUT_VERSION` of the maps
//!   (e.g. `layout-version -> 4`): bpffs holds no regular files, only pins, directories and symlinks.
//!
//! A restarted agent finds the pins and adopts them: the maps keep their contents, the links
//! keep their programs attached, and nothing is reloaded. Pins of another layout version (or
//! of a podlb from before versions were recorded) are refused: `podlb reset` clears them.
use std::{
    collections::BTreeMap,
    ffi::CStr,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{links::FdLink, Program, SchedClassifier, TcAttachType, Xdp, XdpMode},
    util::nr_cpus,
    EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use lb_common::{ip::from_addr, *};

use crate::reconcile::{BackendKey, FrontendState, MapState, Op, ReadBack};

/// The eBPF object, embedded at build time (see build.rs).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podlb.bpf.o"));

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
    const ALL: [Hook; 4] = [Hook::Tc, Hook::TcEgress, Hook::XdpNative, Hook::XdpGeneric];

    fn parse(s: &str) -> Option<Hook> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }
}

/// A link pin: `links/<hook>:<ifname>@<ifindex>`.
fn link_pin_name(hook: Hook, ifname: &str, index: u32) -> String {
    format!("{}:{ifname}@{index}", hook.name())
}

fn parse_link_pin(file: &str) -> Option<(Hook, &str, u32)> {
    let (hook, rest) = file.split_once(':')?;
    let (name, index) = rest.rsplit_once('@')?;
    Some((Hook::parse(hook)?, name, index.parse().ok()?))
}

/// Attachments that failed, as (interface and hook, error).
pub type Failures = Vec<(String, String)>;

/// The link pins under `root`, as (hook, interface, ifindex).
fn link_pins(root: &Path) -> Vec<(Hook, String, u32)> {
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
fn existing_pins(root: &Path) -> Vec<PathBuf> {
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
fn write_layout_version(root: &Path) -> Result<()> {
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

/// The loaded (or adopted) programs and the pin directory.
pub struct Datapath {
    root: PathBuf,
    tc: SchedClassifier,
    tc_egress: SchedClassifier,
    xdp: Xdp,
    /// Whether the programs were found pinned (re-adopted) rather than loaded now.
    pub adopted: bool,
}

impl Datapath {
    /// Loads the programs and maps, or adopts them when they are already pinned under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            bail!("this podlb binary was built without its eBPF object; build it with `cargo xtask build`");
        }
        ensure_bpffs(root)?;
        // Recorded before any map is created, so that a crash cannot leave unrecorded pins.
        check_layout(root)?;
        if layout_version(root) != Some(PIN_LAYOUT_VERSION.to_string()) {
            write_layout_version(root)?;
        }
        fs::create_dir_all(root.join("links"))?;
        let (tc_pin, xdp_pin) = (root.join(PROG_TC_POD), root.join(PROG_XDP_EXT));
        let egress_pin = root.join(PROG_TC_EGRESS);
        let adopted = tc_pin.exists() && xdp_pin.exists() && egress_pin.exists();
        // Maps: opened from their pins when present, otherwise created and pinned.
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = ALL_MAPS.iter().map(|m| (*m, root.join(m))).collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        if !adopted {
            for (name, pin) in [
                (PROG_TC_POD, &tc_pin),
                (PROG_TC_EGRESS, &egress_pin),
                (PROG_XDP_EXT, &xdp_pin),
            ] {
                let _ = fs::remove_file(pin);
                let prog = ebpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
                match prog {
                    Program::SchedClassifier(p) => p.load(),
                    Program::Xdp(p) => p.load(),
                    _ => bail!("program {name} has an unexpected type"),
                }
                .with_context(|| format!("loading {name} (verifier)"))?;
                prog.pin(pin).with_context(|| format!("pinning {name}"))?;
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            tc: SchedClassifier::from_pin(&tc_pin).context("opening the pinned TC program")?,
            tc_egress: SchedClassifier::from_pin(&egress_pin)
                .context("opening the pinned TC egress program")?,
            xdp: Xdp::from_pin(&xdp_pin, XdpAttachType::Interface)
                .context("opening the pinned XDP program")?,
            adopted,
        })
    }

    /// Attaches to every interface that matches: TC ingress and egress on pod interfaces; XDP
    /// (native, else generic) plus TC ingress and egress on external interfaces. Interfaces whose link pin exists
    /// are left alone; pins of links whose interface is gone are removed. Returns what was
    /// attached now as (interface, hook), and the failures as (interface, error).
    pub fn sync_interfaces(
        &mut self,
        is_pod: impl Fn(&str) -> bool,
        is_external: impl Fn(&str) -> bool,
    ) -> (Vec<(String, Hook)>, Failures) {
        let present = interfaces();
        let links = self.root.join("links");
        let existing = link_pins(&self.root);
        let has = |hooks: &[Hook], name: &str, index: u32| {
            existing
                .iter()
                .any(|(h, n, i)| hooks.contains(h) && n == name && *i == index)
        };
        let (mut attached, mut failed) = (Vec::new(), Vec::new());
        for (name, index) in &present {
            let external = is_external(name);
            if external && !has(&[Hook::XdpNative, Hook::XdpGeneric], name, *index) {
                match self.attach_xdp(name, *index) {
                    Ok(h) => attached.push((name.clone(), h)),
                    Err(e) => failed.push((format!("{name}@{index} (xdp)"), format!("{e:#}"))),
                }
            }
            if !(external || is_pod(name)) {
                continue;
            }
            for hook in [Hook::Tc, Hook::TcEgress] {
                if has(&[hook], name, *index) {
                    continue;
                }
                let pin = links.join(link_pin_name(hook, name, *index));
                match self.attach_tc(hook, name, &pin) {
                    Ok(()) => attached.push((name.clone(), hook)),
                    Err(e) => failed.push((
                        format!("{name}@{index} ({})", hook.name()),
                        format!("{e:#}"),
                    )),
                }
            }
        }
        for (hook, name, index) in existing {
            if !present.iter().any(|(n, i)| *n == name && *i == index) {
                let _ = fs::remove_file(links.join(link_pin_name(hook, &name, index)));
            }
        }
        (attached, failed)
    }

    fn attach_tc(&mut self, hook: Hook, name: &str, pin: &Path) -> Result<()> {
        let (prog, dir) = match hook {
            Hook::TcEgress => (&mut self.tc_egress, TcAttachType::Egress),
            _ => (&mut self.tc, TcAttachType::Ingress),
        };
        let id = prog.attach(name, dir)?;
        let link: FdLink = prog.take_link(id)?.try_into()?;
        link.pin(pin)?;
        Ok(())
    }

    /// Native XDP where the driver supports it, else generic XDP. On veth devices generic XDP
    /// is used: native XDP_TX on a veth only works when its peer runs XDP or GRO, which the agent
    /// cannot see (the peer lives in another namespace).
    fn attach_xdp(&mut self, name: &str, index: u32) -> Result<Hook> {
        let native = if driver(name).as_deref() == Some("veth") {
            Err(anyhow!("not used on veth"))
        } else {
            self.xdp.attach(name, XdpMode::Driver).map_err(Into::into)
        };
        let (hook, id) = match native {
            Ok(id) => (Hook::XdpNative, id),
            Err(native) => match self.xdp.attach(name, XdpMode::Skb) {
                Ok(id) => (Hook::XdpGeneric, id),
                Err(generic) => bail!("native XDP: {native}; generic XDP: {generic}"),
            },
        };
        let link: FdLink = self.xdp.take_link(id)?.try_into()?;
        link.pin(
            self.root
                .join("links")
                .join(link_pin_name(hook, name, index)),
        )?;
        Ok(hook)
    }

    /// The attached interfaces and how (from the link pins), sorted by interface.
    pub fn attached(root: &Path) -> Vec<(String, Hook)> {
        let mut v: Vec<(String, Hook)> = link_pins(root)
            .into_iter()
            .map(|(h, n, _)| (n, h))
            .collect();
        v.sort_by(|a, b| (&a.0, a.1.name()).cmp(&(&b.0, b.1.name())));
        v
    }
}

/// The kernel driver of an interface (ethtool's GDRVINFO), e.g. "veth".
fn driver(ifname: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Masqueraded flows and their replies are rewritten at ingress to come from a node address
/// (the SNAT address, or a NodePort address), and the kernel drops such packets as martians
/// unless local sources are accepted. They can enter the stack on any device (a pod veth, a
/// bridge the veths belong to, an uplink), so this sets `net.ipv4.conf.all.accept_local`.
/// Strict reverse-path filtering (`rp_filter=1`) would still drop them; loose mode is fine.
pub fn accept_local() -> Result<()> {
    let path = "/proc/sys/net/ipv4/conf/all/accept_local";
    if fs::read_to_string(path)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    fs::write(path, "1").with_context(|| format!("setting {path}"))
}

/// Interfaces of the current network namespace, as (name, index).
pub fn interfaces() -> Vec<(String, u32)> {
    let mut out = Vec::new();
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push((name, (*p).if_index));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// IPv4 and IPv6 addresses of the named interfaces (in the current network namespace), in the
/// order of `names`, and per interface in the kernel's order (IPv4 before IPv6). Loopback and
/// IPv6 link-local (fe80::/10) addresses are left out: no Service can be reached on them.
pub fn interface_addresses(names: &[String]) -> Vec<IpAddr> {
    let mut found: Vec<(usize, IpAddr)> = Vec::new();
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return Vec::new();
        }
        let mut p = list;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            let ip = match a.is_null() {
                true => None,
                false => match (*a).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                },
            };
            if let Some(ip) = ip.filter(usable_interface_address) {
                let name = CStr::from_ptr((*p).ifa_name).to_string_lossy();
                if let Some(i) = names.iter().position(|n| *n == name) {
                    found.push((i, ip));
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.sort_by_key(|(i, _)| *i);
    let mut out: Vec<IpAddr> = Vec::new();
    for (_, ip) in found {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

fn usable_interface_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
    }
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

/// `union bpf_attr` as the `BPF_MAP_*_BATCH` commands read it.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Every entry of a hash or array map (not per-CPU), read with `BPF_MAP_LOOKUP_BATCH`, a few
/// thousand entries per system call instead of one or two calls per entry: the resync reads
/// 300,000 entries at 10,000 Services. A hash map that changes meanwhile may yield a key
/// twice or miss one (the caller dedups; the resync re-checks what the loop wrote).
fn dump<K: aya::Pod, V: aya::Pod>(map: &MapData, mut each: impl FnMut(K, V)) -> Result<()> {
    dump_values(map, 1, |k, v: &[V]| each(k, v[0]))
}

/// [`dump`] for any map: `each` gets a key and its `per_cpu` values (1 for maps that are not
/// per-CPU; the number of possible CPUs for per-CPU ones, whose values must be a multiple of 8
/// bytes long, as the kernel lays them out).
fn dump_values<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    per_cpu: usize,
    mut each: impl FnMut(K, &[V]),
) -> Result<()> {
    const CHUNK: usize = 4096;
    assert!(per_cpu == 1 || size_of::<V>().is_multiple_of(8));
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: Pod types are plain data, valid when all zero.
    let (mut keys, mut values): (Vec<K>, Vec<V>) = unsafe {
        (
            vec![std::mem::zeroed(); CHUNK],
            vec![std::mem::zeroed(); CHUNK * per_cpu],
        )
    };
    // The batch position: a key (arrays) or a bucket index (hashes); room for either.
    let (mut at, mut next) = ([0u8; 256], [0u8; 256]);
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { at.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the attribute points at buffers of CHUNK keys and CHUNK × per_cpu values and
        // at two position buffers larger than any key, all alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(CHUNK);
        for (k, v) in keys[..n].iter().zip(values.chunks(per_cpu)) {
            each(*k, v);
        }
        match err {
            None => at = next,
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(anyhow!(e).context("BPF_MAP_LOOKUP_BATCH")),
        }
    }
    Ok(())
}

/// A frontend's entry, name and counters (summed over CPUs), as /metrics serves them.
pub struct FrontendCounters {
    pub key: FrontendKey,
    pub frontend: Frontend,
    pub name: String,
    pub stats: SvcStats,
}

/// Every frontend with its name and counters, from batched reads of the frontend, name and
/// per-CPU stats maps under `root` (a few dozen system calls at 10,000 Services).
pub fn frontend_counters(root: &Path) -> Result<Vec<FrontendCounters>> {
    check_layout(root)?;
    let pin = |name: &str| {
        MapData::from_pin(root.join(name))
            .with_context(|| format!("cannot open pinned map {}", root.join(name).display()))
    };
    let mut fes = Vec::new();
    dump(&pin(MAP_FRONTENDS)?, |k: FrontendKey, f: Frontend| {
        fes.push((k, f))
    })?;
    let ids: std::collections::HashSet<u32> = fes.iter().map(|(_, f)| f.svc_id).collect();
    let mut names = std::collections::HashMap::new();
    dump(&pin(MAP_SVC_META)?, |id: u32, m: SvcMeta| {
        if ids.contains(&id) {
            names.insert(id, meta_name(&m));
        }
    })?;
    let mut stats = std::collections::HashMap::new();
    let cpus = nr_cpus().map_err(|(_, e)| e)?;
    dump_values(&pin(MAP_SVC_STATS)?, cpus, |id: u32, v: &[SvcStats]| {
        if ids.contains(&id) {
            let sum = v.iter().fold(SvcStats::default(), |a, s| SvcStats {
                packets: a.packets + s.packets,
                bytes: a.bytes + s.bytes,
            });
            stats.insert(id, sum);
        }
    })?;
    let out = fes
        .into_iter()
        .map(|(key, frontend)| FrontendCounters {
            key,
            frontend,
            name: names.get(&frontend.svc_id).cloned().unwrap_or_default(),
            stats: stats.get(&frontend.svc_id).copied().unwrap_or_default(),
        })
        .collect();
    Ok(out)
}

fn open_map(root: &Path, name: &str) -> Result<Map> {
    let path = root.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "cannot open pinned map {} (is the agent's bpf root right? has it run?)",
            path.display()
        )
    })?;
    Ok(Map::from_map_data(data)?)
}

/// Typed handles on the pinned maps.
pub struct Maps {
    pub frontends: HashMap<MapData, FrontendKey, Frontend>,
    pub slots: HashMap<MapData, SlotKey, Slot>,
    pub backends: Array<MapData, Backend>,
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    pub stats: PerCpuArray<MapData, SvcStats>,
    pub meta: HashMap<MapData, u32, SvcMeta>,
    pub vips: HashMap<MapData, VipKey, Vip>,
    pub config: Array<MapData, Config>,
    pub counters: PerCpuArray<MapData, u64>,
}

impl Maps {
    /// Opens the pinned maps; refuses pins of another layout version (see [`check_layout`]).
    pub fn open(root: &Path) -> Result<Self> {
        check_layout(root)?;
        Ok(Self {
            frontends: open_map(root, MAP_FRONTENDS)?.try_into()?,
            slots: open_map(root, MAP_SLOTS)?.try_into()?,
            backends: open_map(root, MAP_BACKENDS)?.try_into()?,
            conntrack: open_map(root, MAP_CONNTRACK)?.try_into()?,
            stats: open_map(root, MAP_SVC_STATS)?.try_into()?,
            meta: open_map(root, MAP_SVC_META)?.try_into()?,
            vips: open_map(root, MAP_VIPS)?.try_into()?,
            config: open_map(root, MAP_CONFIG)?.try_into()?,
            counters: open_map(root, MAP_COUNTERS)?.try_into()?,
        })
    }

    /// Reads the service maps into a mirror. Slots beyond a frontend's count and backends no
    /// slot refers to are left out, so the next plan removes them.
    pub fn read_state(&self) -> Result<MapState> {
        let mut st = MapState::default();
        for item in self.frontends.iter() {
            let (key, fe) = item?;
            let mut slots = Vec::with_capacity(fe.count as usize);
            for slot in 0..fe.count {
                match self.slots.get(
                    &SlotKey {
                        svc_id: fe.svc_id,
                        slot,
                    },
                    0,
                ) {
                    Ok(s) => slots.push(s.backend_id),
                    Err(_) => break,
                }
            }
            let name = self
                .meta
                .get(&fe.svc_id, 0)
                .map(|m| meta_name(&m))
                .unwrap_or_default();
            st.frontends.insert(
                key,
                FrontendState {
                    svc_id: fe.svc_id,
                    name,
                    flags: fe.flags,
                    kind: fe.kind,
                    slots,
                },
            );
        }
        for k in self.vips.keys() {
            st.vips.insert(k?);
        }
        st.config = self.config.get(&0, 0)?;
        for (i, b) in self.backends.iter().enumerate() {
            let b = b?;
            if b != Backend::default() {
                st.backends.insert(i as u32, BackendKey::from_map(&b));
            }
        }
        Ok(st)
    }

    /// Reads the service maps under `root` back as they are, for a resync
    /// ([`crate::reconcile::repair`]), with handles of its own and batched lookups (a few
    /// hundred system calls at 10,000 Services); a resync runs it on a thread of its own.
    pub fn read_back(root: &Path) -> Result<ReadBack> {
        check_layout(root)?;
        let pin = |name: &str| {
            MapData::from_pin(root.join(name))
                .with_context(|| format!("cannot open pinned map {}", root.join(name).display()))
        };
        let mut rb = ReadBack::default();
        dump(&pin(MAP_FRONTENDS)?, |k: FrontendKey, f: Frontend| {
            rb.frontends.push((k, f))
        })?;
        dump(&pin(MAP_SLOTS)?, |k: SlotKey, s: Slot| {
            rb.slots.push(((k.svc_id, k.slot), s.backend_id))
        })?;
        dump(&pin(MAP_SVC_META)?, |id: u32, m: SvcMeta| {
            rb.names.push((id, meta_name(&m)))
        })?;
        dump(&pin(MAP_VIPS)?, |k: VipKey, _: Vip| rb.vips.push(k))?;
        dump(&pin(MAP_CONFIG)?, |_: u32, c: Config| rb.config = c)?;
        dump(&pin(MAP_BACKENDS)?, |id: u32, b: Backend| {
            if b != Backend::default() {
                rb.backends.push((id, BackendKey::from_map(&b)));
            }
        })?;
        Ok(rb.sorted())
    }

    /// Slots and names that no frontend owns (left by a crash mid-update): to delete.
    pub fn orphans(&self, st: &MapState) -> Result<Vec<Op>> {
        let owned: BTreeMap<u32, usize> = st
            .frontends
            .values()
            .map(|f| (f.svc_id, f.slots.len()))
            .collect();
        let mut ops = Vec::new();
        for k in self.slots.keys() {
            let k = k?;
            if owned.get(&k.svc_id).is_none_or(|n| k.slot as usize >= *n) {
                ops.push(Op::DelSlot {
                    svc_id: k.svc_id,
                    slot: k.slot,
                });
            }
        }
        for k in self.meta.keys() {
            let k = k?;
            if !owned.contains_key(&k) {
                ops.push(Op::DelMeta(k));
            }
        }
        Ok(ops)
    }

    /// Applies one planned write. Deleting what is already gone is not an error.
    pub fn apply(&mut self, op: &Op) -> Result<()> {
        let r = match op {
            Op::SetBackend(id, k) => self.backends.set(*id, k.to_map(), 0),
            Op::SetMeta(id, name) => self.meta.insert(id, make_meta(name), 0),
            Op::ResetStats(id) => {
                let zero = PerCpuValues::try_from(vec![
                    SvcStats::default();
                    nr_cpus().map_err(|(_, e)| e)?
                ])?;
                self.stats.set(*id, zero, 0)
            }
            Op::SetSlot {
                svc_id,
                slot,
                backend_id,
            } => self.slots.insert(
                SlotKey {
                    svc_id: *svc_id,
                    slot: *slot,
                },
                Slot {
                    backend_id: *backend_id,
                },
                0,
            ),
            Op::SetFrontend(k, f) => self.frontends.insert(k, f, 0),
            Op::DelSlot { svc_id, slot } => ignore_missing(self.slots.remove(&SlotKey {
                svc_id: *svc_id,
                slot: *slot,
            })),
            Op::DelFrontend(k) => ignore_missing(self.frontends.remove(k)),
            Op::DelMeta(id) => ignore_missing(self.meta.remove(id)),
            Op::DelBackend(id) => self.backends.set(*id, Backend::default(), 0),
            Op::SetVip(k) => self.vips.insert(k, Vip::default(), 0),
            Op::DelVip(k) => ignore_missing(self.vips.remove(k)),
            Op::SetConfig(c) => self.config.set(0, c, 0),
        };
        r.with_context(|| format!("map write {op:?}"))
    }

    /// The `CNT_*` event counters, summed over CPUs, with their names.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        COUNTER_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = self
                    .counters
                    .get(&(i as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*name, v)
            })
            .collect()
    }

    /// Sum of the per-CPU counters of one service.
    pub fn stats_of(&self, svc_id: u32) -> SvcStats {
        self.stats
            .get(&svc_id, 0)
            .map(|v| {
                v.iter().fold(SvcStats::default(), |a, s| SvcStats {
                    packets: a.packets + s.packets,
                    bytes: a.bytes + s.bytes,
                })
            })
            .unwrap_or_default()
    }
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        r => r,
    }
}

pub fn make_meta(name: &str) -> SvcMeta {
    let mut m = SvcMeta {
        name_len: 0,
        pad: 0,
        name: [0; SVC_NAME_LEN],
    };
    let bytes = name.as_bytes();
    let n = bytes.len().min(SVC_NAME_LEN);
    m.name[..n].copy_from_slice(&bytes[..n]);
    m.name_len = n as u32;
    m
}

pub fn meta_name(m: &SvcMeta) -> String {
    String::from_utf8_lossy(&m.name[..(m.name_len as usize).min(SVC_NAME_LEN)]).into_owned()
}

/// `10.96.0.10:80`, `[fd00::10]:80`.
pub fn fmt_addr(addr: &Addr, family: u8, port: u16) -> String {
    SocketAddr::new(from_addr(addr, family), port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        for hook in Hook::ALL {
            let name = link_pin_name(hook, "lxc-a@b", 7);
            assert_eq!(parse_link_pin(&name), Some((hook, "lxc-a@b", 7)), "{name}");
        }
        assert_eq!(parse_link_pin("tc:eth0"), None);
        assert_eq!(parse_link_pin("bogus:eth0@1"), None);
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("podlb-dp-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn touch(&self, name: &str) {
            fs::write(self.0.join(name), "").unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn layout_version_is_recorded_checked_and_reset() {
        let d = TempDir::new("layout");
        let root = d.0.as_path();
        // Nothing pinned: nothing to refuse.
        assert_eq!(layout_version(root), None);
        check_layout(root).unwrap();
        // Pins from before versions were recorded (old map names) are refused.
        d.touch("lb4_frontends");
        d.touch("lb_config");
        let e = check_layout(root).unwrap_err().to_string();
        assert!(e.contains("no pin layout version recorded"), "{e}");
        assert!(
            e.contains(&format!("podlb reset --bpf-root {}", root.display())),
            "{e}"
        );
        assert!(
            e.contains(&format!("uses pin layout version {PIN_LAYOUT_VERSION}")),
            "{e}"
        );
        // Another version is refused and named.
        std::os::unix::fs::symlink("2", root.join(LAYOUT_VERSION_FILE)).unwrap();
        assert_eq!(layout_version(root).as_deref(), Some("2"));
        let e = check_layout(root).unwrap_err().to_string();
        assert!(e.contains(r#"pin layout version "2""#), "{e}");
        // The current version is accepted.
        write_layout_version(root).unwrap();
        assert_eq!(layout_version(root), Some(PIN_LAYOUT_VERSION.to_string()));
        check_layout(root).unwrap();
        // reset removes the pins of every layout and the record.
        fs::create_dir(root.join("links")).unwrap();
        d.touch("links/tc:eth0@2");
        d.touch("maps.debug");
        assert_eq!(reset(root).unwrap(), 3);
        assert_eq!(layout_version(root), None);
        assert!(existing_pins(root).is_empty());
        assert!(!root.join("links").exists());
        assert!(root.join("maps.debug").exists(), "not podlb's");
        // A record in a regular file (a root not on a bpffs) reads the same.
        fs::write(root.join(LAYOUT_VERSION_FILE), "3\n").unwrap();
        assert_eq!(layout_version(root).as_deref(), Some("3"));
    }

    #[test]
    fn address_formats() {
        let v6: Ipv6Addr = "fd00::10".parse().unwrap();
        assert_eq!(fmt_addr(&v6.octets(), FAMILY_V6, 80), "[fd00::10]:80");
        assert_eq!(
            fmt_addr(&addr4([10, 96, 0, 1]), FAMILY_V4, 53),
            "10.96.0.1:53"
        );
        assert_eq!(crate::types::Family::name_of(FAMILY_V6), "IPv6");
        assert!(usable_interface_address(&"2001:db8::1".parse().unwrap()));
        assert!(!usable_interface_address(&"fe80::1".parse().unwrap()));
        assert!(!usable_interface_address(&"::1".parse().unwrap()));
        assert!(!usable_interface_address(&"127.0.0.1".parse().unwrap()));
    }
}
