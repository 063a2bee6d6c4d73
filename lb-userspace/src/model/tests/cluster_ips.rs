//! The ClusterIPs of a Service by family (`clusterIP`, `clusterIPs`, `ipFamilies`), and the
//! set of every programmed ClusterIP.
use super::*;

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
        addrs(&b),
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
