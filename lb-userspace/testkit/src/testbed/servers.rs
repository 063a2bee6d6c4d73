//! The test servers a pod runs: [`TcpServer`] and [`UdpServer`] answer every request with
//! their ident and the client address they saw, on both families, until dropped.
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::netns::Netns;
use super::sock::{bind_v6only, poll_readable_any};

/// How often the server threads look at their stop flag.
const SERVER_POLL: Duration = Duration::from_millis(100);

/// Stop flag + counter + thread shared by the servers.
#[derive(Debug)]
struct ServerThread {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    fn spawn(f: impl FnOnce(Arc<AtomicBool>, Arc<AtomicUsize>) + Send + 'static) -> Self {
        let (stop, count) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, c) = (stop.clone(), count.clone());
        ServerThread {
            stop,
            count,
            thread: Some(thread::spawn(move || f(s, c))),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// TCP echo-ident server on port `port` of both families (0.0.0.0 and [::], two sockets, the
/// IPv6 one `IPV6_V6ONLY`) in a namespace: every line received on a connection is answered with
/// `"{ident} {peer_addr}\n"` (`10.244.0.10:41234` or `[fd00:10:244:0::10]:41234`). Stops on drop
/// (within ~100 ms, closing connections).
#[derive(Debug)]
pub struct TcpServer {
    inner: ServerThread,
    port: u16,
}

impl TcpServer {
    /// Panics (with context) if the port cannot be bound in either family.
    pub fn start(ns: &Netns, port: u16, ident: &str) -> TcpServer {
        let listeners = ns
            .run_in(|| -> io::Result<[TcpListener; 2]> {
                let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
                // Port 0: the IPv6 socket takes the port the kernel gave the IPv4 one.
                let port = v4.local_addr()?.port();
                let v6 = TcpListener::from(bind_v6only(libc::SOCK_STREAM, port)?);
                Ok([v4, v6])
            })
            .unwrap_or_else(|e| {
                panic!(
                    "TcpServer {ident}: bind :{port} in netns {}: {e}",
                    ns.name()
                )
            });
        let port = listeners[0].local_addr().map(|a| a.port()).unwrap_or(port);
        for l in &listeners {
            // Readiness comes from poll; a connection reset before accept must not block.
            let _ = l.set_nonblocking(true);
        }
        let ident = ident.to_string();
        let inner = ServerThread::spawn(move |stop, accepted| {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let ready = poll_readable_any(&listeners, SERVER_POLL);
                for (listener, _) in listeners.iter().zip(ready).filter(|(_, r)| *r) {
                    let Ok((stream, peer)) = listener.accept() else {
                        continue;
                    };
                    if stream.set_nonblocking(false).is_err() {
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (stop, reply) = (stop.clone(), format!("{ident} {peer}\n"));
                    conns.retain(|h| !h.is_finished());
                    conns.push(thread::spawn(move || serve_tcp_conn(stream, &reply, &stop)));
                }
            }
            conns.into_iter().for_each(|h| drop(h.join()));
        });
        TcpServer { inner, port }
    }

    /// Connections accepted so far (both families).
    pub fn accepted(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn serve_tcp_conn(stream: TcpStream, reply: &str, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(SERVER_POLL));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // read_until keeps partial data across timeouts.
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {
                line.clear();
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Ok(_) => return, // EOF in the middle of a line
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// UDP ident server on port `port` of both families (0.0.0.0 and [::], two sockets) in a
/// namespace: every datagram is answered with `"{ident} {peer_addr}"` to its sender, from the
/// socket it arrived on. Stops on drop.
#[derive(Debug)]
pub struct UdpServer {
    inner: ServerThread,
    port: u16,
}

impl UdpServer {
    /// Panics (with context) if the port cannot be bound in either family.
    pub fn start(ns: &Netns, port: u16, ident: &str) -> UdpServer {
        let socks = ns
            .run_in(|| -> io::Result<[UdpSocket; 2]> {
                let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
                let port = v4.local_addr()?.port();
                let v6 = UdpSocket::from(bind_v6only(libc::SOCK_DGRAM, port)?);
                Ok([v4, v6])
            })
            .unwrap_or_else(|e| {
                panic!(
                    "UdpServer {ident}: bind :{port} in netns {}: {e}",
                    ns.name()
                )
            });
        let port = socks[0].local_addr().map(|a| a.port()).unwrap_or(port);
        for s in &socks {
            let _ = s.set_nonblocking(true);
        }
        let ident = ident.to_string();
        let inner = ServerThread::spawn(move |stop, received| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                let ready = poll_readable_any(&socks, SERVER_POLL);
                for (sock, _) in socks.iter().zip(ready).filter(|(_, r)| *r) {
                    while let Ok((_, peer)) = sock.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::SeqCst);
                        let _ = sock.send_to(format!("{ident} {peer}").as_bytes(), peer);
                    }
                }
            }
        });
        UdpServer { inner, port }
    }

    /// Datagrams received so far (both families).
    pub fn received(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
