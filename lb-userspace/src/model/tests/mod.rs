//! Unit tests of the model, by topic, with the helpers they share: objects from YAML, a build
//! on node "node-a", and the addresses and backends of its frontends.
mod cluster_cidr;
mod cluster_ips;
mod dual_stack;
mod endpoints;
mod frontends;
mod incremental;
mod nodeport_addresses;
mod ports;
mod services;
mod traffic_policy;

use super::*;
use crate::types::*;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

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
            ..NodeInfo::default()
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

/// Every frontend address, in order.
fn addrs(b: &Built) -> Vec<FrontendAddr> {
    b.state.frontends.keys().copied().collect()
}

/// Frontend addresses of the given kind, in order.
fn of_kind(b: &Built, kind: FrontendKind) -> Vec<FrontendAddr> {
    let fes = b.state.frontends.iter();
    fes.filter(|(_, f)| f.kind == kind)
        .map(|(a, _)| *a)
        .collect()
}

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
