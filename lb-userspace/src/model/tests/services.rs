//! Which Services are programmed at all, malformed objects (warned about and skipped), and
//! two frontends claiming one address (the first by kind, Service, port keeps it).
use super::*;

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
    assert_eq!(addrs(&b), vec![fe("10.96.0.4", 80, Proto::Tcp)]);
    assert_eq!(
        backends_of(&b, "10.96.0.4", 80, Proto::Tcp),
        bes(&["10.0.0.3:8080"])
    );
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
