//! The HTTP endpoints of the agent: health and Prometheus metrics, with kube-proxy's conventions
//! where there are some.
//!
//! - `--healthz-addr` (default `0.0.0.0:10256`): `/healthz` answers 200 once the datapath was
//!   synced and while syncs keep happening (the last one less than the health timeout ago),
//!   503 before the first sync or when stale; `/livez` answers 200 while the process serves.
//!   Both bodies are JSON with `lastUpdated` and `currentTime` (RFC 3339), as kube-proxy's.
//! - `--metrics-addr` (default `127.0.0.1:10249`): `/metrics` in the Prometheus text format.
//!
//! The servers run on their own threads, so they answer (and report staleness) even while the
//! agent loop is busy or stuck. Per-service counters are read from the pinned maps at scrape time.
//!
//! This file holds the server (one short-lived connection at a time, over [`wire`]'s HTTP/1.1)
//! and the routes; `health` gives the /healthz answer, `exposition` the /metrics text.
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::metrics::METRICS;

mod exposition;
mod health;
#[cfg(test)]
mod tests;
pub mod wire;

pub use exposition::render;
pub use health::{health, rfc3339};
use wire::Body;

/// Status, content type and body of one answer.
type Answer = (u16, &'static str, String);

/// Serves `handler(path)` over HTTP/1.1 on `addr`, one short-lived connection at a time, on a
/// thread of its own. Fails only when the address cannot be bound.
fn serve(
    what: &'static str,
    addr: SocketAddr,
    handler: impl Fn(&str) -> Answer + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {what} on {addr}"))?;
    tracing::info!(%addr, "serving {what}");
    std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &handler);
            }
        })?;
    Ok(())
}

fn answer(conn: TcpStream, handler: &impl Fn(&str) -> Answer) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(request) = wire::read_request(&mut reader)? else {
        return Ok(());
    };
    let (status, ctype, body) = match request.method.as_str() {
        "GET" | "HEAD" => handler(&request.path),
        _ => (405, "text/plain", "method not allowed\n".into()),
    };
    let body = Body::Full {
        data: body.as_bytes(),
        head_only: request.method == "HEAD",
    };
    wire::respond(&mut &conn, status, ctype, body, true)
}

/// Starts the health server (`/healthz`, `/livez`).
pub fn serve_health(addr: SocketAddr) -> Result<()> {
    serve("healthz", addr, |path| match path {
        "/healthz" => {
            let (ok, body) = health(&METRICS);
            (if ok { 200 } else { 503 }, "application/json", body)
        }
        "/livez" => (200, "application/json", health(&METRICS).1),
        _ => (404, "text/plain", "not found\n".into()),
    })
}

/// Starts the metrics server (`/metrics`).
pub fn serve_metrics(addr: SocketAddr, bpf_root: PathBuf) -> Result<()> {
    let root = Arc::new(bpf_root);
    serve("metrics", addr, move |path| match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render(&METRICS, &root),
        ),
        _ => (404, "text/plain", "not found\n".into()),
    })
}
