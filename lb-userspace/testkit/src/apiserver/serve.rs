//! Serving the connections: the accept loop, one thread per connection (plain HTTP, or HTTPS
//! with a bearer token), and the routing of each request to a list or a watch of its kind.
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::filter::Filter;
use super::http::{read_request, respond, respond_text};
use super::list::list_response;
use super::status;
use super::store::{Inner, Kind};
use super::tls::{Recording, Tls, TlsConn};
use super::watch::serve_watch;

pub(super) fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<Tls>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let epoch = inner.conn_epoch.load(Ordering::SeqCst);
                let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = conn.try_clone() {
                    inner
                        .conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, c);
                }
                let (inner, tls) = (inner.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = serve(&conn, &inner, epoch, tls.as_deref());
                    let _ = conn.shutdown(Shutdown::Both);
                    inner
                        .conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// (kind, namespace filter) of a request path.
pub(super) fn route(path: &str) -> Option<(Kind, Option<String>)> {
    for kind in Kind::ALL {
        let (prefix, plural) = kind.path();
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{plural}") {
            return Some((kind, None));
        }
        if let Some(rest) = rest.strip_prefix("/namespaces/") {
            if let Some((ns, p)) = rest.split_once('/') {
                if p == plural && kind.namespaced() {
                    return Some((kind, Some(ns.to_string())));
                }
            }
        }
    }
    None
}

/// Serves one connection, over TLS when `tls` (after the handshake; a client that rejects the
/// certificate ends it there).
fn serve(conn: &TcpStream, inner: &Inner, epoch: u64, tls: Option<&Tls>) -> io::Result<()> {
    match tls {
        None => serve_conn(conn.try_clone()?, inner, epoch, None),
        Some(t) => {
            let stream = TlsConn::accept(t.config.clone(), conn.try_clone()?)?;
            serve_conn(stream, inner, epoch, Some(t))
        }
    }
}

fn serve_conn(
    stream: impl Read + Write,
    inner: &Inner,
    epoch: u64,
    tls: Option<&Tls>,
) -> io::Result<()> {
    let mut reader = Recording::new(BufReader::new(stream));
    loop {
        reader.seen.clear();
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        if inner.conn_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(());
        }
        let authorized = tls.is_none_or(|t| t.authorized(&reader.seen));
        let writer = reader.get_mut().get_mut();
        if !authorized {
            inner.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
            respond(writer, 401, &status(401, "Unauthorized", "Unauthorized"))?;
            if req.close {
                return Ok(());
            }
            continue;
        }
        if req.method != "GET" {
            respond(
                writer,
                405,
                &status(405, "MethodNotAllowed", "read-only stand-in"),
            )?;
            continue;
        }
        let Some((kind, ns)) = route(&req.path) else {
            respond(
                writer,
                404,
                &status(404, "NotFound", &format!("no such path {}", req.path)),
            )?;
            continue;
        };
        let filter = match Filter::parse(&req.query, ns) {
            Ok(f) => f,
            Err(e) => {
                respond(writer, 400, &status(400, "BadRequest", &e))?;
                continue;
            }
        };
        let selector = |k: &str| req.query.get(k).cloned().unwrap_or_default();
        inner
            .counters
            .selectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())[kind as usize]
            .push((selector("labelSelector"), selector("fieldSelector")));
        let watch = matches!(
            req.query.get("watch").map(String::as_str),
            Some("true" | "1")
        );
        if watch {
            inner.counters.watches[kind as usize].fetch_add(1, Ordering::SeqCst);
            let from = req
                .query
                .get("resourceVersion")
                .cloned()
                .unwrap_or_default();
            let timeout = req
                .query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map(Duration::from_secs);
            let bookmarks = req
                .query
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true");
            if !serve_watch(
                writer, inner, epoch, kind, &filter, &from, timeout, bookmarks,
            )? {
                return Ok(());
            }
        } else {
            let (code, body) = list_response(inner, kind, &filter, &req.query);
            respond_text(writer, code, &body)?;
        }
        if req.close {
            return Ok(());
        }
    }
}
