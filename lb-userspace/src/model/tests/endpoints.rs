//! Which endpoints become backends: readiness and the serving/terminating fallback, the
//! first address only, duplicates, and which EndpointSlices feed a Service.
use super::*;

#[test]
fn readiness_and_terminating_fallback() {
    let svc = r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
"#;
    // ready: nil counts as ready; not-ready endpoints are excluded.
    let b = run(&format!(
        "{svc}
- {{addresses: [10.0.0.1]}}
- {{addresses: [10.0.0.2], conditions: {{ready: true}}}}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.4], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: []}}
"
    ));
    assert_eq!(
        backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
        bes(&["10.0.0.1:8080", "10.0.0.2:8080"])
    );
    // No ready endpoint: fall back to serving+terminating (serving nil = true).
    let b = run(&format!(
        "{svc}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.4], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.0.0.5], conditions: {{ready: false, terminating: true}}}}
- {{addresses: [10.0.0.6], conditions: {{ready: false, serving: false, terminating: true}}}}
"
    ));
    assert_eq!(
        backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
        bes(&["10.0.0.4:8080", "10.0.0.5:8080"])
    );
    // Nothing usable: the frontend stays, with no backends.
    let b = run(&format!(
        "{svc}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.6], conditions: {{ready: false, serving: false, terminating: true}}}}
"
    ));
    assert_eq!(backends_of(&b, "10.96.0.1", 80, Proto::Tcp), vec![]);
}

#[test]
fn uses_first_address_only() {
    let b = run(r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1, 10.0.0.2]}]
"#);
    assert_eq!(
        backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
        bes(&["10.0.0.1:8080"])
    );
}

#[test]
fn duplicate_ip_non_terminating_wins_and_backends_deduplicated() {
    let slice = |name: &str, eps: &str| {
        format!(
            "---
kind: EndpointSlice
metadata: {{name: {name}, labels: {{kubernetes.io/service-name: s}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: {eps}
"
        )
    };
    let svc = "kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
";
    // The terminating (not ready) copy comes first; the ready copy must win.
    let b = run(&format!(
            "{svc}{}{}",
            slice("s-1", "[{addresses: [10.0.0.9], conditions: {ready: false, terminating: true}}, {addresses: [10.0.0.1]}]"),
            slice("s-2", "[{addresses: [10.0.0.9]}, {addresses: [10.0.0.1]}]"),
        ));
    assert_eq!(
        backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
        bes(&["10.0.0.1:8080", "10.0.0.9:8080"])
    );
    // Reverse order: the non-terminating one is kept.
    let b = run(&format!(
        "{svc}{}{}",
        slice("s-1", "[{addresses: [10.0.0.9]}]"),
        slice(
            "s-2",
            "[{addresses: [10.0.0.9], conditions: {ready: false, terminating: true}}]"
        ),
    ));
    assert_eq!(
        backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
        bes(&["10.0.0.9:8080"])
    );
}

#[test]
fn slices_need_service_name_label_same_namespace_and_family() {
    let b = run(r#"
kind: Service
metadata: {name: s, namespace: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: unlabelled, namespace: a}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata: {name: other-ns, namespace: b, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: v6, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}]
---
kind: EndpointSlice
metadata: {name: fqdn, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: FQDN
ports: [{port: 8080}]
endpoints: [{addresses: [example.com]}]
---
kind: EndpointSlice
metadata: {name: good, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
        bes(&["10.0.0.3:8080"])
    );
}

#[test]
fn service_without_slices_has_empty_backends() {
    let b = run(WEB);
    assert_eq!(b.state.frontends.len(), 2);
    assert!(b.state.frontends.values().all(|f| f.backends.is_empty()));
}
