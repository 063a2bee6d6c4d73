//! How Service ports are matched to EndpointSlice ports: by name and protocol, per slice
//! (targetPort is not read), and the protocol vocabulary.
use super::*;

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
