//! Unit tests of the API server stand-in: selectors, paged lists and continue tokens, URL
//! decoding and routing.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::filter::Filter;
use super::list::{base64url, decode_continue, encode_continue, unbase64url};
use super::serve::route;
use super::*;
use podlb::http::wire::decode;

fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn selectors() {
    let svc = |labels: Value| json!({"metadata": {"name": "a", "namespace": "default", "labels": labels}});
    let f = Filter::parse(
        &q(&[(
            "labelSelector",
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
        )]),
        None,
    )
    .unwrap();
    assert!(f.matches(&svc(json!({"app": "x"}))));
    assert!(f.matches(&svc(Value::Null)));
    assert!(!f.matches(&svc(json!({"service.kubernetes.io/headless": ""}))));
    assert!(!f.matches(&svc(
        json!({"service.kubernetes.io/service-proxy-name": "other"})
    )));
    let f = Filter::parse(&q(&[("fieldSelector", "metadata.name=a")]), None).unwrap();
    assert!(f.matches(&svc(Value::Null)));
    let f = Filter::parse(&q(&[("fieldSelector", "metadata.name=b")]), None).unwrap();
    assert!(!f.matches(&svc(Value::Null)));
    let f = Filter::parse(&q(&[("labelSelector", "app=x,tier!=db")]), None).unwrap();
    assert!(f.matches(&svc(json!({"app": "x"}))));
    assert!(!f.matches(&svc(json!({"app": "x", "tier": "db"}))));
    assert!(Filter::parse(&q(&[("fieldSelector", "spec.x=1")]), None).is_err());
}

/// GET `path` on `api` (in this process's network namespace): (status, JSON body).
fn get(api: &ApiServer, path: &str) -> (u16, Value) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, api.port()));
    let (code, body) = http_get(addr, path, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
    (code, v)
}

/// "namespace/name" of a list's items, and its continue token.
fn page(list: &Value) -> (Vec<String>, Option<String>) {
    let items = list["items"].as_array().expect("items").iter();
    let keys = items
        .map(|o| {
            let m = &o["metadata"];
            format!(
                "{}/{}",
                m["namespace"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            )
        })
        .collect();
    (
        keys,
        list["metadata"]["continue"].as_str().map(String::from),
    )
}

#[test]
fn paged_lists() {
    crate::testbed::require_root().unwrap_or_else(|e| {
        panic!("paged_lists needs root (the stand-in binds in a network namespace): {e:#}")
    });
    let api = ApiServer::start(Path::new("/proc/self/ns/net")).unwrap();
    let svc = |ns: &str, name: &str, ip: &str| {
        let app = if name.starts_with('s') { "web" } else { "db" };
        json!({"kind": "Service", "metadata": {"name": name, "namespace": ns,
               "labels": {"app": app}}, "spec": {"clusterIP": ip}})
    };
    for (ns, name) in [
        ("a", "s1"),
        ("a", "s2"),
        ("a", "s3"),
        ("a-b", "x"),
        ("b", "y1"),
    ] {
        api.apply(svc(ns, name, "10.96.0.1")).unwrap();
    }
    api.apply(svc("b", "y2", "10.96.0.1")).unwrap();
    api.apply(json!({"kind": "Node", "metadata": {"name": "n1"}}))
        .unwrap();
    // etcd key order: "a-b/" sorts before "a/".
    let all = ["a-b/x", "a/s1", "a/s2", "a/s3", "b/y1", "b/y2"];
    let (code, whole) = get(&api, "/api/v1/services");
    assert_eq!(code, 200, "{whole}");
    assert_eq!(page(&whole), (all.map(String::from).to_vec(), None));
    let rv0 = whole["metadata"]["resourceVersion"].clone();
    assert_eq!(api.list_pages(Kind::Service), 1);

    // Pages of 2, with changes in between: every page is as of the first one's version.
    let (code, p1) = get(&api, "/api/v1/services?limit=2");
    assert_eq!(code, 200, "{p1}");
    let (keys, token) = page(&p1);
    assert_eq!(keys, ["a-b/x", "a/s1"]);
    assert_eq!(p1["metadata"]["resourceVersion"], rv0);
    assert_eq!(p1["metadata"]["remainingItemCount"], 4);
    api.apply(svc("a", "s2", "10.96.0.2")).unwrap();
    api.apply(svc("a", "s25", "10.96.0.2")).unwrap();
    assert!(api.delete(Kind::Service, "b", "y1"));
    let (code, p2) = get(
        &api,
        &format!("/api/v1/services?limit=2&continue={}", token.unwrap()),
    );
    assert_eq!(code, 200, "{p2}");
    let (keys, token) = page(&p2);
    assert_eq!(keys, ["a/s2", "a/s3"]);
    assert_eq!(p2["metadata"]["resourceVersion"], rv0);
    assert_eq!(p2["metadata"]["remainingItemCount"], 2);
    assert_eq!(
        p2["items"][0]["spec"]["clusterIP"], "10.96.0.1",
        "not the first page's version"
    );
    let (code, p3) = get(
        &api,
        &format!("/api/v1/services?limit=2&continue={}", token.unwrap()),
    );
    assert_eq!(code, 200, "{p3}");
    assert_eq!(page(&p3), (vec!["b/y1".into(), "b/y2".into()], None));
    assert_eq!(p3["metadata"]["resourceVersion"], rv0);
    assert!(p3["metadata"].get("remainingItemCount").is_none());
    let pages: Vec<Value> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .collect();
    assert_eq!(
        Value::from(pages),
        whole["items"],
        "the pages differ from the whole list"
    );
    assert_eq!(api.lists(Kind::Service), 2);
    assert_eq!(api.list_pages(Kind::Service), 4);
    assert_eq!(api.max_page_items(Kind::Service), 6);

    // A new list sees the changes; a limit beyond the end gives no token.
    let (_, l) = get(&api, "/api/v1/services?limit=4");
    assert_eq!(page(&l).0, ["a-b/x", "a/s1", "a/s2", "a/s25"]);
    assert_eq!(l["items"][2]["spec"]["clusterIP"], "10.96.0.2");
    assert_ne!(l["metadata"]["resourceVersion"], rv0);
    let (_, l) = get(&api, "/api/v1/services?limit=6");
    assert_eq!(page(&l).1, None);

    // Selectors and namespaces: pages hold matching items only, no remainingItemCount.
    let mut keys = Vec::new();
    let mut path = "/api/v1/services?limit=1&labelSelector=app%3Dweb".to_string();
    loop {
        let (code, p) = get(&api, &path);
        assert_eq!(code, 200, "{p}");
        assert!(p["metadata"].get("remainingItemCount").is_none(), "{p}");
        let (k, token) = page(&p);
        keys.extend(k);
        let Some(token) = token else { break };
        path = format!(
            "/api/v1/services?limit=1&labelSelector=app%3Dweb&continue={}",
            token
        );
    }
    assert_eq!(keys, ["a/s1", "a/s2", "a/s25", "a/s3"]);
    let (_, p) = get(&api, "/api/v1/namespaces/b/services?limit=1");
    assert_eq!(page(&p).0, ["b/y2"]);
    assert_eq!(page(&p).1, None);

    // A token of a compacted version, of a version never listed: 410 Gone, Expired.
    let (_, p) = get(&api, "/api/v1/services?limit=2");
    let token = page(&p).1.unwrap();
    api.apply(svc("c", "z", "10.96.0.3")).unwrap();
    api.compact();
    for token in [token, encode_continue(12345, "a/\0")] {
        let (code, s) = get(
            &api,
            &format!("/api/v1/services?limit=2&continue={}", token),
        );
        assert_eq!(code, 410, "{s}");
        assert_eq!(
            (s["kind"].as_str(), s["code"].as_u64(), s["reason"].as_str()),
            (Some("Status"), Some(410), Some("Expired"))
        );
    }
    assert_eq!(api.expired_continues(), 2);
    // Malformed, or with a resourceVersion: 400.
    let (code, _) = get(&api, "/api/v1/services?limit=2&continue=bm90IGpzb24");
    assert_eq!(code, 400);
    let (_, p) = get(&api, "/api/v1/services?limit=2");
    let token = page(&p).1.unwrap();
    let (code, s) = get(
        &api,
        &format!(
            "/api/v1/services?limit=2&resourceVersion=1&continue={}",
            token
        ),
    );
    assert_eq!(code, 400, "{s}");
    let (code, _) = get(
        &api,
        &format!("/api/v1/services?limit=2&continue={}", token),
    );
    assert_eq!(code, 200);
}

#[test]
fn continue_tokens() {
    assert_eq!(base64url(b"hello"), "aGVsbG8");
    assert_eq!(base64url(b"hell"), "aGVsbA");
    for data in [&b""[..], b"a", b"ab", b"abc", b"\xff\xfe\x00{}"] {
        assert_eq!(unbase64url(&base64url(data)).as_deref(), Some(data));
    }
    let t = encode_continue(42, "ns/name\0");
    assert_eq!(decode_continue(&t), Some((42, "ns/name\0".to_string())));
    assert_eq!(decode_continue("%%"), None);
    assert_eq!(
        decode_continue(&base64url(b"{\"v\":\"x\",\"rv\":1,\"start\":\"\"}")),
        None
    );
}

#[test]
fn query_decoding_and_routes() {
    assert_eq!(decode("%21a%2Cb+c"), "!a,b c");
    assert_eq!(decode("50%"), "50%");
    assert_eq!(route("/api/v1/services"), Some((Kind::Service, None)));
    assert_eq!(
        route("/apis/discovery.k8s.io/v1/namespaces/x/endpointslices"),
        Some((Kind::EndpointSlice, Some("x".into())))
    );
    assert_eq!(route("/api/v1/nodes"), Some((Kind::Node, None)));
    assert_eq!(route("/api/v1/namespaces/x/nodes"), None);
    assert_eq!(route("/api/v1/pods"), None);
}

#[test]
fn bearer_token_of_a_request_head() {
    use super::tls::bearer;
    let head = |h: &str| format!("GET /api/v1/services HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n");
    assert_eq!(
        bearer(head("Authorization: Bearer abc-1").as_bytes()),
        Some("abc-1")
    );
    assert_eq!(
        bearer(head("authorization:   bearer  abc-1 ").as_bytes()),
        Some("abc-1")
    );
    assert_eq!(
        bearer(head("Authorization: Basic dXNlcg==").as_bytes()),
        None
    );
    assert_eq!(bearer(head("X-Authorization: Bearer abc").as_bytes()), None);
    assert_eq!(bearer(head("Accept: */*").as_bytes()), None);
    // The request line is not a header, whatever it holds.
    assert_eq!(
        bearer(b"GET /Authorization: Bearer x HTTP/1.1\r\n\r\n"),
        None
    );
}
