//! The two-node scenarios (`multinode.rs` with IPv4, `ipv6.rs` with IPv6): EndpointSlice
//! endpoints carry `nodeName: node-k`, so each agent knows which endpoints are its own.
use crate::support::*;

use super::WHO;

/// `docs` after the cluster's Node objects.
fn with_nodes(docs: Vec<String>) -> Vec<String> {
    let mut all = vec![nodes_yaml()];
    all.extend(docs);
    all
}

/// A [`Multi`] with one client and servers in pod 0 of node B (node-1), the only endpoint
/// of the NodePort Service `web` (ClusterIP `vip_of(family, vip_last)`, with
/// `externalTrafficPolicy` `etp` when given, NodePorts `node_ports`), written with the Node
/// objects. Returns the fixture, the endpoint's address and the ClusterIP.
fn endpoint_on_node_b(
    network: PodNetwork,
    family: Family,
    vip_last: u8,
    etp: Option<&str>,
    node_ports: (u16, u16),
) -> (Multi, IpAddr, IpAddr) {
    let mut f = Multi::new(WHO, network, 1);
    f.serve(1, 0);
    let backend = f.pod(1, 0).ip_of(family);
    let cip = vip_of(family, vip_last);
    let docs = multi_docs(
        "web",
        "NodePort",
        cip,
        etp,
        Some(node_ports),
        &[(backend, 1)],
    );
    f.apply("web", &with_nodes(docs));
    (f, backend, cip)
}

/// NodePort on node A (node-0) with its only endpoint on node B (node-1): an external client
/// reaches A:nodePort; the reply comes from A:nodePort; the backend sees A's address
/// (eTP=Cluster: masquerade, so that the reply goes back through A). TCP and UDP. B's
/// NodePort (local endpoint) works as well, masqueraded to B. A persistent connection keeps
/// its backend and SNAT. Also: the hooks on both nodes.
pub fn nodeport_on_node_a_endpoint_on_node_b(network: PodNetwork, family: Family) {
    let (f, backend, cip) = endpoint_on_node_b(network, family, 10, None, (30080, 30053));
    let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
    for k in 0..NODES {
        let ip = f.cluster.node_ip_of(k, family);
        f.wait_programmed(
            k,
            &[
                (sa(ip, 30080), L4::Tcp, "NodePort", &[tbe]),
                (sa(ip, 30053), L4::Udp, "NodePort", &[ube]),
                (sa(cip, 80), L4::Tcp, "ClusterIP", &[tbe]),
            ],
        );
        f.assert_snat_address(k, family);
    }

    let (a, b) = f.node_ips(family);
    let client = f.client(0);
    let want = set(&[Multi::ident(1, 0)]);
    for l4 in [L4::Tcp, L4::Udp] {
        let np = if l4 == L4::Tcp { 30080 } else { 30053 };
        // Through A: masqueraded to A; through B (the endpoint's own node): masqueraded to B
        // (eTP=Cluster).
        for (node, k) in [(a, 0), (b, 1)] {
            let dst = sa(node, np);
            f.wait_reply(client, dst, l4, Seen::Snat(node));
            let counts = f.collect(client, dst, l4, 10, Seen::Snat(node));
            assert_eq!(idents(&counts), want, "{l4:?} via node-{k}: {counts:?}");
        }
    }
    // A persistent connection through A keeps its backend and its SNAT address and port.
    let dst = sa(a, 30080);
    let mut s =
        TcpSession::connect(client, dst, T).unwrap_or_else(|e| panic!("{e:#}\n{}", f.logs()));
    let first = s.request().unwrap();
    check_reply(&first, dst, Seen::Snat(a)).unwrap();
    for i in 0..5 {
        let r = s
            .request()
            .unwrap_or_else(|e| panic!("session request {i}: {e:#}\n{}", f.logs()));
        assert_eq!(
            (&r.ident, r.seen_client, r.peer),
            (&first.ident, first.seen_client, first.peer)
        );
    }
    f.assert_hooks(0);
    f.assert_hooks(1);
}

/// A pod on node A to a ClusterIP whose only endpoint is on node B: works, the reply comes
/// from VIP:port and the backend sees the client pod's own address (no SNAT for
/// pod-to-ClusterIP). Then with endpoints on both nodes: both answer, from either node.
pub fn clusterip_pod_on_a_to_endpoint_on_b(network: PodNetwork, family: Family) {
    let mut f = Multi::new(WHO, network, 1);
    f.serve(1, 0);
    f.serve(0, 1);
    let (remote, local) = (f.pod(1, 0).ip_of(family), f.pod(0, 1).ip_of(family));
    let cip = vip_of(family, 20);
    let docs =
        |eps: &[(IpAddr, usize)]| with_nodes(multi_docs("web", "ClusterIP", cip, None, None, eps));
    f.apply("web", &docs(&[(remote, 1)]));
    let (tdst, udst) = (sa(cip, 80), sa(cip, 53));
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[
                (tdst, L4::Tcp, "ClusterIP", &[sa(remote, TCP_BACKEND_PORT)]),
                (udst, L4::Udp, "ClusterIP", &[sa(remote, UDP_BACKEND_PORT)]),
            ],
        );
    }
    let (client, seen) = (f.pod(0, 0).ns(), Seen::Client(f.pod(0, 0).ip_of(family)));
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(client, dst, l4, seen);
        let counts = f.collect(client, dst, l4, 10, seen);
        assert_eq!(
            idents(&counts),
            set(&[Multi::ident(1, 0)]),
            "{l4:?}: {counts:?}"
        );
    }

    // Endpoints on both nodes.
    f.apply("web", &docs(&[(remote, 1), (local, 0)]));
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[
                (
                    tdst,
                    L4::Tcp,
                    "ClusterIP",
                    &[sa(remote, TCP_BACKEND_PORT), sa(local, TCP_BACKEND_PORT)],
                ),
                (
                    udst,
                    L4::Udp,
                    "ClusterIP",
                    &[sa(remote, UDP_BACKEND_PORT), sa(local, UDP_BACKEND_PORT)],
                ),
            ],
        );
    }
    let both = set(&[Multi::ident(1, 0), Multi::ident(0, 1)]);
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        let counts = f.collect(client, dst, l4, 30, seen);
        assert_eq!(
            idents(&counts),
            both,
            "{l4:?}: not both nodes' endpoints: {counts:?}"
        );
    }
    // The same from a pod on node B (its agent has the same Service).
    let (client, seen) = (f.pod(1, 1).ns(), Seen::Client(f.pod(1, 1).ip_of(family)));
    f.wait_reply(client, tdst, L4::Tcp, seen);
    let counts = f.collect(client, tdst, L4::Tcp, 30, seen);
    assert_eq!(idents(&counts), both, "from node-1: {counts:?}");
}

/// Two external clients, both from source port 40000, to node A's NodePort at the same time:
/// both connections work side by side and the backend sees two different SNAT source ports
/// on A's address. Once with the backend on node B, once with it on node A itself.
pub fn nodeport_two_clients_same_source_port(network: PodNetwork, family: Family) {
    let mut f = Multi::new(WHO, network, 2);
    f.serve(1, 0);
    f.serve(0, 1);
    let (remote, local) = (f.pod(1, 0).ip_of(family), f.pod(0, 1).ip_of(family));
    // The IPv4 run writes no Node objects: NodePorts are served on, and SNAT uses, eth0's
    // address (the fallback); the IPv6 run takes them from the Node objects.
    let docs = |docs: Vec<String>| match family {
        Family::V4 => docs,
        Family::V6 => with_nodes(docs),
    };
    let (rvip, lvip) = (vip_of(family, 30), vip_of(family, 31));
    let rports = Some((30080, 30053));
    let lports = Some((30081, 30054));
    let remote_docs = multi_docs("remote", "NodePort", rvip, None, rports, &[(remote, 1)]);
    let local_docs = multi_docs("local", "NodePort", lvip, None, lports, &[(local, 0)]);
    f.apply("remote", &docs(remote_docs));
    f.apply("local", &docs(local_docs));
    let a = f.cluster.node_ip_of(0, family);
    f.wait_programmed(
        0,
        &[
            (
                sa(a, 30080),
                L4::Tcp,
                "NodePort",
                &[sa(remote, TCP_BACKEND_PORT)],
            ),
            (
                sa(a, 30053),
                L4::Udp,
                "NodePort",
                &[sa(remote, UDP_BACKEND_PORT)],
            ),
            (
                sa(a, 30081),
                L4::Tcp,
                "NodePort",
                &[sa(local, TCP_BACKEND_PORT)],
            ),
            (
                sa(a, 30054),
                L4::Udp,
                "NodePort",
                &[sa(local, UDP_BACKEND_PORT)],
            ),
        ],
    );
    f.assert_snat_address(0, family);
    // Backend on node B, then on node A itself.
    for (t, u, backend) in [
        (30080, 30053, Multi::ident(1, 0)),
        (30081, 30054, Multi::ident(0, 1)),
    ] {
        let (tdst, udst) = (sa(a, t), sa(a, u));
        for c in [f.client(0), f.client(1)] {
            f.wait_reply(c, tdst, L4::Tcp, Seen::Snat(a));
            f.wait_reply(c, udst, L4::Udp, Seen::Snat(a));
        }
        two_clients_same_port(
            &|| f.logs(),
            (f.client(0), f.client(1)),
            tdst,
            udst,
            &backend,
            a,
        );
    }
}

/// externalTrafficPolicy: Local with the only endpoint on node B: B's NodePort works and the
/// backend sees the real client address and port (no SNAT); A's NodePort (no local endpoint)
/// drops, like kube-proxy: the connection times out and reaches no backend. The ClusterIP of
/// the same Service still works from a pod on A (iTP is Cluster).
pub fn external_traffic_policy_local(network: PodNetwork, family: Family) {
    let (f, backend, cip) = endpoint_on_node_b(network, family, 40, Some("Local"), (30090, 30091));
    let (a, b) = f.node_ips(family);
    let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
    f.wait_programmed(
        1,
        &[
            (sa(b, 30090), L4::Tcp, "NodePort", &[tbe]),
            (sa(b, 30091), L4::Udp, "NodePort", &[ube]),
        ],
    );
    f.wait_programmed(
        0,
        &[
            (sa(a, 30090), L4::Tcp, "NodePort", &[]),
            (sa(a, 30091), L4::Udp, "NodePort", &[]),
            (sa(cip, 80), L4::Tcp, "ClusterIP", &[tbe]),
        ],
    );
    let client = f.client(0);
    let seen = Seen::Client(f.cluster.client_ip_of(0, family));
    let want = set(&[Multi::ident(1, 0)]);
    for (np, l4) in [(30090, L4::Tcp), (30091, L4::Udp)] {
        let dst = sa(b, np);
        f.wait_reply(client, dst, l4, seen);
        let counts = f.collect(client, dst, l4, 10, seen);
        assert_eq!(idents(&counts), want, "{l4:?} via node-1: {counts:?}");
    }
    for (np, l4) in [(30090, L4::Tcp), (30091, L4::Udp)] {
        f.assert_unreachable(
            client,
            sa(a, np),
            l4,
            3,
            "eTP=Local NodePort on a node without a local endpoint",
        );
    }
    // ... and B still serves it afterwards.
    let counts = f.collect(client, sa(b, 30090), L4::Tcp, 5, seen);
    assert_eq!(idents(&counts), want, "{counts:?}");
    // The ClusterIP follows internalTrafficPolicy (Cluster): reachable from a pod on A.
    let (pod, pseen) = (f.pod(0, 0).ns(), Seen::Client(f.pod(0, 0).ip_of(family)));
    let dst = sa(cip, 80);
    f.wait_reply(pod, dst, L4::Tcp, pseen);
    let counts = f.collect(pod, dst, L4::Tcp, 5, pseen);
    assert_eq!(idents(&counts), want, "ClusterIP from node-0: {counts:?}");
}
