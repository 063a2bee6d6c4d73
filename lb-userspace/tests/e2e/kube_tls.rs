//! End-to-end test of the `kubernetes` source over HTTPS: a real `podlb agent --kubeconfig`
//! whose kubeconfig carries the CA and the bearer token of the API server stand-in in HTTPS
//! mode (`testkit::apiserver::ApiServer::start_tls`), as an in-cluster agent talks to the API
//! server. A Service and its EndpointSlice reach the maps and real traffic.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test e2e -- kube_tls::`

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use testkit::apiserver::{ApiServer, Kind};
use testkit::testbed::*;

// The agent lists and watches over TLS with the kubeconfig's CA data and token: a Service is
// programmed, answered by its backends, and follows a change of its endpoints (the watch).
#[test]
fn agent_over_tls_programs_a_service() {
    require_root().unwrap_or_else(|e| panic!("e2e::kube_tls tests must run as root: {e:#}"));
    let node = Node::new(NodeOptions {
        pods: 4,
        network: PodNetwork::Routed,
        external_client: false,
    })
    .expect("building the node");
    let api = ApiServer::start_tls(&node.ns().path()).expect("starting the HTTPS API stand-in");
    let dir = TempDir::new("kubeconfig-tls");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains("server: https://127.0.0.1:"), "{kc}");
    assert!(kc.contains("certificate-authority-data: "), "{kc}");

    let servers: Vec<TcpServer> = (1..4)
        .map(|i| {
            let pod = node.pod(i);
            TcpServer::start(pod.ns(), TCP_BACKEND_PORT, pod.name())
        })
        .collect();
    let agent = Agent::start_kube(
        Path::new(env!("CARGO_BIN_EXE_podlb")),
        &node,
        &kubeconfig,
        &[],
    )
    .expect("starting the agent");
    let log = || strip_ansi(&agent.log());

    let slice = |pods: &[usize]| {
        let endpoints: Vec<_> = pods
            .iter()
            .map(|&i| json!({"addresses": [node.pod(i).ip().to_string()], "conditions": {"ready": true}}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": TCP_BACKEND_PORT, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    };
    let want = |pods: &[usize]| -> BTreeSet<String> {
        pods.iter()
            .map(|&i| format!("{}:{TCP_BACKEND_PORT}", node.pod(i).ip()))
            .collect()
    };
    let dst = sa(vip(40), 80);
    let backends = || {
        try_services(&agent).ok().and_then(|rows| {
            rows.iter()
                .find(|r| r["frontend"] == dst.to_string().as_str())
                .map(row_backends)
        })
    };
    let wait_backends = |pods: &[usize]| {
        let ok = wait_until(SETTLE, Duration::from_millis(50), || {
            backends() == Some(want(pods))
        });
        assert!(
            ok,
            "{dst}: wanted backends {:?}, the maps hold {:?}\n{}",
            want(pods),
            backends(),
            log()
        );
    };

    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": vip(40).to_string(),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9999}]},
    }))
    .unwrap();
    api.apply(slice(&[1, 2])).unwrap();
    wait_backends(&[1, 2]);
    let client = node.pod(0).ns();
    wait_answered(client, dst, L4::Tcp, log);
    let answered: BTreeSet<String> = (0..30)
        .map(|k| {
            let r = tcp_request(client, dst, T)
                .unwrap_or_else(|e| panic!("request {k} to {dst}: {e:#}\n{}", log()));
            assert_eq!(r.peer, dst, "reply not from the VIP");
            r.ident
        })
        .collect();
    assert_eq!(answered, names(&[1, 2]));

    // A change after the lists arrives through the TLS watch.
    api.apply(slice(&[3])).unwrap();
    wait_backends(&[3]);

    // Every request carried the token; the agent listed and watched over TLS.
    assert_eq!(api.unauthorized(), 0, "{}", log());
    assert!(api.lists(Kind::Service) >= 1 && api.watches(Kind::EndpointSlice) >= 1);
    drop(servers);
}
