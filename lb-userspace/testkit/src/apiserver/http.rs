//! The HTTP/1.1 the stand-in speaks: the listener inside a network namespace, its JSON answers
//! and watch streams over the agent's own wire format (`podlb::http::wire`: reading requests,
//! writing heads and chunks), and [`http_get`], the one-shot client of the tests.
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use podlb::http::wire::{self, Body};
use serde_json::Value;

/// A listener on 127.0.0.1:`port` created inside the network namespace at `netns`.
pub(super) fn bind_in(netns: &Path, port: u16) -> Result<TcpListener> {
    let file = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    thread::scope(|s| {
        s.spawn(move || -> Result<TcpListener> {
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {}: {}", netns.display(), io::Error::last_os_error());
            }
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .map_err(|_| anyhow!("bind thread panicked"))?
    })
}

pub(super) use podlb::http::wire::{chunk, read_request};

/// A JSON answer with its `Content-Length`, the connection kept open.
pub(super) fn respond(conn: &mut impl Write, code: u16, body: &Value) -> io::Result<()> {
    respond_text(conn, code, &body.to_string())
}

/// A JSON text answer with its `Content-Length`, the connection kept open.
pub(super) fn respond_text(conn: &mut impl Write, code: u16, body: &str) -> io::Result<()> {
    let body = Body::Full {
        data: body.as_bytes(),
        head_only: false,
    };
    wire::respond(conn, code, "application/json", body, false)
}

/// The head of a chunked watch stream; [`chunk`]s follow.
pub(super) fn start_stream(conn: &mut impl Write) -> io::Result<()> {
    wire::respond(conn, 200, "application/json", Body::Chunked, false)
}

/// Sends one HTTP GET to `addr` (e.g. the agent's health or metrics server) and returns
/// (status, body). For tests; the connection is made from the calling thread's namespace.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line: {head:?}"))?;
    Ok((code, body.to_string()))
}
