//! `--cluster-cidr` end to end, on the two-node cluster of [`crate::multinode`]: an external
//! client routes the Service range via node A (node-0) and calls a ClusterIP whose only
//! endpoint is a pod on node B (node-1).
//!
//! - With `--cluster-cidr 10.244.0.0/16,fd00:10:244::/48` node A masquerades the client (its
//!   source is outside the CIDR) to its own address: the backend sees node A, the reply goes
//!   back through A, which maps it back to the ClusterIP, and the request succeeds. A pod on
//!   node A (inside the CIDR) keeps its own address.
//! - Without it the backend sees the client's own address and answers it directly: the reply
//!   leaves node B for the client without passing node A, so nothing maps its source back to
//!   the ClusterIP. A TCP connection never completes, and a UDP answer arrives from the pod's
//!   own address. A pod client still works, so the Service itself is fine: the flag is what
//!   makes the external client work.
//!
//! Needs root (fails, never skips, without it).

use std::net::{IpAddr, SocketAddr};

use crate::support::*;
use podlb::types::Family;
use testkit::testbed::wait_for;
use testkit::testbed::PodNetwork;

const WHO: &str = "cluster-cidr";
const CIDRS: &str = "10.244.0.0/16,fd00:10:244::/48";

/// The Service range the client routes via node A.
fn service_range(family: Family) -> &'static str {
    match family {
        Family::V4 => "10.96.0.0/16",
        Family::V6 => "fd00:96::/64",
    }
}

/// The cluster (agents with `agent_args`), servers in pod 0 of node B, the ClusterIP Service
/// `web` (TCP 80, UDP 53) with that pod as its only endpoint, programmed on both nodes, and
/// the client's route to the Service range via node A. Returns the fixture, the TCP and UDP
/// frontends and the backend's address.
fn setup(family: Family, agent_args: &[&str]) -> (Multi, SocketAddr, SocketAddr, IpAddr) {
    let mut f = Multi::with_agent_args(WHO, PodNetwork::Routed, 1, agent_args);
    f.serve(1, 0);
    let backend = f.pod(1, 0).ip_of(family);
    let cip = vip_of(family, 30);
    let mut docs = vec![nodes_yaml()];
    docs.extend(multi_docs(
        "web",
        "ClusterIP",
        cip,
        None,
        None,
        &[(backend, 1)],
    ));
    f.apply("web", &docs);
    let (tdst, udst) = (sa(cip, 80), sa(cip, 53));
    let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[
                (tdst, L4::Tcp, "ClusterIP", &[tbe]),
                (udst, L4::Udp, "ClusterIP", &[ube]),
            ],
        );
    }
    f.cluster
        .route_from_client(0, service_range(family), 0)
        .expect("routing the Service range via node A");
    (f, tdst, udst, backend)
}

/// Node `k`'s `service list` row of `dst`/`proto`.
fn service_row(f: &Multi, k: usize, dst: SocketAddr, proto: &str) -> serde_json::Value {
    let rows = try_services(&f.agents[k]).unwrap_or_else(|e| panic!("service list: {e:#}"));
    row(&rows, dst, proto).unwrap_or_else(|| panic!("no row {dst}/{proto}: {rows:?}"))
}

/// Node `k`'s event counter `name` (`podlb status`).
fn counter(f: &Multi, k: usize, name: &str) -> u64 {
    let s = try_status(&f.agents[k]).unwrap_or_else(|e| panic!("podlb status: {e:#}"));
    s["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in status: {s}"))
}

fn external_client_is_masqueraded_with_cluster_cidr(family: Family) {
    let (f, tdst, udst, _) = setup(family, &["--cluster-cidr", CIDRS]);
    for k in 0..NODES {
        for (dst, proto) in [(tdst, "TCP"), (udst, "UDP")] {
            let r = service_row(&f, k, dst, proto);
            assert_eq!(flags(&r), ["masq-off-cluster"], "node-{k}: {r}");
        }
    }
    let (a, _) = f.node_ips(family);
    let client = f.client(0);
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(client, dst, l4, Seen::Snat(a));
        let counts = f.collect(client, dst, l4, 10, Seen::Snat(a));
        assert_eq!(
            idents(&counts),
            set(&[Multi::ident(1, 0)]),
            "{l4:?}: {counts:?}"
        );
    }
    // Counted apart from the frontends that masquerade everything (there are none here).
    assert!(counter(&f, 0, "snat_off_cluster") >= 22, "{}", f.logs());
    assert_eq!(counter(&f, 0, "snat"), 0);
    // Node B served no flow from outside.
    assert_eq!(counter(&f, 1, "snat_off_cluster"), 0);
    // `podlb status` shows the CIDRs the datapath holds.
    let s = try_status(&f.agents[0]).unwrap_or_else(|e| panic!("podlb status: {e:#}"));
    assert_eq!(
        s["cluster_cidrs"],
        serde_json::json!(["10.244.0.0/16", "fd00:10:244::/48"]),
        "{s}"
    );

    // A pod of node A is inside the CIDR: it keeps its source.
    let pod = f.pod(0, 0);
    let seen = Seen::Client(pod.ip_of(family));
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(pod.ns(), dst, l4, seen);
        f.collect(pod.ns(), dst, l4, 5, seen);
    }
    f.assert_hooks(0);
}

fn external_client_reply_bypasses_node_a_without_cluster_cidr(family: Family) {
    let (f, tdst, udst, backend) = setup(family, &[]);
    for (dst, proto) in [(tdst, "TCP"), (udst, "UDP")] {
        let r = service_row(&f, 0, dst, proto);
        assert!(flags(&r).is_empty(), "{r}");
    }
    // The Service works from inside the cluster.
    let pod = f.pod(0, 0);
    let seen = Seen::Client(pod.ip_of(family));
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(pod.ns(), dst, l4, seen);
    }

    let client = f.client(0);
    let client_ip = f.cluster.client_ip_of(0, family);
    // UDP: the datagram reaches the backend with the client's own address, and the answer
    // comes straight from the pod (node B routes it to the client on the underlay), not from
    // the ClusterIP: it never passed node A, so nothing mapped it back.
    let r = wait_for(SETTLE, || L4::Udp.request(client, udst, SHORT))
        .unwrap_or_else(|e| panic!("no UDP answer at all: {e:#}\n{}", f.logs()));
    assert_eq!(
        (r.peer, r.seen_client.ip(), r.ident.as_str()),
        (sa(backend, UDP_BACKEND_PORT), client_ip, "node1-pod0"),
        "{r:?}"
    );
    assert_eq!(counter(&f, 0, "snat_off_cluster"), 0);
    let s = try_status(&f.agents[0]).unwrap_or_else(|e| panic!("podlb status: {e:#}"));
    assert_eq!(s["cluster_cidrs"], serde_json::json!([]), "{s}");
    // TCP: the SYN-ACK comes from the pod's address too, so the client's connection to the
    // ClusterIP never completes, and the backend accepts nothing.
    let accepted = f.tcp[&Multi::ident(1, 0)].accepted();
    for i in 0..3 {
        if let Ok(r) = L4::Tcp.request(client, tdst, SHORT) {
            panic!(
                "TCP request {i} to {tdst} was answered: {r:?}\n{}",
                f.logs()
            );
        }
    }
    assert_eq!(f.tcp[&Multi::ident(1, 0)].accepted(), accepted);
}

#[test]
fn external_client_is_masqueraded_with_cluster_cidr_v4() {
    external_client_is_masqueraded_with_cluster_cidr(Family::V4);
}

#[test]
fn external_client_is_masqueraded_with_cluster_cidr_v6() {
    external_client_is_masqueraded_with_cluster_cidr(Family::V6);
}

#[test]
fn external_client_reply_bypasses_node_a_without_cluster_cidr_v4() {
    external_client_reply_bypasses_node_a_without_cluster_cidr(Family::V4);
}

#[test]
fn external_client_reply_bypasses_node_a_without_cluster_cidr_v6() {
    external_client_reply_bypasses_node_a_without_cluster_cidr(Family::V6);
}
