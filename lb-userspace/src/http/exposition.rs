//! The Prometheus text exposition served on /metrics: the registry's histograms, counters and
//! gauges, and the per-Service packet and byte counters read from the pinned maps at scrape
//! time.
use std::fmt::{Display, Write as _};
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::Result;

use crate::datapath::{fmt_addr, frontend_counters};
use crate::metrics::{Histogram, Metrics, BUCKETS};
use crate::types::{FrontendKind, Proto};

/// The Prometheus text exposition of `m`, with per-service counters read from `bpf_root`.
pub fn render(m: &Metrics, bpf_root: &Path) -> String {
    let mut out = String::new();
    histogram(
        &mut out,
        "podlb_sync_duration_seconds",
        "Time to compute the desired state and write the difference to the maps.",
        &m.sync_duration,
    );
    histogram(
        &mut out,
        "podlb_event_to_map_latency_seconds",
        "From the arrival of a change (watch event, manifest change) to the end of the map writes that apply it.",
        &m.event_latency,
    );
    let counters = [
        (
            "podlb_syncs_total",
            "Syncs (source changes and periodic resyncs).",
            &m.syncs,
        ),
        (
            "podlb_map_writes_total",
            "Map entries written or deleted by syncs.",
            &m.map_writes,
        ),
        (
            "podlb_map_full_errors_total",
            "Frontends or backends left out because a map or id space was full.",
            &m.map_full_errors,
        ),
        (
            "podlb_map_write_errors_total",
            "Failed map writes.",
            &m.map_write_errors,
        ),
        (
            "podlb_drift_repairs_total",
            "Map writes that repaired entries changed behind the agent's back.",
            &m.drift_repairs,
        ),
        (
            "podlb_watch_errors_total",
            "Errors of the Kubernetes API watches (each is retried).",
            &m.watch_errors,
        ),
        (
            "podlb_relists_total",
            "Re-lists of a Kubernetes API watch after the first list (e.g. after 410 Gone).",
            &m.relists,
        ),
    ];
    for (name, help, c) in counters {
        scalar(&mut out, name, help, "counter", c.get());
    }
    let gauges = [
        (
            "podlb_services_programmed",
            "Services with at least one programmed frontend.",
            &m.services,
        ),
        (
            "podlb_frontends_programmed",
            "Frontends in the maps.",
            &m.frontends,
        ),
        (
            "podlb_backends_programmed",
            "Backends in the maps.",
            &m.backends,
        ),
    ];
    for (name, help, g) in gauges {
        scalar(&mut out, name, help, "gauge", g.get());
    }
    let last = m
        .last_updated()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    scalar(
        &mut out,
        "podlb_last_sync_timestamp_seconds",
        "When the last sync finished.",
        "gauge",
        last,
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

/// One metric of one value, with its help and type lines.
fn scalar(out: &mut String, name: &str, help: &str, kind: &str, value: impl Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// A histogram with its help and type lines, buckets cumulative.
pub(super) fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let h = h.snapshot();
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

/// The per-frontend packet and byte counters, straight from the frontend, name and per-CPU
/// stats maps (batched reads; slots and backends are not read).
fn render_service_counters(out: &mut String, bpf_root: &Path) -> Result<()> {
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
