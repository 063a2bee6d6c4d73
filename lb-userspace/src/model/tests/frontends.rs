//! The frontends of each Service type beyond its ClusterIPs: NodePorts on the node addresses
//! (the Node object's, else the fallback), LoadBalancer ingress IPs, externalIPs, and a type
//! change.
use super::*;

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
            masq_off_cluster: false,
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
    assert_eq!(addrs(&b), vec![fe("10.96.0.10", 80, Proto::Tcp)]);
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
        addrs(&before),
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
