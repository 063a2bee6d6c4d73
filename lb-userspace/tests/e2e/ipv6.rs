//! End-to-end IPv6 and dual-stack Service tests with real traffic (issue 3; contract point 8:
//! "per family; clusterIPs/externalIPs/sourceRanges/LB ingress filtered per family"). They mirror
//! the IPv4 tests of `service.rs`, `service_types.rs` and `multinode.rs` (same
//! scenarios, names prefixed `ipv6_` or `dual_stack_`):
//!
//! - IPv6 ClusterIP, TCP and UDP, routed and bridge pod networks; pod-to-pod IPv6 traffic that is
//!   no Service's passes untouched; the CLI shows IPv6 frontends and backends;
//! - dual-stack Services (`ipFamilies` [IPv4, IPv6] and [IPv6, IPv4], two `clusterIPs`, one
//!   EndpointSlice per address type): each VIP reaches the backends of its own family;
//! - IPv6 NodePort from the external client and from a pod (masqueraded to the node's IPv6
//!   address), dual-stack NodePort on both node addresses, externalIPs not assigned to a node,
//!   LoadBalancer ingress IPs (ipMode unset / VIP / Proxy);
//! - rejected when no endpoints exist (TCP RST, ICMPv6 port unreachable) on every frontend kind,
//!   and on an unexposed port of an IPv6 ClusterIP;
//! - hairpin, SNAT source-port collisions (pods, and real external clients);
//! - two nodes: IPv6 NodePort with the endpoint on the other node, pod on node A to an IPv6
//!   ClusterIP with the endpoint on node B, externalTrafficPolicy Local (source kept; the node
//!   without a local endpoint drops);
//! - family isolation: a single-stack IPv4 Service does not answer on IPv6 (no IPv6 NodePort,
//!   its IPv6 externalIP and IPv6 EndpointSlices ignored), and vice versa.
//!
//! Addresses (see `testkit::testbed`): pods fd00:10:244:k::(10+i), the standalone node's `ext0`
//! fd00:77::1 and the external client fd00:77::2, cluster nodes fd00:50::(10+k) and clients
//! fd00:50::(2+n); ClusterIPs fd00:96::x (and 10.96.0.x), externalIPs fd00:78::x, LoadBalancer
//! ingress fd00:79::x (never assigned to an interface). Standalone nodes have no Node object:
//! NodePorts are served on, and masquerading uses, the `ext0` addresses (the fallback); cluster
//! nodes get Node objects with an InternalIP of each family.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test e2e -- ipv6::`

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use crate::support::*;
use podlb::types::Family;
use serde_json::Value;
use testkit::testbed::manifest::{Service, Slice};
use testkit::testbed::*;

const WHO: &str = "e2e::ipv6";
const V6: Family = Family::V6;

// The tests with an IPv4 twin in `service.rs`, `service_types.rs` or `multinode.rs`
// share its body (`crate::support::scenario`), run here with IPv6.

// =============================================================================================
// ClusterIP (service.rs)

// IPv6 ClusterIP from a pod: balanced over the ready endpoints, replies come from [VIP]:port, the
// server sees the pod's own IPv6 address, a not-ready endpoint (whose server is up) never
// answers.
#[test]
fn ipv6_tcp_clusterip_routed() {
    scenario::clusterip(PodNetwork::Routed, L4::Tcp, V6);
}

#[test]
fn ipv6_tcp_clusterip_bridge() {
    scenario::clusterip(PodNetwork::Bridge, L4::Tcp, V6);
}

#[test]
fn ipv6_udp_clusterip_routed() {
    scenario::clusterip(PodNetwork::Routed, L4::Udp, V6);
}

#[test]
fn ipv6_udp_clusterip_bridge() {
    scenario::clusterip(PodNetwork::Bridge, L4::Udp, V6);
}

// An external client reaches the IPv6 ClusterIP through ext0 (not masqueraded: ClusterIP).
#[test]
fn ipv6_external_client_routed() {
    scenario::external_client(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_external_client_bridge() {
    scenario::external_client(PodNetwork::Bridge, V6);
}

// Pod-to-pod IPv6 traffic that is not addressed to a VIP passes untouched (hooks attached, a
// Service to the same backend in place), in both directions, and from the external client.
#[test]
fn ipv6_non_service_traffic_routed() {
    scenario::non_service_traffic(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_non_service_traffic_bridge() {
    scenario::non_service_traffic(PodNetwork::Bridge, V6);
}

// Endpoints removed from and added to an IPv6 EndpointSlice are applied live.
#[test]
fn ipv6_endpoint_changes() {
    scenario::endpoint_changes(PodNetwork::Routed, V6);
}

// The operator CLI shows IPv6 frontends and backends in brackets, with their family, and
// counts their packets (also with the agent down).
#[test]
fn ipv6_cli_service_list() {
    scenario::cli(PodNetwork::Routed, V6);
}

// =============================================================================================
// Dual stack

/// Dual-stack Service `name` of `type_` with `families` order, ClusterIPs `vip4`/`vip6`, TCP
/// 80 and UDP 53 (NodePorts `node_ports` when given), its IPv4 slice (pods `pods4`) and IPv6
/// slice (pods `pods6`).
#[allow(clippy::too_many_arguments)]
fn dual_stack_docs(
    f: &Fixture,
    name: &str,
    type_: &str,
    v6_first: bool,
    (vip4, vip6): (IpAddr, IpAddr),
    node_ports: Option<(u16, u16)>,
    pods4: &[usize],
    pods6: &[usize],
) -> Vec<String> {
    let (first, second) = if v6_first { (vip6, vip4) } else { (vip4, vip6) };
    let svc = web_service(name, type_, first, node_ports).cluster_ip(second);
    let mut docs = vec![svc.yaml()];
    for (family, pods) in [(Family::V4, pods4), (Family::V6, pods6)] {
        let mut slice = web_slice(name, family);
        for &i in pods {
            slice = slice.endpoint(f.ip_of(i, family), true);
        }
        docs.push(slice.yaml());
    }
    docs
}

// A dual-stack ClusterIP Service: both VIPs work, each reaches the endpoints of its own
// family's EndpointSlice (IPv4: pod1, pod2; IPv6: pod2, pod3), and the backends see the pod's
// address of that family. Once with IPv4 as the primary family, once with IPv6.
fn dual_stack_clusterip(network: PodNetwork, v6_first: bool) {
    let mut f = Fixture::new(WHO, network, 4, true);
    f.serve(&[1, 2, 3]);
    let (vip4, vip6_) = (vip_of(Family::V4, 20), vip_of(V6, 20));
    let docs = dual_stack_docs(
        &f,
        "ds",
        "ClusterIP",
        v6_first,
        (vip4, vip6_),
        None,
        &[1, 2],
        &[2, 3],
    );
    f.apply("ds", &docs);
    let mut want = Vec::new();
    for (ip, l4) in [
        (vip4, L4::Tcp),
        (vip4, L4::Udp),
        (vip6_, L4::Tcp),
        (vip6_, L4::Udp),
    ] {
        want.push((sa(ip, l4.ports().1), l4.proto(), "ClusterIP"));
    }
    let rows = f.wait_programmed(&want);
    for (ip, pods) in [(vip4, [1, 2]), (vip6_, [2, 3])] {
        for l4 in [L4::Tcp, L4::Udp] {
            let (_, port, target) = l4.ports();
            let r = row(&rows, sa(ip, port), l4.proto()).unwrap();
            let want: BTreeSet<String> = pods
                .iter()
                .map(|&i| be(f.node.pod(i).ip_of(Family::of(ip)), target))
                .collect();
            assert_eq!(row_backends(&r), want, "{r}");
        }
    }
    for (ip, pods, seen) in [(vip4, [1, 2], v4(f.ip(0))), (vip6_, [2, 3], v6(f.ip6(0)))] {
        for l4 in [L4::Tcp, L4::Udp] {
            let dst = sa(ip, l4.ports().1);
            f.wait_reply(f.ns(0), dst, l4);
            let counts = f.collect(f.ns(0), dst, l4, 30, Seen::Client(seen));
            assert_eq!(idents(&counts), names(&pods), "{l4:?} {dst}: {counts:?}");
        }
    }
}

#[test]
fn dual_stack_clusterip_routed() {
    dual_stack_clusterip(PodNetwork::Routed, false);
}

#[test]
fn dual_stack_clusterip_bridge() {
    dual_stack_clusterip(PodNetwork::Bridge, false);
}

#[test]
fn dual_stack_clusterip_ipv6_primary() {
    dual_stack_clusterip(PodNetwork::Routed, true);
}

// A dual-stack NodePort is served on both node addresses; each family is masqueraded to the
// node's address of that family and reaches the endpoints of that family.
#[test]
fn dual_stack_nodeport_reachable_from_external_client() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 4, true);
    f.serve(&[1, 2, 3]);
    let docs = dual_stack_docs(
        &f,
        "ds",
        "NodePort",
        false,
        (vip_of(Family::V4, 21), vip_of(V6, 21)),
        Some((30080, 30053)),
        &[1, 2],
        &[2, 3],
    );
    f.apply("ds", &docs);
    let (node_ip, node_ip6) = (f.node_ip(Family::V4), f.node_ip(V6));
    let want: Vec<(SocketAddr, &str, &str)> = [node_ip, node_ip6]
        .into_iter()
        .flat_map(|ip| {
            [
                (sa(ip, 30080), "TCP", "NodePort"),
                (sa(ip, 30053), "UDP", "NodePort"),
            ]
        })
        .collect();
    let rows = f.wait_programmed(&want);
    for &(fe, p, _) in &want {
        let r = row(&rows, fe, p).unwrap();
        assert!(has_flag(&r, "snat"), "NodePort without the snat flag: {r}");
    }
    for (node_ip, pods) in [(node_ip, [1, 2]), (node_ip6, [2, 3])] {
        for (np, l4) in [(30080, L4::Tcp), (30053, L4::Udp)] {
            let dst = sa(node_ip, np);
            f.wait_reply(f.ext(), dst, l4);
            let counts = f.collect(f.ext(), dst, l4, 30, Seen::Snat(node_ip));
            assert_eq!(idents(&counts), names(&pods), "{l4:?} {dst}: {counts:?}");
        }
    }
    let st = f.status();
    assert_eq!(st["snat_address"], node_ip.to_string().as_str(), "{st}");
    assert_eq!(st["snat_address6"], node_ip6.to_string().as_str(), "{st}");
}

// =============================================================================================
// NodePort, externalIPs, LoadBalancer (service_types.rs)

// "should be able to create a functioning NodePort service" over IPv6: the external client
// reaches [node]:nodePort, replies come from there, the endpoints are balanced, the backends see
// the node's IPv6 address (eTP=Cluster: masquerade).
#[test]
fn ipv6_nodeport_reachable_from_external_client() {
    scenario::nodeport_external(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_nodeport_reachable_from_external_client_bridge() {
    scenario::nodeport_external(PodNetwork::Bridge, V6);
}

// The same IPv6 NodePort from a pod (not an endpoint): masqueraded as well; the ClusterIP of
// the same Service from the same pod keeps the pod's IPv6 address.
#[test]
fn ipv6_nodeport_reachable_from_pod() {
    scenario::nodeport_pod(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_nodeport_reachable_from_pod_bridge() {
    scenario::nodeport_pod(PodNetwork::Bridge, V6);
}

// externalTrafficPolicy Local on a standalone node with local endpoints: the NodePort keeps
// the client's IPv6 address and port (no SNAT).
#[test]
fn ipv6_nodeport_external_traffic_policy_local_keeps_client_address() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    f.serve(&[1, 2]);
    let svc = web_service("web", "NodePort", vip_of(V6, 32), Some((30080, 30053)))
        .external_traffic_policy("Local");
    // Endpoints on this node (nodeName node-0): the local set.
    let slice = web_slice("web", V6)
        .endpoint_on(f.ip6(1), "node-0")
        .endpoint_on(f.ip6(2), "node-0");
    f.apply("web", &[svc.yaml(), slice.yaml()]);
    let (tdst, udst) = (sa(f.node_ip(V6), 30080), sa(f.node_ip(V6), 30053));
    let rows = f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
    let np = row(&rows, tdst, "TCP").unwrap();
    assert!(
        !has_flag(&np, "snat"),
        "eTP=Local NodePort masquerades: {np}"
    );
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, 20, Seen::Client(v6(EXT_CLIENT_IP6)));
        assert_eq!(idents(&counts), names(&[1, 2]), "{l4:?}: {counts:?}");
    }
}

// "should be possible to connect to a service via ExternalIP when the external IP is not
// assigned to a node", over IPv6: from the external client and from a pod, masqueraded.
#[test]
fn ipv6_externalip_not_assigned_to_node() {
    scenario::externalip_not_assigned_to_node(V6);
}

// IPv6 LoadBalancer ingress IPs are programmed when ipMode is unset or VIP, not for Proxy
// (whose Service's ClusterIP and NodePort still work).
#[test]
fn ipv6_loadbalancer_ingress_ip() {
    scenario::loadbalancer_ingress_ip(V6);
}

// "should be rejected when no endpoints exist" over IPv6 (contract point 16): TCP RST and
// ICMPv6 port unreachable on every frontend kind, fast, and counted.
#[test]
fn ipv6_rejected_when_no_endpoints() {
    scenario::rejected_when_no_endpoints(V6);
}

// An IPv6 ClusterIP on a port it does not expose is rejected (contract point 24).
#[test]
fn ipv6_clusterip_unexposed_port_rejected() {
    scenario::clusterip_unexposed_port_rejected(V6);
}

// "should allow pods to hairpin back to themselves through services" over IPv6 (contract point
// 17), masqueraded to the node's IPv6 address.
#[test]
fn ipv6_hairpin() {
    scenario::hairpin(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_hairpin_bridge() {
    scenario::hairpin(PodNetwork::Bridge, V6);
}

// Two clients with the same source port 40000 to the same IPv6 NodePort at the same time: pods,
// then two real external clients (fd00:50::2 and ::3) of a one-node `Cluster`.
#[test]
fn ipv6_nodeport_snat_source_port_collision() {
    scenario::nodeport_snat_source_port_collision(V6);
}

#[test]
fn ipv6_nodeport_snat_source_port_collision_external_clients() {
    scenario::nodeport_snat_source_port_collision_external_clients(V6);
}

// =============================================================================================
// Family isolation (contract point 8)

// A single-stack Service of `family` is programmed in that family only: no NodePort on the
// node's address of the other family, its externalIP of the other family and its EndpointSlice
// of the other address type are ignored; requests in the other family reach no backend. The
// Service's own family works (from a pod and from outside).
fn single_stack_isolation(family: Family) {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    f.serve(&[1, 2]);
    let other = other_family(family);
    let cip = vip_of(family, 100);
    let (eip_own, eip_other) = (eip_of(family, 100), eip_of(other, 100));
    let svc = web_service("single", "NodePort", cip, Some((30100, 30101)))
        .external_ip(eip_own)
        .external_ip(eip_other);
    // pod1 in the Service's own family, pod2 in a slice of the other address type.
    let own = Slice::new("single", "single-own", family)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .endpoint(f.node.pod(1).ip_of(family), true);
    let foreign = Slice::new("single", "single-other", other)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .endpoint(f.node.pod(2).ip_of(other), true);
    f.apply("single", &[svc.yaml(), own.yaml(), foreign.yaml()]);
    let (node_own, node_other) = (f.node_ip(family), f.node_ip(other));
    let rows = f.wait_programmed(&[
        (sa(cip, 80), "TCP", "ClusterIP"),
        (sa(cip, 53), "UDP", "ClusterIP"),
        (sa(node_own, 30100), "TCP", "NodePort"),
        (sa(node_own, 30101), "UDP", "NodePort"),
        (sa(eip_own, 80), "TCP", "ExternalIP"),
    ]);
    let want_family = family.name();
    for r in &rows {
        let fe: SocketAddr = r["frontend"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            Family::of(fe.ip()),
            family,
            "a {} frontend of a single-stack {want_family} Service: {r}",
            other.name()
        );
        let tport = if r["protocol"] == "TCP" {
            TCP_BACKEND_PORT
        } else {
            UDP_BACKEND_PORT
        };
        assert_eq!(
            row_backends(r),
            set(&[be(f.node.pod(1).ip_of(family), tport)]),
            "backends of the other family's slice used: {r}"
        );
    }
    // The Service's family works.
    let pod_seen = Seen::Client(f.node.pod(0).ip_of(family));
    for (dst, l4) in [(sa(cip, 80), L4::Tcp), (sa(cip, 53), L4::Udp)] {
        f.wait_reply(f.ns(0), dst, l4);
        let counts = f.collect(f.ns(0), dst, l4, 10, pod_seen);
        assert_eq!(idents(&counts), names(&[1]), "{dst}: {counts:?}");
    }
    for (dst, l4) in [
        (sa(node_own, 30100), L4::Tcp),
        (sa(node_own, 30101), L4::Udp),
        (sa(eip_own, 80), L4::Tcp),
    ] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, 10, Seen::Snat(node_own));
        assert_eq!(idents(&counts), names(&[1]), "{dst}: {counts:?}");
    }
    // The other family reaches nothing: the node's address of the other family on the
    // NodePorts, and the externalIP of the other family.
    for (dst, l4) in [
        (sa(node_other, 30100), L4::Tcp),
        (sa(node_other, 30101), L4::Udp),
        (sa(eip_other, 80), L4::Tcp),
        (sa(eip_other, 53), L4::Udp),
    ] {
        f.assert_unreachable(
            f.ext(),
            dst,
            l4,
            2,
            &format!("single-stack {want_family} Service in the other family"),
        );
    }
    assert_eq!(
        f.hits(L4::Tcp, 2) + f.hits(L4::Udp, 2),
        0,
        "pod2 got traffic"
    );
}

#[test]
fn single_stack_ipv4_service_does_not_answer_on_ipv6() {
    single_stack_isolation(Family::V4);
}

#[test]
fn single_stack_ipv6_service_does_not_answer_on_ipv4() {
    single_stack_isolation(Family::V6);
}

// An IPv6 Service whose only EndpointSlice is IPv4 has no endpoints (rejects); an IPv4 Service
// whose only EndpointSlice is IPv6 likewise.
#[test]
fn ipv6_service_ignores_ipv4_endpointslice() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
    f.serve(&[1]);
    for (name, cip, fam) in [
        ("six", vip_of(V6, 110), Family::V4),
        ("four", vip_of(Family::V4, 110), V6),
    ] {
        let svc = Service::new(name, "ClusterIP").cluster_ip(cip).port(
            "http",
            80,
            "TCP",
            TCP_BACKEND_PORT,
        );
        let slice = Slice::new(name, &format!("{name}-1"), fam)
            .port("http", TCP_BACKEND_PORT, "TCP")
            .endpoint(f.node.pod(1).ip_of(fam), true);
        f.apply(name, &[svc.yaml(), slice.yaml()]);
    }
    let (d6, d4) = (sa(vip_of(V6, 110), 80), sa(vip_of(Family::V4, 110), 80));
    let rows = f.wait_programmed(&[(d6, "TCP", "ClusterIP"), (d4, "TCP", "ClusterIP")]);
    for d in [d6, d4] {
        let r = row(&rows, d, "TCP").unwrap();
        assert_eq!(
            r["backends"],
            Value::Array(vec![]),
            "other family's slice used: {r}"
        );
    }
    wait_refused(f.ns(0), d6, &f.agent);
    let mut failures = Vec::new();
    failures.extend(check_tcp_refused(f.ns(0), d6, "IPv6 Service, IPv4 slice").err());
    failures.extend(check_tcp_refused(f.ns(0), d4, "IPv4 Service, IPv6 slice").err());
    assert_no_failures("slices of the other family", &failures, &f.agent);
    assert_eq!(f.hits(L4::Tcp, 1), 0);
}

// =============================================================================================
// Two nodes (multinode.rs): cluster nodes get Node objects with an InternalIP of each family.

// IPv6 NodePort on node A (node-0) whose only endpoint is on node B (node-1): masqueraded to A
// (B's own NodePort to B), TCP and UDP; a persistent connection keeps its backend and SNAT.
#[test]
fn ipv6_nodeport_on_node_a_endpoint_on_node_b_routed() {
    scenario::nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_nodeport_on_node_a_endpoint_on_node_b_bridge() {
    scenario::nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Bridge, V6);
}

// A pod on node A to an IPv6 ClusterIP whose only endpoint is on node B: no SNAT, replies from
// [VIP]:port. Then with endpoints on both nodes: both answer.
#[test]
fn ipv6_clusterip_pod_on_a_to_endpoint_on_b_routed() {
    scenario::clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_clusterip_pod_on_a_to_endpoint_on_b_bridge() {
    scenario::clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Bridge, V6);
}

// externalTrafficPolicy Local over IPv6, endpoint on node B only: B's NodePort keeps the
// client's IPv6 address; A's drops (times out, reaches no backend); the ClusterIP still works
// from a pod on A.
#[test]
fn ipv6_external_traffic_policy_local_routed() {
    scenario::external_traffic_policy_local(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_external_traffic_policy_local_bridge() {
    scenario::external_traffic_policy_local(PodNetwork::Bridge, V6);
}

// Two external clients, both from source port 40000, to node A's IPv6 NodePort at the same
// time, with the backend on node B and on node A itself.
#[test]
fn ipv6_nodeport_two_clients_same_source_port_routed() {
    scenario::nodeport_two_clients_same_source_port(PodNetwork::Routed, V6);
}

#[test]
fn ipv6_nodeport_two_clients_same_source_port_bridge() {
    scenario::nodeport_two_clients_same_source_port(PodNetwork::Bridge, V6);
}
