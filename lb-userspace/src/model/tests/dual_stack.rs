//! Dual-stack and IPv6: each family is programmed on its own, with backends, node addresses,
//! externalIPs and ingress IPs of that family only.
use super::*;

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
        addrs(&b),
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
        addrs(&b),
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
        addrs(&b),
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
