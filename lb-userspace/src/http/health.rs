//! The health answer served on /healthz and /livez: healthy while syncs keep coming, as JSON
//! with kube-proxy's fields and RFC 3339 times.
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;

/// (healthy, JSON body) as served on /healthz: healthy once the datapath was synced and while
/// the last sync is less than the health timeout old.
pub fn health(m: &Metrics) -> (bool, String) {
    let now = SystemTime::now();
    let last = m.last_updated();
    let timeout = m.health_timeout();
    let healthy = last.is_some_and(|t| now.duration_since(t).unwrap_or_default() <= timeout);
    let body = serde_json::json!({
        "lastUpdated": last.map(rfc3339).unwrap_or_default(),
        "currentTime": rfc3339(now),
        "healthy": healthy,
    });
    (healthy, body.to_string())
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
