use super::*;
use crate::objects::{ServiceObj, SliceObj};
use crate::types::*;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

#[derive(Default)]
struct Objects {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    nodes: Vec<Node>,
}

fn objects(yaml: &str) -> Objects {
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        match v["kind"].as_str() {
            Some("Service") => o.services.push(serde_yaml::from_value(v).unwrap()),
            Some("EndpointSlice") => o.slices.push(serde_yaml::from_value(v).unwrap()),
            Some("Node") => o.nodes.push(serde_yaml::from_value(v).unwrap()),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    o
}

/// Builds on "node-a", whose fallback address is 192.168.0.1.
fn run(yaml: &str) -> Built {
    run_with(yaml, &["192.168.0.1"])
}

fn run_with(yaml: &str, fallback: &[&str]) -> Built {
    let o = objects(yaml);
    build(
        &o.services,
        &o.slices,
        &o.nodes,
        &NodeInfo {
            name: "node-a".into(),
            fallback_addresses: fallback.iter().map(|a| a.parse().unwrap()).collect(),
        },
    )
}

fn fe(ip: &str, port: u16, proto: Proto) -> FrontendAddr {
    FrontendAddr {
        ip: ip.parse().unwrap(),
        port,
        proto,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// "10.0.0.1:80" or "[fd00::1]:80".
fn be(s: &str) -> BackendAddr {
    let a: SocketAddr = s.parse().unwrap();
    BackendAddr {
        ip: a.ip(),
        port: a.port(),
    }
}

fn bes(list: &[&str]) -> Vec<BackendAddr> {
    list.iter().map(|s| be(s)).collect()
}

/// Backends of the frontend, panicking when it is missing.
fn backends_of(b: &Built, ip: &str, port: u16, proto: Proto) -> Vec<BackendAddr> {
    b.state.frontends[&fe(ip, port, proto)].backends.clone()
}

const WEB: &str = r#"
kind: Service
apiVersion: v1
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090, targetPort: metrics}
"#;

#[test]
fn proto_parse_and_number() {
    assert_eq!(Proto::parse(None), Ok(Proto::Tcp));
    assert_eq!(Proto::parse(Some("UDP")).map(Proto::number), Ok(17));
    assert_eq!(Proto::parse(Some("SCTP")).map(Proto::number), Ok(132));
    assert_eq!(Proto::Tcp.number(), 6);
    assert!(Proto::parse(Some("tcp")).is_err());
    assert_eq!(
        fe("10.0.0.1", 53, Proto::Udp).to_string(),
        "10.0.0.1:53/UDP"
    );
    assert_eq!(
        fe("fd00::1", 53, Proto::Udp).to_string(),
        "[fd00::1]:53/UDP"
    );
    assert_eq!(fe("fd00::1", 53, Proto::Udp).family(), Family::V6);
    assert_eq!(Family::parse("IPv6"), Some(Family::V6));
    assert_eq!(Family::parse("FQDN"), None);
}

#[test]
fn named_ports_resolved_per_slice_and_target_port_ignored() {
    let b = run(&format!(
        r#"{WEB}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-a, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports:
- {{name: http, port: 8080}}
- {{name: metrics, port: 9100}}
endpoints:
- addresses: [10.0.1.1]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-b, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports:
- {{name: http, port: 8081}}
- {{name: metrics, port: 9101}}
endpoints:
- addresses: [10.0.2.1]
"#
    ));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.state.frontends.len(), 2);
    let http = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(http.name, "default/web:http");
    assert_eq!(http.backends, bes(&["10.0.1.1:8080", "10.0.2.1:8081"]));
    assert_eq!(
        backends_of(&b, "10.96.0.10", 9090, Proto::Tcp),
        bes(&["10.0.1.1:9100", "10.0.2.1:9101"])
    );
}

#[test]
fn unnamed_port_matches_missing_or_empty_name_and_protocol() {
    let b = run(r#"
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {port: 53, protocol: UDP}
---
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {port: 5353}
- {name: "", port: 5300, protocol: UDP}
endpoints:
- addresses: [10.0.0.5]
---
kind: EndpointSlice
metadata: {name: dns-2, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {protocol: UDP, port: 5301}
- {name: other, protocol: UDP, port: 9}
- {protocol: UDP}
endpoints:
- addresses: [10.0.0.6]
"#);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let f = &b.state.frontends[&fe("10.96.0.53", 53, Proto::Udp)];
    assert_eq!(f.name, "kube-system/dns");
    assert_eq!(f.backends, bes(&["10.0.0.5:5300", "10.0.0.6:5301"]));
}

#[test]
fn same_port_tcp_and_udp_are_two_frontends() {
    let b = run(r#"
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: sctp, port: 53, protocol: SCTP}
---
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {name: dns, port: 1053, protocol: UDP}
- {name: dns-tcp, port: 2053, protocol: TCP}
- {name: sctp, port: 3053, protocol: SCTP}
endpoints:
- addresses: [10.0.0.5]
"#);
    assert_eq!(b.state.frontends.len(), 3);
    assert_eq!(
        backends_of(&b, "10.96.0.53", 53, Proto::Udp),
        bes(&["10.0.0.5:1053"])
    );
    assert_eq!(
        backends_of(&b, "10.96.0.53", 53, Proto::Tcp),
        bes(&["10.0.0.5:2053"])
    );
    assert_eq!(
        backends_of(&b, "10.96.0.53", 53, Proto::Sctp),
        bes(&["10.0.0.5:3053"])
    );
}

#[test]
fn slice_port_must_match_protocol_too() {
    let b = run(r#"
kind: Service
metadata: {name: s}
spec:
  clusterIP: 10.96.0.1
  ports: [{name: p, port: 80}]
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: p, port: 8080, protocol: UDP}]
endpoints: [{addresses: [10.0.0.1]}]
"#);
    assert_eq!(backends_of(&b, "10.96.0.1", 80, Proto::Tcp), vec![]);
}

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
fn skip_labels_headless_external_name() {
    let b = run(r#"
kind: Service
metadata: {name: other-proxy, labels: {service.kubernetes.io/service-proxy-name: foo}}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: labelled-headless, labels: {service.kubernetes.io/headless: ""}}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
---
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
kind: Service
metadata: {name: no-ip}
spec: {clusterIP: "", ports: [{port: 80}]}
---
kind: Service
metadata: {name: no-spec}
---
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.0.3, ports: [{port: 80}]}
---
kind: Service
metadata: {name: ok}
spec: {clusterIP: 10.96.0.4, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata:
  name: ok-foreign
  labels: {kubernetes.io/service-name: ok, service.kubernetes.io/service-proxy-name: foo}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata:
  name: ok-headless
  labels: {kubernetes.io/service-name: ok, service.kubernetes.io/headless: ""}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: ok-good, labels: {kubernetes.io/service-name: ok}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![fe("10.96.0.4", 80, Proto::Tcp)]
    );
    assert_eq!(
        backends_of(&b, "10.96.0.4", 80, Proto::Tcp),
        bes(&["10.0.0.3:8080"])
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
fn cluster_ips_of_both_families() {
    let b = run(r#"
kind: Service
metadata: {name: v6only}
spec: {clusterIP: "fd00::10", clusterIPs: ["fd00::10"], ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: Service
metadata: {name: dual}
spec: {clusterIP: "fd00::11", clusterIPs: ["fd00::11", 10.96.0.11], ports: [{name: http, port: 80}]}
---
kind: Service
metadata: {name: no-cluster-ips}
spec: {clusterIP: 10.96.0.12, ports: [{port: 81}]}
---
kind: Service
metadata: {name: v6-no-families}
spec: {clusterIP: "fd00::13", ports: [{port: 82}]}
"#);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![
            fe("10.96.0.11", 80, Proto::Tcp),
            fe("10.96.0.12", 81, Proto::Tcp),
            fe("fd00::10", 80, Proto::Tcp),
            fe("fd00::11", 80, Proto::Tcp),
            fe("fd00::13", 82, Proto::Tcp),
        ]
    );
    for a in ["10.96.0.11", "fd00::11"] {
        assert_eq!(
            b.state.frontends[&fe(a, 80, Proto::Tcp)].name,
            "default/dual:http"
        );
    }
}

#[test]
fn ip_families_pick_the_cluster_ips() {
    let b = run(r#"
kind: Service
metadata: {name: a-v4-of-dual}
spec:
  clusterIP: 10.96.0.1
  clusterIPs: [10.96.0.1, "fd00::1"]
  ipFamilies: [IPv4]
  ports: [{port: 80}]
---
kind: Service
metadata: {name: b-v6-first}
spec:
  clusterIP: "fd00::2"
  clusterIPs: ["fd00::2", 10.96.0.2]
  ipFamilies: [IPv6, IPv4]
  ports: [{port: 80}]
---
kind: Service
metadata: {name: c-only-cluster-ip}
spec: {clusterIP: "fd00::3", ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: Service
metadata: {name: d-mismatch}
spec: {clusterIP: 10.96.0.4, clusterIPs: [10.96.0.4], ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: Service
metadata: {name: e-bad-family}
spec: {clusterIP: 10.96.0.5, ipFamilies: [IPv5], ports: [{port: 80}]}
---
kind: Service
metadata: {name: f-bad-second}
spec: {clusterIP: 10.96.0.6, clusterIPs: [10.96.0.6, "fd00::x"], ports: [{port: 80}]}
---
kind: Service
metadata: {name: g-two-of-a-family}
spec: {clusterIP: 10.96.0.7, clusterIPs: [10.96.0.7, 10.96.0.77], ports: [{port: 80}]}
---
kind: Service
metadata: {name: h-headless-dual}
spec: {clusterIP: None, clusterIPs: [None], ipFamilies: [IPv4, IPv6], ports: [{port: 80}]}
"#);
    assert_eq!(
        b.warnings,
        vec![
            r#"service default/d-mismatch: clusterIP "10.96.0.4" is not an IPv6 address (ipFamilies[0] is IPv6)"#,
            r#"service default/e-bad-family: ipFamilies[0] "IPv5" is not IPv4 or IPv6"#,
            r#"service default/f-bad-second: clusterIP "fd00::x" is not an IP address"#,
        ]
    );
    assert_eq!(
        b.state.cluster_ips,
        ["10.96.0.1", "10.96.0.2", "10.96.0.7", "fd00::2", "fd00::3"]
            .map(ip)
            .into()
    );
    assert_eq!(b.state.frontends.len(), 5);
}

#[test]
fn malformed_objects_warn_and_are_skipped() {
    let b = run(r#"
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}
---
kind: Service
metadata: {name: proto}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80, protocol: ICMP}]}
---
kind: Service
metadata: {name: range}
spec: {clusterIP: 10.96.0.3, ports: [{port: 70000}]}
---
kind: Service
metadata: {name: good}
spec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: good-bad, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}, {addresses: ["fd00::1"]}]
---
kind: EndpointSlice
metadata: {name: good-proto, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080, protocol: tcp}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: good-ok, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
    assert_eq!(
        b.warnings,
        vec![
            r#"endpointslice default/good-bad: address "fd00::1" is not an IPv4 address"#,
            r#"endpointslice default/good-proto: unknown protocol "tcp""#,
            r#"service default/proto: unknown protocol "ICMP""#,
            "service default/range: port 70000 is out of range",
            r#"service default/web: clusterIP "10.0.0.300" is not an IP address"#,
        ]
    );
    assert_eq!(b.state.frontends.len(), 1);
    assert_eq!(b.state.cluster_ips, [ip("10.96.0.5")].into());
    assert_eq!(
        backends_of(&b, "10.96.0.5", 80, Proto::Tcp),
        bes(&["10.0.0.3:8080"])
    );
}

#[test]
fn conflicting_frontend_keeps_first_service_and_port() {
    let b = run(r#"
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}, {port: 81}]}
---
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: twice}
spec: {clusterIP: 10.96.0.4, ports: [{name: a, port: 80}, {name: b, port: 80}]}
"#);
    assert_eq!(
            b.warnings,
            vec![
                "service default/b: frontend 10.96.0.1:80/TCP (ClusterIP) is already used by default/a (ClusterIP)",
                "service default/twice:b: frontend 10.96.0.4:80/TCP (ClusterIP) is already used by default/twice:a (ClusterIP)",
            ]
        );
    // Only the conflicting frontends are left out, not their Services.
    let names: Vec<(FrontendAddr, &str)> = b
        .state
        .frontends
        .iter()
        .map(|(a, f)| (*a, f.name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            (fe("10.96.0.1", 80, Proto::Tcp), "default/a"),
            (fe("10.96.0.1", 81, Proto::Tcp), "default/b"),
            (fe("10.96.0.4", 80, Proto::Tcp), "default/twice:a"),
        ]
    );
}

#[test]
fn service_without_slices_has_empty_backends() {
    let b = run(WEB);
    assert_eq!(b.state.frontends.len(), 2);
    assert!(b.state.frontends.values().all(|f| f.backends.is_empty()));
}

/// Frontend addresses of the given kind, in order.
fn of_kind(b: &Built, kind: FrontendKind) -> Vec<FrontendAddr> {
    let fes = b.state.frontends.iter();
    fes.filter(|(_, f)| f.kind == kind)
        .map(|(a, _)| *a)
        .collect()
}

const NODE_A: &str = r#"
kind: Node
apiVersion: v1
metadata: {name: node-a}
status:
  addresses:
  - {type: Hostname, address: node-a}
  - {type: InternalIP, address: 10.1.0.5}
  - {type: InternalIP, address: "fd00::5"}
  - {type: InternalIP, address: 127.0.0.1}
  - {type: ExternalIP, address: 203.0.113.5}
  - {type: InternalDNS, address: 10.1.0.99}
  - {type: ExternalIP, address: 10.1.0.5}
"#;

/// Ready endpoints on node-a and node-b, a serving+terminating one on node-a, and one
/// without a node name.
const WEB_SLICE: &str = r#"
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.1.1], nodeName: node-a}
- {addresses: [10.0.2.1], nodeName: node-b}
- {addresses: [10.0.1.2], nodeName: node-a, conditions: {ready: false, terminating: true}}
- {addresses: [10.0.3.1]}
"#;

const NODE_PORT_WEB: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
"#;

#[test]
fn node_port_served_on_node_object_addresses() {
    let b = run(&format!(
        "{NODE_PORT_WEB}---{NODE_A}---
kind: Node
metadata: {{name: node-b}}
status: {{addresses: [{{type: InternalIP, address: 10.1.0.6}}]}}
---{WEB_SLICE}"
    ));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    // Loopback, Hostname and InternalDNS entries are ignored, duplicates dropped, and the
    // fallback is not used; node-b's addresses are not ours. The IPv6 address is a node
    // address, but this single-stack IPv4 Service gets no NodePort on it.
    assert_eq!(
        b.state.node_addresses,
        vec![ip("10.1.0.5"), ip("fd00::5"), ip("203.0.113.5")]
    );
    assert_eq!(
        of_kind(&b, FrontendKind::NodePort),
        vec![
            fe("10.1.0.5", 30080, Proto::Tcp),
            fe("203.0.113.5", 30080, Proto::Tcp)
        ]
    );
    assert_eq!(
        of_kind(&b, FrontendKind::ClusterIp),
        vec![fe("10.96.0.10", 80, Proto::Tcp)]
    );
    assert_eq!(b.state.frontends.len(), 3);
    let np = &b.state.frontends[&fe("203.0.113.5", 30080, Proto::Tcp)];
    assert_eq!(
        np,
        &FrontendSpec {
            name: "default/web:http".into(),
            kind: FrontendKind::NodePort,
            snat: true,
            drop_when_empty: false,
            backends: bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"]),
        }
    );
    let cip = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(
        (cip.kind, cip.snat, cip.drop_when_empty),
        (FrontendKind::ClusterIp, false, false)
    );
    assert_eq!(cip.backends, np.backends);
}

#[test]
fn node_port_on_fallback_addresses_without_usable_node_object() {
    // No Node object at all; loopback and duplicate fallbacks are dropped.
    let b = run_with(
        NODE_PORT_WEB,
        &["192.168.0.1", "127.0.0.1", "192.168.0.2", "192.168.0.1"],
    );
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.state.node_addresses,
        vec![ip("192.168.0.1"), ip("192.168.0.2")]
    );
    assert_eq!(
        of_kind(&b, FrontendKind::NodePort),
        vec![
            fe("192.168.0.1", 30080, Proto::Tcp),
            fe("192.168.0.2", 30080, Proto::Tcp)
        ]
    );
    // A Node object with no usable address: the fallback too, and a bad address warns.
    let b = run(&format!(
        "{NODE_PORT_WEB}---
kind: Node
metadata: {{name: node-a}}
status:
  addresses:
  - {{type: InternalIP, address: 127.0.0.1}}
  - {{type: InternalIP, address: \"::1\"}}
  - {{type: InternalIP, address: \"fe80::5\"}}
  - {{type: ExternalIP, address: not-an-ip}}
"
    ));
    assert_eq!(
        b.warnings,
        vec![r#"node node-a: address "not-an-ip" is not an IP address; skipped"#]
    );
    assert_eq!(b.state.node_addresses, vec![ip("192.168.0.1")]);
    assert_eq!(
        of_kind(&b, FrontendKind::NodePort),
        vec![fe("192.168.0.1", 30080, Proto::Tcp)]
    );
    // Nothing at all: no NodePort frontends, the ClusterIP stays.
    let b = run_with(NODE_PORT_WEB, &[]);
    assert!(b.state.node_addresses.is_empty());
    assert_eq!(
        b.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![fe("10.96.0.10", 80, Proto::Tcp)]
    );
}

#[test]
fn load_balancer_ingress_ip_modes() {
    let b = run(r#"
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  ports: [{port: 443, nodePort: 30443}]
status:
  loadBalancer:
    ingress:
    - {ip: 198.51.100.1}
    - {ip: 198.51.100.2, ipMode: VIP}
    - {ip: 198.51.100.3, ipMode: Proxy}
    - {hostname: lb.example.com}
    - {hostname: lb2.example.com, ip: 198.51.100.4}
    - {ip: "2001:db8::1"}
    - {ip: 198.51.100.300}
    - {ip: 198.51.100.1, ipMode: VIP}
---
kind: Service
metadata: {name: stale}
spec: {clusterIP: 10.96.0.21, ports: [{port: 443}]}
status: {loadBalancer: {ingress: [{ip: 198.51.100.9}]}}
"#);
    assert_eq!(
        b.warnings,
        vec![
            r#"service default/lb: loadBalancer ingress IP "198.51.100.300" is not an IP address; skipped"#
        ]
    );
    // Proxy and hostname-only entries are not programmed; neither is the status of a
    // Service that is not of type LoadBalancer.
    assert_eq!(
        of_kind(&b, FrontendKind::LoadBalancer),
        vec![
            fe("198.51.100.1", 443, Proto::Tcp),
            fe("198.51.100.2", 443, Proto::Tcp),
            fe("198.51.100.4", 443, Proto::Tcp),
        ]
    );
    let f = &b.state.frontends[&fe("198.51.100.2", 443, Proto::Tcp)];
    assert_eq!(
        (f.name.as_str(), f.snat, f.drop_when_empty),
        ("default/lb", true, false)
    );
    assert!(f.backends.is_empty());
}

#[test]
fn load_balancer_also_gets_node_ports_and_cluster_ip() {
    let b = run(&format!(
        r#"
kind: Service
metadata: {{name: web}}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIP: 10.96.0.10
  ports:
  - {{name: http, port: 80, nodePort: 30080}}
  - {{name: https, port: 443}}
status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.1}}]}}}}
---{WEB_SLICE}"#
    ));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let kinds: Vec<(FrontendAddr, FrontendKind)> = b
        .state
        .frontends
        .iter()
        .map(|(a, f)| (*a, f.kind))
        .collect();
    // https has no nodePort (allocateLoadBalancerNodePorts: false): no NodePort frontend.
    assert_eq!(
        kinds,
        vec![
            (fe("10.96.0.10", 80, Proto::Tcp), FrontendKind::ClusterIp),
            (fe("10.96.0.10", 443, Proto::Tcp), FrontendKind::ClusterIp),
            (fe("192.168.0.1", 30080, Proto::Tcp), FrontendKind::NodePort),
            (
                fe("198.51.100.1", 80, Proto::Tcp),
                FrontendKind::LoadBalancer
            ),
            (
                fe("198.51.100.1", 443, Proto::Tcp),
                FrontendKind::LoadBalancer
            ),
        ]
    );
    assert!(b
        .state
        .frontends
        .values()
        .all(|f| f.snat == f.kind.is_external()));
    assert_eq!(
        backends_of(&b, "198.51.100.1", 80, Proto::Tcp),
        bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
    );
    assert_eq!(b.state.cluster_ips, [ip("10.96.0.10")].into());
}

#[test]
fn external_ips_on_cluster_ip_service() {
    let b = run(r#"
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  externalIPs: [203.0.113.10, "fd00::10", bogus, 203.0.113.11, 203.0.113.10]
  ports: [{name: dns, port: 53, protocol: UDP}, {name: web, port: 80, nodePort: 30080}]
---
kind: Service
metadata: {name: extname, namespace: shop}
spec: {type: ExternalName, externalName: example.com, externalIPs: [203.0.113.20], ports: [{port: 80}]}
"#);
    assert_eq!(
        b.warnings,
        vec![r#"service shop/ext: externalIP "bogus" is not an IP address; skipped"#]
    );
    assert_eq!(
        of_kind(&b, FrontendKind::ExternalIp),
        vec![
            fe("203.0.113.10", 53, Proto::Udp),
            fe("203.0.113.10", 80, Proto::Tcp),
            fe("203.0.113.11", 53, Proto::Udp),
            fe("203.0.113.11", 80, Proto::Tcp),
        ]
    );
    // A ClusterIP Service gets no NodePort even if a port carries one.
    assert!(of_kind(&b, FrontendKind::NodePort).is_empty());
    assert_eq!(b.state.frontends.len(), 6);
    let f = &b.state.frontends[&fe("203.0.113.11", 53, Proto::Udp)];
    assert_eq!(
        (f.name.as_str(), f.snat, f.drop_when_empty),
        ("shop/ext:dns", true, false)
    );
}

#[test]
fn external_traffic_policy_local_uses_local_endpoints_without_snat() {
    let svc = r#"
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.10]
  ports: [{name: http, port: 80, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}
"#;
    let b = run(&format!("{svc}---{WEB_SLICE}"));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.state.frontends.len(), 4);
    for (addr, f) in &b.state.frontends {
        if f.kind == FrontendKind::ClusterIp {
            // iTP Cluster: the whole cluster set, rejected when empty.
            assert_eq!((f.snat, f.drop_when_empty), (false, false), "{addr}");
            assert_eq!(
                f.backends,
                bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
            );
        } else {
            assert_eq!((f.snat, f.drop_when_empty), (false, true), "{addr}");
            assert_eq!(f.backends, bes(&["10.0.1.1:8080"]), "{addr}");
        }
    }
    // No local ready endpoint: local serving+terminating ones, even with remote ready ones.
    let b = run(&format!(
        r#"{svc}---
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- {{addresses: [10.0.2.1], nodeName: node-b}}
- {{addresses: [10.0.1.2], nodeName: node-a, conditions: {{ready: false, terminating: true}}}}
- {{addresses: [10.0.1.3], nodeName: node-a, conditions: {{ready: false}}}}
"#
    ));
    assert_eq!(
        backends_of(&b, "192.168.0.1", 30080, Proto::Tcp),
        bes(&["10.0.1.2:8080"])
    );
    assert_eq!(
        backends_of(&b, "10.96.0.10", 80, Proto::Tcp),
        bes(&["10.0.2.1:8080"])
    );
    // No local endpoint at all: empty, dropped rather than rejected.
    let b = run(&format!(
        r#"{svc}---
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.0.2.1], nodeName: node-b}}]
"#
    ));
    let f = &b.state.frontends[&fe("198.51.100.1", 80, Proto::Tcp)];
    assert!(f.backends.is_empty() && f.drop_when_empty && !f.snat);
    let f = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(f.backends, bes(&["10.0.2.1:8080"]));
}

#[test]
fn external_traffic_policy_cluster_snats() {
    for policy in ["", "externalTrafficPolicy: Cluster"] {
        let b = run(&format!(
            r#"
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  {policy}
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.10]
  ports: [{{name: http, port: 80, nodePort: 30080}}]
---{WEB_SLICE}"#
        ));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(b.state.frontends.len(), 3);
        for f in b.state.frontends.values() {
            assert_eq!(f.snat, f.kind != FrontendKind::ClusterIp, "{policy}");
            assert!(!f.drop_when_empty);
            assert_eq!(
                f.backends,
                bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
            );
        }
    }
}

#[test]
fn internal_traffic_policy_local_for_cluster_ip() {
    let svc = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  internalTrafficPolicy: Local
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
"#;
    let b = run(&format!("{svc}---{WEB_SLICE}"));
    let f = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(
        f,
        &FrontendSpec {
            name: "default/web:http".into(),
            kind: FrontendKind::ClusterIp,
            snat: false,
            drop_when_empty: true,
            backends: bes(&["10.0.1.1:8080"]),
        }
    );
    // The NodePort follows externalTrafficPolicy (Cluster), not iTP.
    let f = &b.state.frontends[&fe("192.168.0.1", 30080, Proto::Tcp)];
    assert_eq!((f.snat, f.drop_when_empty), (true, false));
    assert_eq!(
        f.backends,
        bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
    );
    // No local endpoints: the ClusterIP is dropped, not rejected.
    let b = run(svc);
    let f = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
    assert!(f.backends.is_empty() && f.drop_when_empty);
}

#[test]
fn type_change_cluster_ip_to_node_port_adds_frontends() {
    let svc = |type_: &str| {
        format!(
            r#"
kind: Service
metadata: {{name: web}}
spec:
  type: {type_}
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, nodePort: 30080}}, {{name: dns, port: 53, protocol: UDP, nodePort: 30053}}]
---{WEB_SLICE}"#
        )
    };
    let before = run(&svc("ClusterIP"));
    let after = run(&svc("NodePort"));
    assert!(after.warnings.is_empty(), "{:?}", after.warnings);
    assert_eq!(
        before.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![
            fe("10.96.0.10", 53, Proto::Udp),
            fe("10.96.0.10", 80, Proto::Tcp)
        ]
    );
    let added: Vec<FrontendAddr> = after
        .state
        .frontends
        .keys()
        .filter(|a| !before.state.frontends.contains_key(a))
        .copied()
        .collect();
    assert_eq!(
        added,
        vec![
            fe("192.168.0.1", 30053, Proto::Udp),
            fe("192.168.0.1", 30080, Proto::Tcp)
        ]
    );
    for (addr, f) in &before.state.frontends {
        assert_eq!(&after.state.frontends[addr], f);
    }
    // And back: the NodePorts go away.
    assert_eq!(run(&svc("ClusterIP")).state, before.state);
}

#[test]
fn cluster_ips_of_accepted_services() {
    let b = run(r#"
kind: Service
metadata: {name: a-plain}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: b-dual}
spec: {clusterIP: "fd00::2", clusterIPs: ["fd00::2", 10.96.0.2], ports: [{port: 80}]}
---
kind: Service
metadata: {name: c-node-port}
spec: {type: NodePort, clusterIP: 10.96.0.3, ports: [{port: 80, nodePort: 30003}]}
---
kind: Service
metadata: {name: d-no-ports}
spec: {clusterIP: 10.96.0.4}
---
kind: Service
metadata: {name: e-loses-conflict}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: f-headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
kind: Service
metadata: {name: g-foreign, labels: {service.kubernetes.io/service-proxy-name: other}}
spec: {clusterIP: 10.96.0.7, ports: [{port: 80}]}
---
kind: Service
metadata: {name: h-external-name}
spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.0.8}
---
kind: Service
metadata: {name: i-malformed}
spec: {clusterIP: 10.96.0.9, ports: [{port: 80, protocol: ICMP}]}
---
kind: Service
metadata: {name: j-v6}
spec: {clusterIP: "fd00::10", ports: [{port: 80}]}
"#);
    assert_eq!(
        b.state.cluster_ips,
        [
            "10.96.0.1",
            "10.96.0.2",
            "10.96.0.3",
            "10.96.0.4",
            "fd00::2",
            "fd00::10"
        ]
        .map(ip)
        .into()
    );
}

#[test]
fn conflicting_node_ports_warn() {
    let b = run_with(
        r#"
kind: Service
metadata: {name: b}
spec:
  type: NodePort
  clusterIP: 10.96.0.2
  ports: [{name: web, port: 80, nodePort: 30080}, {name: other, port: 81, nodePort: 30081}]
---
kind: Service
metadata: {name: a}
spec: {type: NodePort, clusterIP: 10.96.0.1, ports: [{port: 80, nodePort: 30080}]}
---
kind: Service
metadata: {name: c-udp}
spec: {type: NodePort, clusterIP: 10.96.0.3, ports: [{port: 80, protocol: UDP, nodePort: 30080}]}
---
kind: Service
metadata: {name: d-range}
spec: {type: NodePort, clusterIP: 10.96.0.4, ports: [{port: 80, nodePort: 70000}]}
"#,
        &["192.168.0.1", "192.168.0.2"],
    );
    assert_eq!(
            b.warnings,
            vec![
                "service default/d-range: nodePort 70000 of port 80/TCP is out of range; skipped",
                "service default/b:web: frontend 192.168.0.1:30080/TCP (NodePort) is already used by default/a (NodePort)",
                "service default/b:web: frontend 192.168.0.2:30080/TCP (NodePort) is already used by default/a (NodePort)",
            ]
        );
    let np: Vec<(FrontendAddr, &str)> = b
        .state
        .frontends
        .iter()
        .filter(|(_, f)| f.kind == FrontendKind::NodePort)
        .map(|(a, f)| (*a, f.name.as_str()))
        .collect();
    assert_eq!(
        np,
        vec![
            (fe("192.168.0.1", 30080, Proto::Tcp), "default/a"),
            (fe("192.168.0.1", 30080, Proto::Udp), "default/c-udp"),
            (fe("192.168.0.1", 30081, Proto::Tcp), "default/b:other"),
            (fe("192.168.0.2", 30080, Proto::Tcp), "default/a"),
            (fe("192.168.0.2", 30080, Proto::Udp), "default/c-udp"),
            (fe("192.168.0.2", 30081, Proto::Tcp), "default/b:other"),
        ]
    );
    // The Services' other frontends are kept, d-range's ClusterIP included.
    assert_eq!(of_kind(&b, FrontendKind::ClusterIp).len(), 5);
}

#[test]
fn external_ip_cannot_take_another_services_cluster_ip() {
    let b = run(r#"
kind: Service
metadata: {name: a-hijack}
spec: {clusterIP: 10.96.0.1, externalIPs: [10.96.0.2], ports: [{port: 80}]}
---
kind: Service
metadata: {name: b-victim}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
"#);
    assert_eq!(
            b.warnings,
            vec!["service default/a-hijack: frontend 10.96.0.2:80/TCP (ExternalIP) is already used by default/b-victim (ClusterIP)"]
        );
    let f = &b.state.frontends[&fe("10.96.0.2", 80, Proto::Tcp)];
    assert_eq!(
        (f.name.as_str(), f.kind),
        ("default/b-victim", FrontendKind::ClusterIp)
    );
}

/// A dual-stack NodePort Service with an IPv4 and an IPv6 EndpointSlice.
const DUAL_WEB: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80, nodePort: 30080}]
---
kind: EndpointSlice
metadata: {name: web-v4, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.1.1], nodeName: node-a}
- {addresses: [10.0.2.1], nodeName: node-b}
---
kind: EndpointSlice
metadata: {name: web-v6, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00:1::1"], nodeName: node-a}
- {addresses: ["fd00:2::1"], nodeName: node-b}
- {addresses: ["fd00:1::2"], nodeName: node-a, conditions: {ready: false}}
---
kind: EndpointSlice
metadata: {name: web-fqdn, labels: {kubernetes.io/service-name: web}}
addressType: FQDN
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [web.example.com]}]
"#;

#[test]
fn dual_stack_frontends_take_backends_of_their_family() {
    let b = run_with(DUAL_WEB, &["192.168.0.1", "2001:db8::1"]);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![
            fe("10.96.0.10", 80, Proto::Tcp),
            fe("192.168.0.1", 30080, Proto::Tcp),
            fe("2001:db8::1", 30080, Proto::Tcp),
            fe("fd00:96::10", 80, Proto::Tcp),
        ]
    );
    let v4 = bes(&["10.0.1.1:8080", "10.0.2.1:8080"]);
    let v6 = bes(&["[fd00:1::1]:8080", "[fd00:2::1]:8080"]);
    assert_eq!(backends_of(&b, "10.96.0.10", 80, Proto::Tcp), v4);
    assert_eq!(backends_of(&b, "192.168.0.1", 30080, Proto::Tcp), v4);
    assert_eq!(backends_of(&b, "fd00:96::10", 80, Proto::Tcp), v6);
    assert_eq!(backends_of(&b, "2001:db8::1", 30080, Proto::Tcp), v6);
    for (addr, f) in &b.state.frontends {
        assert_eq!(f.name, "default/web:http");
        assert_eq!(f.snat, f.kind == FrontendKind::NodePort, "{addr}");
        assert!(f.backends.iter().all(|b| Family::of(b.ip) == addr.family()));
    }
    assert_eq!(
        b.state.cluster_ips,
        [ip("10.96.0.10"), ip("fd00:96::10")].into()
    );
    // eTP Local: the local set of each family.
    let b = run_with(
        &DUAL_WEB.replace(
            "ipFamilyPolicy: PreferDualStack",
            "externalTrafficPolicy: Local",
        ),
        &["192.168.0.1", "2001:db8::1"],
    );
    assert_eq!(
        backends_of(&b, "2001:db8::1", 30080, Proto::Tcp),
        bes(&["[fd00:1::1]:8080"])
    );
    assert_eq!(
        backends_of(&b, "192.168.0.1", 30080, Proto::Tcp),
        bes(&["10.0.1.1:8080"])
    );
    // The same Service single-stack IPv4: the IPv6 slice and node address are not used.
    let b = run_with(
        &DUAL_WEB
            .replace(
                "clusterIPs: [10.96.0.10, \"fd00:96::10\"]",
                "clusterIPs: [10.96.0.10]",
            )
            .replace("ipFamilies: [IPv4, IPv6]", "ipFamilies: [IPv4]"),
        &["192.168.0.1", "2001:db8::1"],
    );
    assert_eq!(
        b.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![
            fe("10.96.0.10", 80, Proto::Tcp),
            fe("192.168.0.1", 30080, Proto::Tcp),
        ]
    );
}

#[test]
fn single_stack_ipv6_service() {
    let b = run_with(
        r#"
kind: Service
metadata: {name: web6, namespace: shop}
spec:
  type: NodePort
  clusterIP: "fd00:96::20"
  clusterIPs: ["fd00:96::20"]
  ipFamilies: [IPv6]
  ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP}]
---
kind: EndpointSlice
metadata: {name: web6-1, namespace: shop, labels: {kubernetes.io/service-name: web6}}
addressType: IPv6
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: ["fd00:1::1"]}
- {addresses: ["fd00:1::2"], conditions: {ready: false, terminating: true}}
- {addresses: ["fd00:1::3"]}
---
kind: EndpointSlice
metadata: {name: web6-v4, namespace: shop, labels: {kubernetes.io/service-name: web6}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
"#,
        &["192.168.0.1", "2001:db8::1"],
    );
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![
            fe("2001:db8::1", 30080, Proto::Tcp),
            fe("fd00:96::20", 53, Proto::Udp),
            fe("fd00:96::20", 80, Proto::Tcp),
        ]
    );
    assert_eq!(
        backends_of(&b, "fd00:96::20", 80, Proto::Tcp),
        bes(&["[fd00:1::1]:8080", "[fd00:1::3]:8080"])
    );
    assert_eq!(
        backends_of(&b, "fd00:96::20", 53, Proto::Udp),
        bes(&["[fd00:1::1]:5353", "[fd00:1::3]:5353"])
    );
    let np = &b.state.frontends[&fe("2001:db8::1", 30080, Proto::Tcp)];
    assert_eq!(
        (np.name.as_str(), np.kind, np.snat),
        ("shop/web6:http", FrontendKind::NodePort, true)
    );
    assert_eq!(b.state.cluster_ips, [ip("fd00:96::20")].into());
}

#[test]
fn ipv6_node_ports_on_ipv6_node_addresses() {
    let node = r#"
kind: Node
metadata: {name: node-a}
status:
  addresses:
  - {type: InternalIP, address: 10.1.0.5}
  - {type: InternalIP, address: "fd00:1::5"}
  - {type: InternalIP, address: "fe80::5"}
  - {type: InternalIP, address: "::1"}
  - {type: ExternalIP, address: "2001:db8::5"}
  - {type: ExternalIP, address: "fd00:1::5"}
"#;
    let b = run(&format!("{DUAL_WEB}---{node}"));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    // Link-local and loopback addresses are no node addresses; duplicates are dropped.
    assert_eq!(
        b.state.node_addresses,
        vec![ip("10.1.0.5"), ip("fd00:1::5"), ip("2001:db8::5")]
    );
    assert_eq!(
        of_kind(&b, FrontendKind::NodePort),
        vec![
            fe("10.1.0.5", 30080, Proto::Tcp),
            fe("2001:db8::5", 30080, Proto::Tcp),
            fe("fd00:1::5", 30080, Proto::Tcp),
        ]
    );
    assert_eq!(
        backends_of(&b, "fd00:1::5", 30080, Proto::Tcp),
        bes(&["[fd00:1::1]:8080", "[fd00:2::1]:8080"])
    );
    // Without a Node object: the fallback addresses of both families, link-local and
    // loopback left out.
    let b = run_with(
        DUAL_WEB,
        &["fe80::1", "192.168.0.1", "::1", "2001:db8::1", "::"],
    );
    assert_eq!(
        b.state.node_addresses,
        vec![ip("192.168.0.1"), ip("2001:db8::1")]
    );
    // Only IPv6 node addresses: the IPv4 family has no NodePort frontend.
    let b = run_with(DUAL_WEB, &["2001:db8::1"]);
    assert_eq!(
        of_kind(&b, FrontendKind::NodePort),
        vec![fe("2001:db8::1", 30080, Proto::Tcp)]
    );
}

#[test]
fn ipv6_external_and_load_balancer_ips_by_family() {
    let svc = |families: &str, cluster_ips: &str| {
        format!(
            r#"
kind: Service
metadata: {{name: lb}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  clusterIPs: {cluster_ips}
  ipFamilies: {families}
  externalIPs: [203.0.113.10, "2001:db8:e::10", "2001:db8:e::zz"]
  ports: [{{port: 443}}]
status:
  loadBalancer:
    ingress:
    - {{ip: 198.51.100.1}}
    - {{ip: "2001:db8:1b::1"}}
    - {{ip: "2001:db8:1b::2", ipMode: Proxy}}
    - {{ip: "2001:db8:1b::3", ipMode: VIP}}
"#
        )
    };
    let warning =
        r#"service default/lb: externalIP "2001:db8:e::zz" is not an IP address; skipped"#;
    let dual = run(&svc("[IPv4, IPv6]", r#"[10.96.0.20, "fd00:96::20"]"#));
    assert_eq!(dual.warnings, vec![warning]);
    assert_eq!(
        of_kind(&dual, FrontendKind::ExternalIp),
        vec![
            fe("203.0.113.10", 443, Proto::Tcp),
            fe("2001:db8:e::10", 443, Proto::Tcp),
        ]
    );
    assert_eq!(
        of_kind(&dual, FrontendKind::LoadBalancer),
        vec![
            fe("198.51.100.1", 443, Proto::Tcp),
            fe("2001:db8:1b::1", 443, Proto::Tcp),
            fe("2001:db8:1b::3", 443, Proto::Tcp),
        ]
    );
    let f = &dual.state.frontends[&fe("2001:db8:1b::1", 443, Proto::Tcp)];
    assert_eq!(
        (f.kind, f.snat, f.drop_when_empty),
        (FrontendKind::LoadBalancer, true, false)
    );
    // Single-stack IPv4: the IPv6 addresses are ignored without a warning (kube-proxy
    // only logs them at a high verbosity); the bad one still warns.
    let v4 = run(&svc("[IPv4]", "[10.96.0.20]"));
    assert_eq!(v4.warnings, vec![warning]);
    assert!(v4.state.frontends.keys().all(|a| a.family() == Family::V4));
    // ClusterIP, externalIP, ingress IP (the port has no nodePort).
    assert_eq!(v4.state.frontends.len(), 3);
}

#[test]
fn family_mismatches_are_ignored() {
    // An IPv4-only Service with an IPv6 slice, and an IPv6-only Service with an IPv4
    // slice: neither gets backends from the other family.
    let b = run(r#"
kind: Service
metadata: {name: v4}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: v4-1, labels: {kubernetes.io/service-name: v4}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}]
---
kind: Service
metadata: {name: v6}
spec: {clusterIP: "fd00:96::1", ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: v6-1, labels: {kubernetes.io/service-name: v6}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
"#);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.state.frontends.len(), 2);
    assert!(b.state.frontends.values().all(|f| f.backends.is_empty()));
}

#[test]
fn bad_ipv6_addresses_warn() {
    let b = run(r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: "fd00:96::1", ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-v4-in-v6, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}, {addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata: {name: s-garbage, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::2", "fd00::zz"]}]
---
kind: EndpointSlice
metadata: {name: s-good, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::3"]}]
---
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: "fd00::zz"}]}
"#);
    assert_eq!(
        b.warnings,
        vec![
            r#"node node-a: address "fd00::zz" is not an IP address; skipped"#,
            r#"endpointslice default/s-garbage: address "fd00::zz" is not an IPv6 address"#,
            r#"endpointslice default/s-v4-in-v6: address "10.0.0.1" is not an IPv6 address"#,
        ]
    );
    assert_eq!(
        backends_of(&b, "fd00:96::1", 80, Proto::Tcp),
        bes(&["[fd00::3]:8080"])
    );
}

/// A small deterministic PRNG (xorshift64*), so the property tests need no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_service(r: &mut Rng, name: &str) -> Service {
    let ns = r.pick(&["default", "kube-system"]);
    let v4 = format!("10.96.0.{}", r.below(4) + 1);
    let v6 = format!("fd00:96::{}", r.below(4) + 1);
    let (ips, families): (Vec<String>, Vec<&str>) = match r.below(6) {
        0 => (vec![v6], vec!["IPv6"]),
        1 => (vec![v4, v6], vec!["IPv4", "IPv6"]),
        2 => (vec!["None".into()], vec![]),
        3 => (vec!["bad".into()], vec![]),
        _ => (vec![v4], vec!["IPv4"]),
    };
    let type_ = r.pick(&["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"]);
    let mut ports = Vec::new();
    for (i, pname) in ["http", "dns", ""].iter().enumerate() {
        if i > 0 && r.chance(50) {
            continue;
        }
        ports.push(serde_json::json!({
            "name": pname,
            "port": 80 + r.below(2) as i32,
            "protocol": r.pick(&["TCP", "TCP", "UDP"]),
            "nodePort": 30000 + r.below(3) as i32,
        }));
    }
    let mut spec = serde_json::json!({
        "type": type_,
        "clusterIP": ips[0],
        "clusterIPs": ips,
        "ports": ports,
        "externalTrafficPolicy": r.pick(&["Cluster", "Local"]),
        "internalTrafficPolicy": r.pick(&["Cluster", "Local"]),
    });
    if !families.is_empty() {
        spec["ipFamilies"] = serde_json::json!(families);
    }
    if r.chance(30) {
        spec["externalIPs"] =
            serde_json::json!([r.pick(&["192.0.2.1", "10.96.0.1", "fd00:96::1", "nope"])]);
    }
    let mut labels = serde_json::json!({});
    if r.chance(10) {
        labels[LABEL_HEADLESS] = "".into();
    }
    serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": r.pick(&["192.0.2.9", "10.96.0.2", "fd00:96::9"])}]}},
        }))
        .unwrap()
}

fn random_slice(r: &mut Rng, name: &str) -> EndpointSlice {
    let ns = r.pick(&["default", "kube-system"]);
    let family = r.pick(&["IPv4", "IPv4", "IPv6", "FQDN"]);
    let mut endpoints = Vec::new();
    for _ in 0..r.below(4) {
        let n = r.below(6) + 1;
        let ip = match (family, r.chance(5)) {
            (_, true) => "garbage".to_string(),
            ("IPv6", _) => format!("fd00:244::{n}"),
            _ => format!("10.244.0.{n}"),
        };
        endpoints.push(serde_json::json!({
            "addresses": [ip],
            "nodeName": r.pick(&["node-a", "node-b"]),
            "conditions": {"ready": r.chance(70), "serving": r.chance(80),
                           "terminating": r.chance(30)},
        }));
    }
    let mut ports = Vec::new();
    for pname in ["http", "dns", ""] {
        if r.chance(60) {
            ports.push(serde_json::json!({
                "name": pname, "port": 8080 + r.below(2) as i32,
                "protocol": r.pick(&["TCP", "UDP"]),
            }));
        }
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {LABEL_SERVICE_NAME: r.pick(&["s0", "s1", "s2", "s3", ""])}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

fn random_node(r: &mut Rng) -> Node {
    let name = r.pick(&["node-a", "node-a", "node-b"]);
    let addrs: Vec<_> = ["192.168.0.5", "fd00:1::5", "127.0.0.1", "192.168.0.6"]
        .iter()
        .filter(|_| r.chance(50))
        .map(|a| serde_json::json!({"type": "InternalIP", "address": a}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {"addresses": addrs},
    }))
    .unwrap()
}

/// Random sequences of adds, updates and deletes of Services, EndpointSlices and Nodes
/// (with address conflicts, duplicates, bad objects and node address changes): the
/// incremental model always equals `build` over the same objects, and its change set
/// names every frontend that changed, with its previous spec.
#[test]
fn incremental_equals_build() {
    let (mut frontends, mut conflicts, mut changed) = (0, 0, 0);
    for seed in 1..=40u64 {
        let mut r = Rng(seed * 0x9e37_79b9_7f4a_7c15);
        let node = || NodeInfo {
            name: "node-a".into(),
            fallback_addresses: vec![ip("192.168.0.1")],
        };
        let mut inc = Incremental::new(node());
        let mut services: Vec<Arc<Service>> = Vec::new();
        let mut slices: Vec<Arc<EndpointSlice>> = Vec::new();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut fallback = vec![ip("192.168.0.1")];
        let mut prev = inc.state().clone();
        for step in 0..150 {
            let mut changed_services = BTreeSet::new();
            let mut changed_slices = BTreeSet::new();
            // A few changes per sync, like a burst of events.
            for _ in 0..=r.below(3) {
                match r.below(10) {
                    0..=3 => {
                        let name = r.pick(&["s0", "s1", "s2", "s3"]);
                        let s = Arc::new(random_service(&mut r, name));
                        let key = object_key(&s.metadata);
                        services.retain(|o| object_key(&o.metadata) != key);
                        if !r.chance(20) {
                            services.push(s);
                        }
                        changed_services.insert(key);
                    }
                    4..=7 => {
                        let name = r.pick(&["e0", "e1", "e2", "e3", "e4"]);
                        let s = Arc::new(random_slice(&mut r, name));
                        let key = object_key(&s.metadata);
                        // Sometimes a duplicate key (two manifests holding one object).
                        if !r.chance(10) {
                            slices.retain(|o| object_key(&o.metadata) != key);
                        }
                        if !r.chance(20) {
                            slices.push(s);
                        }
                        changed_slices.insert(key);
                    }
                    8 => {
                        nodes = match r.chance(20) {
                            true => vec![],
                            false => vec![Arc::new(random_node(&mut r))],
                        };
                        inc.set_nodes(nodes.clone());
                    }
                    _ => {
                        fallback = match r.chance(50) {
                            true => vec![ip("192.168.0.1")],
                            false => vec![ip("192.168.0.2"), ip("fd00:2::1")],
                        };
                        inc.set_fallback_addresses(fallback.clone());
                    }
                }
            }
            for key in &changed_services {
                let objs = services
                    .iter()
                    .filter(|o| object_key(&o.metadata) == *key)
                    .map(|o| Arc::new(ServiceObj::new(o)))
                    .collect();
                inc.set_services(key, objs);
            }
            for key in &changed_slices {
                let objs: Vec<_> = slices
                    .iter()
                    .filter(|o| object_key(&o.metadata) == *key)
                    .map(|o| Arc::new(SliceObj::new(o)))
                    .collect();
                inc.set_slices(key, &objs);
            }
            inc.recompute();
            let full = build(
                &services,
                &slices,
                &nodes,
                &NodeInfo {
                    name: "node-a".into(),
                    fallback_addresses: fallback.clone(),
                },
            );
            assert_eq!(*inc.state(), full.state, "seed {seed} step {step}");
            assert_eq!(inc.warnings(), full.warnings, "seed {seed} step {step}");
            let changes = inc.take_changes();
            frontends += full.state.frontends.len();
            conflicts += full
                .warnings
                .iter()
                .filter(|w| w.contains("already used"))
                .count();
            changed += changes.frontends.len();
            let addrs: BTreeSet<&FrontendAddr> = prev
                .frontends
                .keys()
                .chain(full.state.frontends.keys())
                .collect();
            for a in addrs {
                let (before, after) = (prev.frontends.get(a), full.state.frontends.get(a));
                match changes.frontends.get(a) {
                    Some(old) => assert_eq!(old.as_ref(), before, "seed {seed} step {step}"),
                    None => assert_eq!(before, after, "seed {seed} step {step}: {a}"),
                }
            }
            for ipa in prev
                .cluster_ips
                .symmetric_difference(&full.state.cluster_ips)
            {
                assert!(changes.cluster_ips.contains(ipa), "seed {seed} step {step}");
            }
            if prev.node_addresses != full.state.node_addresses {
                assert!(changes.node_addresses);
            }
            // From scratch, too.
            let compact_services: Vec<_> = services
                .iter()
                .map(|s| Arc::new(ServiceObj::new(s)))
                .collect();
            let compact_slices: Vec<_> =
                slices.iter().map(|s| Arc::new(SliceObj::new(s))).collect();
            let fresh = Incremental::from_objects(&compact_services, &compact_slices, &nodes, {
                let mut n = node();
                n.fallback_addresses = fallback.clone();
                n
            });
            assert_eq!(*fresh.state(), full.state, "seed {seed} step {step}");
            prev = full.state;
        }
    }
    // The random objects do exercise the model.
    assert!(
        frontends > 10_000 && conflicts > 500 && changed > 2_000,
        "{frontends} {conflicts} {changed}"
    );
}
