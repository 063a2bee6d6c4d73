//! Health and Prometheus metrics endpoints, with kube-proxy's conventions where there are some.
//!
//! - `--healthz-addr` (default `0.0.0.0:10256`): `/healthz` answers 200 once the datapath was
//!   synced and while syncs keep happening (the last one less than the health timeout ago),
//!   503 before the first sync or when stale; `/livez` answers 200 while the process serves.
//!   Both bodies are JSON with `lastUpdated` and `currentTime` (RFC 3339), as kube-proxy's.
//! - `--metrics-addr` (default `127.0.0.1:10249`): `/metrics` in the Prometheus text format.
//!
//! The servers run on their own threads, so they answer (and report staleness) even while the
//! agent loop is busy or stuck. Per-service counters are read from the pinned maps at scrape time.
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::datapath::{fmt_addr, frontend_counters};
use crate::types::{FrontendKind, Proto};

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Gauge(AtomicU64);

impl Gauge {
    const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency buckets: 50 µs to 10 s.
const BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct HistState {
    /// Non-cumulative count per bucket; one more for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

pub struct Histogram(Mutex<HistState>);

impl Histogram {
    const fn new() -> Self {
        Histogram(Mutex::new(HistState {
            counts: Vec::new(),
            sum: 0.0,
            count: 0,
        }))
    }

    pub fn observe(&self, d: Duration) {
        self.observe_many(std::iter::once(d));
    }

    pub fn observe_many(&self, ds: impl IntoIterator<Item = Duration>) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len() + 1];
        }
        for d in ds {
            let s = d.as_secs_f64();
            let i = BUCKETS
                .iter()
                .position(|b| s <= *b)
                .unwrap_or(BUCKETS.len());
            h.counts[i] += 1;
            h.sum += s;
            h.count += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
    }
}

/// Everything the agent measures. One per process ([`METRICS`]).
pub struct Metrics {
    pub sync_duration: Histogram,
    pub event_latency: Histogram,
    pub syncs: Counter,
    pub map_writes: Counter,
    pub map_full_errors: Counter,
    pub map_write_errors: Counter,
    pub drift_repairs: Counter,
    pub watch_errors: Counter,
    pub relists: Counter,
    pub services: Gauge,
    pub frontends: Gauge,
    pub backends: Gauge,
    /// Wall-clock time of the last completed sync; None before the first.
    last_updated: Mutex<Option<SystemTime>>,
    /// /healthz turns 503 when the last sync is older than this (milliseconds).
    health_timeout_ms: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    sync_duration: Histogram::new(),
    event_latency: Histogram::new(),
    syncs: Counter::new(),
    map_writes: Counter::new(),
    map_full_errors: Counter::new(),
    map_write_errors: Counter::new(),
    drift_repairs: Counter::new(),
    watch_errors: Counter::new(),
    relists: Counter::new(),
    services: Gauge::new(),
    frontends: Gauge::new(),
    backends: Gauge::new(),
    last_updated: Mutex::new(None),
    health_timeout_ms: AtomicU64::new(60_000),
};

impl Metrics {
    /// A sync finished: the datapath holds what the source last said.
    pub fn synced(&self) {
        *self.last_updated.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
    }

    pub fn set_health_timeout(&self, d: Duration) {
        self.health_timeout_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// (healthy, JSON body) as served on /healthz.
    pub fn health(&self) -> (bool, String) {
        let now = SystemTime::now();
        let last = *self.last_updated.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = Duration::from_millis(self.health_timeout_ms.load(Ordering::Relaxed));
        let healthy = last.is_some_and(|t| now.duration_since(t).unwrap_or_default() <= timeout);
        let body = serde_json::json!({
            "lastUpdated": last.map(rfc3339).unwrap_or_default(),
            "currentTime": rfc3339(now),
            "healthy": healthy,
        });
        (healthy, body.to_string())
    }

    /// The Prometheus text exposition, with per-service counters read from `bpf_root`.
    pub fn render(&self, bpf_root: &std::path::Path) -> String {
        let mut out = String::new();
        self.sync_duration.render(
            &mut out,
            "podlb_sync_duration_seconds",
            "Time to compute the desired state and write the difference to the maps.",
        );
        self.event_latency.render(
            &mut out,
            "podlb_event_to_map_latency_seconds",
            "From the arrival of a change (watch event, manifest change) to the end of the map writes that apply it.",
        );
        let counters = [
            (
                "podlb_syncs_total",
                "Syncs (source changes and periodic resyncs).",
                &self.syncs,
            ),
            (
                "podlb_map_writes_total",
                "Map entries written or deleted by syncs.",
                &self.map_writes,
            ),
            (
                "podlb_map_full_errors_total",
                "Frontends or backends left out because a map or id space was full.",
                &self.map_full_errors,
            ),
            (
                "podlb_map_write_errors_total",
                "Failed map writes.",
                &self.map_write_errors,
            ),
            (
                "podlb_drift_repairs_total",
                "Map writes that repaired entries changed behind the agent's back.",
                &self.drift_repairs,
            ),
            (
                "podlb_watch_errors_total",
                "Errors of the Kubernetes API watches (each is retried).",
                &self.watch_errors,
            ),
            (
                "podlb_relists_total",
                "Re-lists of a Kubernetes API watch after the first list (e.g. after 410 Gone).",
                &self.relists,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        let gauges = [
            (
                "podlb_services_programmed",
                "Services with at least one programmed frontend.",
                &self.services,
            ),
            (
                "podlb_frontends_programmed",
                "Frontends in the maps.",
                &self.frontends,
            ),
            (
                "podlb_backends_programmed",
                "Backends in the maps.",
                &self.backends,
            ),
        ];
        for (name, help, g) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        let last = *self.last_updated.lock().unwrap_or_else(|e| e.into_inner());
        let last = last
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP podlb_last_sync_timestamp_seconds When the last sync finished.\n\
             # TYPE podlb_last_sync_timestamp_seconds gauge\npodlb_last_sync_timestamp_seconds {last}"
        );
        if let Err(e) = render_service_counters(&mut out, bpf_root) {
            let _ = writeln!(
                out,
                "# cannot read the service maps: {}",
                e.to_string().replace('\n', " ")
            );
        }
        out
    }
}

/// The per-frontend packet and byte counters, straight from the frontend, name and per-CPU
/// stats maps (batched reads; slots and backends are not read).
fn render_service_counters(out: &mut String, bpf_root: &std::path::Path) -> Result<()> {
    const PACKETS: &str = "podlb_service_packets_total";
    const BYTES: &str = "podlb_service_bytes_total";
    let mut bytes = String::new();
    let _ = writeln!(
        out,
        "# HELP {PACKETS} Packets per Service frontend (per-CPU counters summed).\n# TYPE {PACKETS} counter"
    );
    let _ = writeln!(
        bytes,
        "# HELP {BYTES} Bytes per Service frontend (per-CPU counters summed).\n# TYPE {BYTES} counter"
    );
    for c in frontend_counters(bpf_root)? {
        let (k, f, name, stats) = (c.key, c.frontend, c.name, c.stats);
        let labels = format!(
            "{{service=\"{}\",frontend=\"{}\",protocol=\"{}\",kind=\"{}\"}}",
            escape(&name),
            escape(&fmt_addr(&k.addr, k.family, k.port)),
            Proto::name_of(k.proto),
            FrontendKind::name_of(f.kind)
        );
        let _ = writeln!(out, "{PACKETS}{labels} {}", stats.packets);
        let _ = writeln!(bytes, "{BYTES}{labels} {}", stats.bytes);
    }
    out.push_str(&bytes);
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `2026-11-27T12:06:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

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
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers; requests here have no body.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    let (status, ctype, body) = match method {
        "GET" | "HEAD" => handler(path),
        _ => (405, "text/plain", "method not allowed\n".into()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

/// Starts the health server (`/healthz`, `/livez`).
pub fn serve_health(addr: SocketAddr) -> Result<()> {
    serve("healthz", addr, |path| match path {
        "/healthz" => {
            let (ok, body) = METRICS.health();
            (if ok { 200 } else { 503 }, "application/json", body)
        }
        "/livez" => (200, "application/json", METRICS.health().1),
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
            METRICS.render(&root),
        ),
        _ => (404, "text/plain", "not found\n".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_798_372_800 + 3661), "2026-12-27T13:01:01.000Z");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe_many([
            Duration::from_micros(10),
            Duration::from_millis(3),
            Duration::from_secs(99),
        ]);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
