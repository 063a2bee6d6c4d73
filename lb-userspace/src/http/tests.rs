//! The HTTP module's unit tests: RFC 3339 times, histogram buckets, the wire format.
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

#[test]
fn wire_reads_requests_in_turn_and_frames_responses() {
    use super::wire::{chunk, read_request, respond, Body};
    let mut input = std::io::Cursor::new(
        b"GET /api/v1/services?watch=1&labelSelector=a%3Db+c HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /x HTTP/1.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody\
          GET /trunc"
            .to_vec(),
    );
    let first = read_request(&mut input).unwrap().expect("a whole request");
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("GET", "/api/v1/services")
    );
    assert_eq!(first.query.get("watch").map(String::as_str), Some("1"));
    assert_eq!(
        first.query.get("labelSelector").map(String::as_str),
        Some("a=b c")
    );
    assert!(!first.close);
    let second = read_request(&mut input)
        .unwrap()
        .expect("the body is skipped");
    assert_eq!((second.method.as_str(), second.close), ("POST", true));
    assert_eq!(
        read_request(&mut input).unwrap(),
        None,
        "a request cut short is none"
    );

    let mut out = Vec::new();
    respond(
        &mut out,
        503,
        "text/plain",
        Body::Full {
            data: b"no",
            head_only: false,
        },
        true,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    );
    let mut out = Vec::new();
    respond(&mut out, 200, "application/json", Body::Chunked, false).unwrap();
    chunk(&mut out, b"{}").unwrap();
    chunk(&mut out, b"").unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    );
}
