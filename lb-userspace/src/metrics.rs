//! The metric registry: the counters, gauges and latency histograms the agent and the sources
//! update, one set per process ([`METRICS`]), and the time of the last sync, which /healthz
//! judges by. The HTTP endpoints that serve them (with kube-proxy's conventions) are in
//! `http`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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

/// Upper bounds (seconds) of the latency buckets: 50 µs to 30 s.
pub const BUCKETS: [f64; 18] = [
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
    /// Empty (one per metric in [`METRICS`]; more in tests).
    pub(crate) const fn new() -> Self {
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

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        HistogramSnapshot {
            counts: h.counts.clone(),
            sum: h.sum,
            count: h.count,
        }
    }
}

/// A histogram's counts at one time.
pub struct HistogramSnapshot {
    /// Non-cumulative count per bucket of [`BUCKETS`], then one for +Inf; empty before the
    /// first observation.
    pub counts: Vec<u64>,
    /// The sum of the observations, in seconds.
    pub sum: f64,
    pub count: u64,
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

    /// When the last sync finished; None before the first.
    pub fn last_updated(&self) -> Option<SystemTime> {
        *self.last_updated.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How old the last sync may be for /healthz to answer healthy.
    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms.load(Ordering::Relaxed))
    }
}
