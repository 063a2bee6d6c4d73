//! The values of the agent's settings, parsed from (and written back to) the strings of flags and
//! configuration files: listen addresses, durations, the cluster CIDRs, the NodePort addresses,
//! interface globs and the log format. Each parser returns the reason a value is refused, without
//! the field's name: the caller prefixes the flag, or the file and field.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::types::{Cidr, NodePortAddresses};

/// The health server's port when an address has none (kube-proxy's).
pub const HEALTHZ_PORT: u16 = 10256;
/// The metrics server's port when an address has none (kube-proxy's).
pub const METRICS_PORT: u16 = 10249;
/// The shortest resync interval accepted.
pub const MIN_RESYNC: Duration = Duration::from_millis(100);

/// How log lines are written (`--log-format`, `logging.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (want text or json)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// A server's listen address: "IP:PORT" (IPv6 as "[IP]:PORT"), or a bare "IP" for
/// `default_port` (as kube-proxy's `healthzBindAddress` and `metricsBindAddress` allow), or
/// "off" (None: no server).
pub fn listen_addr(s: &str, default_port: u16) -> Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    match bare.unwrap_or(s).parse::<IpAddr>() {
        Ok(ip) => Ok(Some(SocketAddr::new(ip, default_port))),
        Err(_) => Err(format!("{s:?} is not an address (want IP, IP:PORT or off)")),
    }
}

/// "off" for no server, else "IP:PORT".
pub fn listen_addr_string(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "off".to_string(), |a| a.to_string())
}

/// A duration: a number of seconds ("10", "0.5"), or numbers with units, Go style ("10s",
/// "500ms", "2m", "1h", "1m30s"; units h, m, s, ms, us, ns). At least [`MIN_RESYNC`].
pub fn resync_interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < MIN_RESYNC {
        return Err(format!("{s:?} is too short (at least 100ms)"));
    }
    Ok(d)
}

fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (want e.g. 10s, 500ms, 2m, or seconds)");
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut rest = t;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// "10s", "1m30s", "500ms", "1.5ms": what [`resync_interval`] reads back to the same duration.
pub fn duration_string(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        let s = d.as_secs();
        match (s / 3600, s % 3600 / 60, s % 60) {
            (0, 0, s) => format!("{s}s"),
            (0, m, 0) => format!("{m}m"),
            (0, m, s) => format!("{m}m{s}s"),
            (h, 0, 0) => format!("{h}h"),
            (h, m, s) => format!("{h}h{m}m{s}s"),
        }
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// kube-proxy's `clusterCIDR`: comma-separated CIDRs, at most one per family; "" is none.
pub fn cluster_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    let mut out: Vec<Cidr> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let c: Cidr = part.parse()?;
        if let Some(other) = out.iter().find(|o| o.family() == c.family()) {
            return Err(format!(
                "two {} CIDRs ({other} and {c}); at most one per family",
                c.family()
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// The CIDRs as kube-proxy writes `clusterCIDR`: comma-separated.
pub fn cluster_cidrs_string(cidrs: &[Cidr]) -> String {
    let parts: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
    parts.join(",")
}

/// kube-proxy's `nodePortAddresses`: none (the default), the single word "primary", or CIDRs
/// (of either family, any number).
pub fn nodeport_addresses<S: AsRef<str>>(items: &[S]) -> Result<NodePortAddresses, String> {
    let items: Vec<&str> = items
        .iter()
        .map(|s| s.as_ref().trim())
        .filter(|s| !s.is_empty())
        .collect();
    match items.as_slice() {
        [] => Ok(NodePortAddresses::Default),
        ["primary"] => Ok(NodePortAddresses::Primary),
        _ if items.contains(&"primary") => {
            Err("\"primary\" cannot be combined with CIDRs".to_string())
        }
        _ => {
            let mut cidrs = Vec::new();
            for item in items {
                let c: Cidr = item.parse()?;
                if !cidrs.contains(&c) {
                    cidrs.push(c);
                }
            }
            Ok(NodePortAddresses::Cidrs(cidrs))
        }
    }
}

/// The list [`nodeport_addresses`] reads back to `n`.
pub fn nodeport_addresses_list(n: &NodePortAddresses) -> Vec<String> {
    match n {
        NodePortAddresses::Default => Vec::new(),
        NodePortAddresses::Primary => vec!["primary".to_string()],
        NodePortAddresses::Cidrs(c) => c.iter().map(Cidr::to_string).collect(),
    }
}

/// A pod interface glob (`--pod-interface`, `podInterfaces`).
pub fn glob(s: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(s).map_err(|e| format!("bad glob {s:?}: {e}"))
}

/// The tracing filter of a verbosity (`-v`, `logging.verbosity`), as klog's levels map onto
/// podlb's: 0 to 2 info, 3 and 4 debug, 5 and up trace, for podlb's own log lines; other
/// crates' lines (the Kubernetes client's) at info, and at debug from 5 up.
pub fn verbosity_filter(v: u32) -> &'static str {
    match v {
        0..=2 => "info",
        3..=4 => "info,podlb=debug",
        _ => "debug,podlb=trace",
    }
}

/// Whether the interface list names only usable interface names.
pub fn interface_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 || s.contains(['/', ' ']) {
        return Err(format!("{s:?} is not an interface name"));
    }
    Ok(())
}
