//! An interface's `accept_local` set through rtnetlink (RTM_SETLINK with
//! IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF), for when /proc/sys cannot be written: a container
//! runtime mounts it read-only in every unprivileged container, DaemonSet pods included, while
//! CAP_NET_ADMIN still lets the agent change the devices of its (host) network namespace. The
//! kernel accepts local sources on a device when `all` or the device's own setting is on, so
//! setting it on each device masqueraded packets enter the stack on has the effect of `all`.
use std::ffi::CString;
use std::io;
use std::mem::size_of;

/// `IPV4_DEVCONF_ACCEPT_LOCAL` (include/uapi/linux/ip.h): the attribute type is the index of
/// the setting plus one, as the kernel numbers them from FORWARDING = 1.
const IPV4_DEVCONF_ACCEPT_LOCAL: u16 = 23;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET_CONF: u16 = 1;

/// A netlink attribute: header, payload, padding to 4 bytes.
fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut a = Vec::with_capacity((len + 3) & !3);
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize((len + 3) & !3, 0);
    a
}

/// The RTM_SETLINK request that turns accept_local on for interface `index`.
fn request(index: u32, seq: u32) -> Vec<u8> {
    let conf = attr(IPV4_DEVCONF_ACCEPT_LOCAL, &1u32.to_ne_bytes());
    let inet = attr(IFLA_INET_CONF, &conf);
    let af = attr(libc::AF_INET as u16, &inet);
    let spec = attr(IFLA_AF_SPEC, &af);
    let mut ifi = [0u8; size_of::<libc::ifinfomsg>()];
    ifi[4..8].copy_from_slice(&(index as i32).to_ne_bytes()); // ifi_index
    let len = size_of::<libc::nlmsghdr>() + ifi.len() + spec.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&ifi);
    m.extend_from_slice(&spec);
    m
}

/// Sets accept_local on interface `index` of the current network namespace.
pub fn set_accept_local(index: u32) -> io::Result<()> {
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = exchange(fd, &request(index, 1));
        libc::close(fd);
        r
    }
}

/// Sends `msg` and reads the kernel's acknowledgement (an NLMSG_ERROR, 0 for success).
unsafe fn exchange(fd: i32, msg: &[u8]) -> io::Result<()> {
    // SAFETY: the buffers outlive the calls; lengths are theirs.
    unsafe {
        if libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        ack_error(&buf[..n as usize])
    }
}

/// The result an acknowledgement carries.
fn ack_error(reply: &[u8]) -> io::Result<()> {
    let hdr = size_of::<libc::nlmsghdr>();
    if reply.len() < hdr + 4 {
        return Err(io::Error::other("short netlink reply"));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other(format!(
            "netlink reply of type {kind}, not an ack"
        )));
    }
    let code = i32::from_ne_bytes(reply[hdr..hdr + 4].try_into().expect("4 bytes"));
    match code {
        0 => Ok(()),
        c => Err(io::Error::from_raw_os_error(-c)),
    }
}

/// The interface's bridge or bond (`/sys/class/net/NAME/master`), whose device a packet
/// from a port enters the stack on.
pub fn master_of(name: &str) -> Option<u32> {
    let link = std::fs::read_link(format!("/sys/class/net/{name}/master")).ok()?;
    let master = CString::new(link.file_name()?.to_str()?).ok()?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(master.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_nests_the_setting_under_af_spec_inet() {
        let m = request(7, 1);
        assert_eq!(m.len(), 16 + 16 + 4 + 4 + 4 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        // IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { 23: 1 } } }
        let tail: Vec<u16> = m[32..]
            .chunks(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(tail, [20, 26, 16, 2, 12, 1, 8, 23, 1, 0]);
    }

    #[test]
    fn acks_carry_the_error() {
        let mut reply = vec![0u8; 36];
        reply[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(ack_error(&reply).is_ok());
        reply[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            ack_error(&reply).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(ack_error(&reply[..10]).is_err());
    }
}
