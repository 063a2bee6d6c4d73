//! externalTrafficPolicy and internalTrafficPolicy: the local or cluster endpoint set, SNAT,
//! and dropping rather than rejecting when a Local frontend has no endpoints.
use super::*;

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
            masq_off_cluster: false,
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
