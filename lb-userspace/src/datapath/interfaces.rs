//! The interfaces of the node: listing them and their addresses, their drivers, attaching the
//! programs (and pinning the links) or finding them attached, and the `accept_local` sysctl
//! that masqueraded traffic needs (`all`, else per interface where /proc/sys is read-only).
use std::{
    ffi::CStr,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{anyhow, bail, Context, Result};
use aya::programs::{links::FdLink, TcAttachType, XdpMode};

use super::pins::{link_pin_name, link_pins, Hook};
use super::Datapath;

/// Attachments that failed, as (interface and hook, error).
pub type Failures = Vec<(String, String)>;

impl Datapath {
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
                    Ok(()) if hook == Hook::Tc => {
                        attached.push((name.clone(), hook));
                        if let Err(e) = accept_local_on(name, *index) {
                            failed
                                .push((format!("{name}@{index} (accept_local)"), format!("{e:#}")));
                        }
                    }
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

/// When `all.accept_local` is off (it could not be set: /proc/sys is read-only in a
/// container), sets it on the interface and on its bridge through netlink
/// ([`devconf`](super::devconf)); CAP_NET_ADMIN suffices.
fn accept_local_on(name: &str, index: u32) -> Result<()> {
    let all = fs::read_to_string("/proc/sys/net/ipv4/conf/all/accept_local");
    if all.map(|v| v.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    super::devconf::set_accept_local(index).context("setting accept_local by netlink")?;
    if let Some(master) = super::devconf::master_of(name) {
        super::devconf::set_accept_local(master)
            .context("setting accept_local on the interface's master by netlink")?;
    }
    Ok(())
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
    let mut found: Vec<(usize, IpAddr)> = all_addresses()
        .into_iter()
        .filter_map(|(name, ip)| Some((names.iter().position(|n| *n == name)?, ip)))
        .collect();
    found.sort_by_key(|(i, _)| *i);
    unique(found.into_iter().map(|(_, ip)| ip))
}

/// The addresses of every interface of the current network namespace (the node's local
/// addresses, where `--nodeport-addresses` CIDRs look), in the kernel's order, without
/// loopback and IPv6 link-local addresses.
pub fn local_addresses() -> Vec<IpAddr> {
    unique(all_addresses().into_iter().map(|(_, ip)| ip))
}

/// The addresses in order, each once.
fn unique(ips: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// (interface name, address) of every usable address in the current network namespace, in
/// the kernel's order; empty when they cannot be listed.
fn all_addresses() -> Vec<(String, IpAddr)> {
    let mut found = Vec::new();
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
                let name = CStr::from_ptr((*p).ifa_name).to_string_lossy().into_owned();
                found.push((name, ip));
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

pub(super) fn usable_interface_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
    }
}
