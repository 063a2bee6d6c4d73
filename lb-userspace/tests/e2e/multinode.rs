//! Multi-node end-to-end tests with real traffic: a two-node [`Cluster`] (`testkit::testbed`) on a
//! shared underlay 192.168.50.0/24, one real `podlb agent` per node (each with its own bpf root,
//! `--node-name node-k` and `--external-interface eth0`), all fed the SAME manifests, as every
//! kube-proxy of a cluster watches the same API objects. EndpointSlice endpoints carry
//! `nodeName: node-k`, so each agent knows which endpoints are its own.
//!
//! Scenarios (each with routed /32 pods and with a Linux bridge):
//! 1. NodePort on node A whose only endpoint is on node B: masqueraded through A (the backend
//!    sees A's address), replies come from A:nodePort (TCP and UDP); B's own NodePort works too.
//! 2. Pod on node A to a ClusterIP whose endpoint is on node B: no SNAT, replies from the VIP;
//!    with endpoints on both nodes both answer.
//! 3. Two external clients with the same source port to A's NodePort at once: two SNAT ports
//!    (backend on the other node and on the same node).
//! 4. externalTrafficPolicy: Local: the node with the endpoint serves it without SNAT (the backend
//!    sees the real client); the node without one drops.
//!
//! Addresses: nodes 192.168.50.10 (node-0) and .11 (node-1), clients 192.168.50.2 and .3, pods
//! 10.244.k.(10+i), ClusterIPs 10.96.0.x.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test e2e -- multinode::`

use crate::support::scenario;
use podlb::types::Family;
use testkit::testbed::PodNetwork;

// The bodies are shared with their IPv6 twins in `ipv6.rs` (`crate::support::scenario`).

// 1. NodePort on node A with its only endpoint on node B.
#[test]
fn nodeport_on_node_a_endpoint_on_node_b_routed() {
    scenario::nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Routed, Family::V4);
}

#[test]
fn nodeport_on_node_a_endpoint_on_node_b_bridge() {
    scenario::nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Bridge, Family::V4);
}

// 2. A pod on node A to a ClusterIP whose endpoint is on node B.
#[test]
fn clusterip_pod_on_a_to_endpoint_on_b_routed() {
    scenario::clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Routed, Family::V4);
}

#[test]
fn clusterip_pod_on_a_to_endpoint_on_b_bridge() {
    scenario::clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Bridge, Family::V4);
}

// 3. Two external clients with the same source port to A's NodePort at once.
#[test]
fn nodeport_two_clients_same_source_port_routed() {
    scenario::nodeport_two_clients_same_source_port(PodNetwork::Routed, Family::V4);
}

#[test]
fn nodeport_two_clients_same_source_port_bridge() {
    scenario::nodeport_two_clients_same_source_port(PodNetwork::Bridge, Family::V4);
}

// 4. externalTrafficPolicy: Local.
#[test]
fn external_traffic_policy_local_routed() {
    scenario::external_traffic_policy_local(PodNetwork::Routed, Family::V4);
}

#[test]
fn external_traffic_policy_local_bridge() {
    scenario::external_traffic_policy_local(PodNetwork::Bridge, Family::V4);
}
