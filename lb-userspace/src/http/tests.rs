//! The HTTP module's unit tests: RFC 3339 times, histogram buckets.
use std::time::{Duration, UNIX_EPOCH};

use super::exposition::histogram;
use super::rfc3339;
use crate::metrics::Histogram;

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
    histogram(&mut out, "x", "help", &h);
    assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
    assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
    assert!(out.contains("x_bucket{le=\"30\"} 2\n"), "{out}");
    assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
    assert!(out.contains("x_count 3\n"), "{out}");
}
