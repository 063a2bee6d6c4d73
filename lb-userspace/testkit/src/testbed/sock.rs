//! The socket calls std does not offer, for the servers and clients: IPv6-only sockets beside
//! IPv4 ones on the same port, a bound source port with `SO_REUSEADDR`, a nonblocking connect
//! with a timeout, and poll(2) over several sockets.
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A new socket of `domain` and `ty` (`SOCK_CLOEXEC` added), in the calling thread's namespace.
pub(super) fn new_socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh socket that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn set_reuseaddr(fd: &OwnedFd) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &(1 as libc::c_int),
    )
}

/// bind(2) `fd` to `addr`; the error names the address.
pub(super) fn bind_fd(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = sockaddr(addr);
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    })
    .map(drop)
    .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))
}

/// A socket of `ty` (SOCK_STREAM: also listening) bound to [::]:`port` with `IPV6_V6ONLY`, so
/// that it coexists with an IPv4 socket on 0.0.0.0:`port`, in the calling thread's namespace.
pub(super) fn bind_v6only(ty: libc::c_int, port: u16) -> io::Result<OwnedFd> {
    let fd = new_socket(libc::AF_INET6, ty)?;
    setsockopt(
        &fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        &(1 as libc::c_int),
    )?;
    if ty == libc::SOCK_STREAM {
        // As std does for listeners.
        set_reuseaddr(&fd)?;
    }
    bind_fd(&fd, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))?;
    if ty == libc::SOCK_STREAM {
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    }
    Ok(fd)
}

/// Waits up to `timeout` until one of `socks` is readable; returns which are.
pub(super) fn poll_readable_any<S: AsRawFd>(socks: &[S], timeout: Duration) -> Vec<bool> {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    pfds.iter().map(|p| n > 0 && p.revents != 0).collect()
}

pub(super) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `a` as a `sockaddr_in` or `sockaddr_in6` in a `sockaddr_storage`, with its length.
pub(super) fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

pub(super) fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The wildcard address of `dst`'s family with port `port`: 0.0.0.0:port or [::]:port.
pub(super) fn unspecified_like(dst: &SocketAddr, port: u16) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into(),
        SocketAddr::V6(_) => SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into(),
    }
}

/// A TCP connection from the wildcard address of `dst`'s family (0.0.0.0 or [::]) and port
/// `src_port` (SO_REUSEADDR) to `dst`, in the calling thread's network namespace: nonblocking
/// connect, then poll up to `timeout`. Returns a blocking stream.
pub(super) fn connect_bound(
    src_port: u16,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let domain = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let fd = new_socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    set_reuseaddr(&fd)?;
    bind_fd(&fd, unspecified_like(&dst, src_port))?;
    let (dst_sa, dst_len) = sockaddr(dst);
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &dst_sa as *const libc::sockaddr_storage as *const libc::sockaddr,
            dst_len,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {timeout:?}"),
                    ))
                }
                n if n > 0 => break,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        let mut err: libc::c_int = 0;
        let mut errlen = size_of::<libc::c_int>() as libc::socklen_t;
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut libc::c_int as *mut libc::c_void,
                &mut errlen,
            )
        })?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
