//! The test clients: one request ([`tcp_request`], [`udp_request`], also from a fixed source
//! port) or a persistent connection ([`TcpSession`]) from a namespace to any [`SocketAddr`],
//! and the [`Reply`] a test server sent.
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::netns::Netns;
use super::sock::{connect_bound, unspecified_like};

/// What a test server answered: `"{ident} {client address it saw}"`. Every address is a
/// [`SocketAddr`] of the family the request used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The server's ident (e.g. the pod name).
    pub ident: String,
    /// The client address the server saw (after any NAT).
    pub seen_client: SocketAddr,
    /// Where the reply came from: the TCP peer or the UDP datagram source.
    pub peer: SocketAddr,
    /// The client socket's local address (an unconnected UDP socket's is 0.0.0.0:port or
    /// [::]:port).
    pub local: SocketAddr,
}

impl Reply {
    /// The address (without port) the server saw the client as.
    pub fn seen_ip(&self) -> IpAddr {
        self.seen_client.ip()
    }
    /// Whether the reply came from `addr` (address and port; flow label and scope ignored).
    pub fn from_addr(&self, addr: impl Into<SocketAddr>) -> bool {
        let a = addr.into();
        (self.peer.ip(), self.peer.port()) == (a.ip(), a.port())
    }
}

fn parse_reply(line: &str, peer: SocketAddr, local: SocketAddr) -> Result<Reply> {
    let (ident, seen) = line
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("malformed reply {line:?}"))?;
    let seen_client = seen
        .parse()
        .with_context(|| format!("malformed reply {line:?}"))?;
    Ok(Reply {
        ident: ident.to_string(),
        seen_client,
        peer,
        local,
    })
}

/// Connects from inside `ns` with a timeout, returning a stream with read/write timeouts set.
fn tcp_connect(ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = ns.try_run_in(|| TcpStream::connect_timeout(&dst, timeout))??;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Like [`tcp_connect`], from source port `src_port` (0.0.0.0:`src_port` or [::]:`src_port`,
/// SO_REUSEADDR).
///
/// `EADDRNOTAVAIL` (the 4-tuple is still taken) is retried until `timeout`: a socket closed
/// just before lives on while a child process forked by another thread of this process still
/// shares the descriptor (until its exec closes it).
fn tcp_connect_from(
    ns: &Netns,
    src_port: u16,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    let stream = ns.try_run_in(|| {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connect_bound(src_port, dst, left) {
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{e} (the 4-tuple is still in use by another connection)"),
                        ));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    })??;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// One TCP request from `ns` to `dst` (IPv4 or IPv6; a `SocketAddrV4`/`SocketAddrV6` works as
/// well): connect, send `"hello\n"`, read one reply line, close.
pub fn tcp_request(ns: &Netns, dst: impl Into<SocketAddr>, timeout: Duration) -> Result<Reply> {
    TcpSession::connect(ns, dst, timeout)?.request()
}

/// [`tcp_request`] from the fixed source port `src_port`: the socket binds 0.0.0.0:`src_port`
/// (or [::]:`src_port` for an IPv6 `dst`) with SO_REUSEADDR before connecting, and closes
/// normally (FIN). The same request, with the same 4-tuple, may be repeated at once: Linux
/// reuses the TIME_WAIT of an explicitly bound port (TCP timestamps are on by default), and the
/// short FIN_WAIT2 before the server closes is waited out (see [`TcpSession::connect_from`]).
pub fn tcp_request_from(
    ns: &Netns,
    src_port: u16,
    dst: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<Reply> {
    TcpSession::connect_from(ns, src_port, dst, timeout)?.request()
}

/// One UDP request from `ns`: an unconnected socket on 0.0.0.0:0 (or [::]:0 for an IPv6 `dst`)
/// sends `"hello\n"` to `dst` and waits for one datagram; `Reply::peer` is that datagram's
/// source address.
pub fn udp_request(ns: &Netns, dst: impl Into<SocketAddr>, timeout: Duration) -> Result<Reply> {
    let dst = dst.into();
    udp_request_impl(ns, 0, dst, timeout)
        .with_context(|| format!("udp request from netns {} to {dst}", ns.name()))
}

/// [`udp_request`] from the fixed source port `src_port` (0.0.0.0:`src_port` or
/// [::]:`src_port`).
pub fn udp_request_from(
    ns: &Netns,
    src_port: u16,
    dst: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<Reply> {
    let dst = dst.into();
    udp_request_impl(ns, src_port, dst, timeout).with_context(|| {
        format!(
            "udp request from netns {} port {src_port} to {dst}",
            ns.name()
        )
    })
}

fn udp_request_impl(
    ns: &Netns,
    src_port: u16,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Reply> {
    let src = unspecified_like(&dst, src_port);
    // A fixed source port can be held for a moment after the last request closed it: another
    // test thread's fork inherits every open socket until its exec closes it. Retry briefly.
    let deadline = Instant::now() + Duration::from_secs(2);
    let sock = loop {
        match ns.try_run_in(|| UdpSocket::bind(src))? {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && src_port != 0
                    && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(20))
            }
            r => break r.with_context(|| format!("bind {src}"))?,
        }
    };
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(b"hello\n", dst)?;
    let mut buf = [0u8; 2048];
    let (n, peer) = sock.recv_from(&mut buf).context("waiting for the reply")?;
    parse_reply(
        &String::from_utf8_lossy(&buf[..n]),
        peer,
        sock.local_addr()?,
    )
}

/// A persistent TCP connection from a namespace; each [`TcpSession::request`] is one
/// line/reply exchange on the same connection.
#[derive(Debug)]
pub struct TcpSession {
    reader: BufReader<TcpStream>,
    desc: String,
}

impl TcpSession {
    /// Connects from `ns` to `dst` (IPv4 or IPv6).
    pub fn connect(
        ns: &Netns,
        dst: impl Into<SocketAddr>,
        timeout: Duration,
    ) -> Result<TcpSession> {
        let dst = dst.into();
        let desc = format!("tcp session from netns {} to {dst}", ns.name());
        let stream = tcp_connect(ns, dst, timeout).with_context(|| format!("{desc}: connect"))?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            desc,
        })
    }

    /// Like [`TcpSession::connect`], from the fixed source port `src_port` (binds
    /// 0.0.0.0:`src_port`, or [::]:`src_port` for an IPv6 `dst`, with SO_REUSEADDR). While the
    /// 4-tuple is still taken by an earlier connection (`EADDRNOTAVAIL`, e.g. in FIN_WAIT2),
    /// connecting is retried until `timeout`. Two sessions with the same 4-tuple cannot be open
    /// at once; the same source port from different namespaces, or to different destinations,
    /// can.
    pub fn connect_from(
        ns: &Netns,
        src_port: u16,
        dst: impl Into<SocketAddr>,
        timeout: Duration,
    ) -> Result<TcpSession> {
        let dst = dst.into();
        let desc = format!(
            "tcp session from netns {} port {src_port} to {dst}",
            ns.name()
        );
        let stream = tcp_connect_from(ns, src_port, dst, timeout)
            .with_context(|| format!("{desc}: connect"))?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            desc,
        })
    }

    /// Sends `"hello\n"` and reads one reply line.
    pub fn request(&mut self) -> Result<Reply> {
        (|| -> Result<Reply> {
            let stream = self.reader.get_mut();
            stream.write_all(b"hello\n")?;
            let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed by peer");
            }
            parse_reply(&line, peer, local)
        })()
        .with_context(|| format!("{}: request", self.desc))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().peer_addr()
    }
}
