//! IPv6: the same networks carry IPv6 (see the testbed module docs for the plan).
use super::*;

#[test]
fn address_helpers_v6() {
    assert_eq!(pod_ip6(3), ip6("fd00:10:244:0::13"));
    assert_eq!(pod_ip6_on(0, 3), pod_ip6(3));
    assert_eq!(pod_ip6_on(2, 0), ip6("fd00:10:244:2::10"));
    assert_eq!(pod_ip6_on(1, 245), ip6("fd00:10:244:1::255"));
    assert_eq!(bridge_ip6_on(0), BRIDGE_IP6);
    assert_eq!(bridge_ip6_on(12), ip6("fd00:10:244:12::1"));
    assert_eq!(cluster_node_ip6(1), ip6("fd00:50::11"));
    assert_eq!(cluster_node_ip6(244), ip6("fd00:50::254"));
    assert_eq!(cluster_client_ip6(0), CLUSTER_CLIENT_IP6);
    assert_eq!(cluster_client_ip6(1), ip6("fd00:50::3"));
    assert_eq!(EXT_NODE_IP6, ip6("fd00:77::1"));
    assert_eq!(EXT_CLIENT_IP6, ip6("fd00:77::2"));
    assert_eq!(ROUTED_GATEWAY6, ip6("fe80::ecee:eeff:feee:eeee"));
    assert_eq!(Family::of(ip("10.0.0.1").into()), Family::V4);
    assert_eq!(Family::of(ip6("fd00::1").into()), Family::V6);
    assert_eq!(Family::V6.name(), "IPv6");
}

/// pod0 -> pod1 over IPv6 TCP and UDP: the right server answers and sees pod0's IPv6 address;
/// the same servers answer over IPv4 too.
fn pod_to_pod_v6(network: PodNetwork) {
    root();
    let node = mk_node(2, network, false);
    let (p0, p1) = (node.pod(0), node.pod(1));
    assert_eq!(p0.ip6(), ip6("fd00:10:244::10"));
    assert_eq!(p1.ip6(), ip6("fd00:10:244::11"));
    assert_eq!(p1.ip_of(Family::V6), IpAddr::V6(p1.ip6()));
    assert_eq!(p1.ip_of(Family::V4), IpAddr::V4(p1.ip()));
    let tcp = TcpServer::start(p1.ns(), 8080, "pod1");
    let udp = UdpServer::start(p1.ns(), 5353, "pod1");
    let dst = sa6(p1.ip6(), 8080);
    let r = tcp_request(p0.ns(), dst, T).unwrap();
    assert_eq!(r.ident, "pod1");
    assert_eq!(r.seen_client.ip(), p0.ip6());
    assert_eq!(r.seen_ip(), IpAddr::V6(p0.ip6()));
    assert_eq!(r.seen_client, r.local);
    assert_eq!(r.peer, dst);
    assert!(r.from_addr(dst));
    assert_eq!(tcp.accepted(), 1);
    let udst = sa6(p1.ip6(), 5353);
    let r = udp_request(p0.ns(), udst, T).unwrap();
    assert_eq!(r.ident, "pod1");
    assert_eq!(r.seen_client.ip(), p0.ip6());
    assert_eq!(r.seen_client.port(), r.local.port());
    assert_eq!(r.local.ip(), Ipv6Addr::UNSPECIFIED);
    assert_eq!(r.peer, udst);
    assert_eq!(udp.received(), 1);
    // The same servers over IPv4.
    let r = tcp_request(p0.ns(), SocketAddrV4::new(p1.ip(), 8080), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("pod1", p0.ip().into())
    );
    let r = udp_request(p0.ns(), SocketAddrV4::new(p1.ip(), 5353), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("pod1", p0.ip().into())
    );
    assert_eq!((tcp.accepted(), udp.received()), (2, 2));
    // The other direction, pod1 -> pod0, and a persistent session.
    let _s0 = TcpServer::start(p0.ns(), 8080, "pod0");
    let mut s = TcpSession::connect(p1.ns(), sa6(p0.ip6(), 8080), T).unwrap();
    let first = s.request().unwrap();
    assert_eq!(
        (first.ident.as_str(), first.seen_client.ip()),
        ("pod0", p1.ip6().into())
    );
    assert_eq!(s.request().unwrap(), first);
    assert_eq!(s.peer_addr().unwrap(), sa6(p0.ip6(), 8080));
    // Pod to its gateway: the bridge address, or the host veth's link-local address.
    let gw = match network {
        PodNetwork::Bridge => bridge_ip6_on(0).to_string(),
        PodNetwork::Routed => format!("{ROUTED_GATEWAY6} dev eth0"),
    };
    let routes = p0
        .ns()
        .exec(&["ip", "-6", "route", "show", "default"])
        .unwrap();
    assert!(routes.contains(&format!("via {gw}")), "{routes}");
}

#[test]
fn routed_pod_to_pod_v6() {
    pod_to_pod_v6(PodNetwork::Routed);
}

#[test]
fn bridge_pod_to_pod_v6() {
    pod_to_pod_v6(PodNetwork::Bridge);
}

/// The external client reaches a pod and the node over IPv6; the node reaches the client.
fn ext_to_pod_v6(network: PodNetwork) {
    root();
    let node = mk_node(2, network, true);
    assert_eq!(node.ext_ip6(), Some(EXT_CLIENT_IP6));
    assert_eq!(node.node_ip6(), Some(EXT_NODE_IP6));
    assert_eq!(node.node_ip_of(Family::V6), Some(EXT_NODE_IP6.into()));
    assert_eq!(node.ext_ip_of(Family::V4), Some(EXT_CLIENT_IP.into()));
    let ext = node.ext().unwrap();
    let _s = TcpServer::start(node.pod(1).ns(), 80, "pod1");
    let _u = UdpServer::start(node.pod(1).ns(), 53, "pod1");
    let r = tcp_request(ext, sa6(node.pod(1).ip6(), 80), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("pod1", EXT_CLIENT_IP6.into())
    );
    let r = udp_request(ext, sa6(node.pod(1).ip6(), 53), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("pod1", EXT_CLIENT_IP6.into())
    );
    // Client -> node (NodePort style) and node -> client.
    let _n = TcpServer::start(node.ns(), 9000, "node");
    let r = tcp_request(ext, sa6(EXT_NODE_IP6, 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("node", EXT_CLIENT_IP6.into())
    );
    let _e = TcpServer::start(ext, 9000, "ext");
    let r = tcp_request(node.ns(), sa6(EXT_CLIENT_IP6, 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("ext", EXT_NODE_IP6.into())
    );
    // A pod reaches the node's external IPv6 address (NodePort from a pod).
    let r = tcp_request(node.pod(0).ns(), sa6(EXT_NODE_IP6, 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("node", node.pod(0).ip6().into())
    );
    // Service-style addresses go to the node by the default route.
    let routes = ext
        .exec(&["ip", "-6", "route", "get", "fd00:96::10"])
        .unwrap();
    assert!(routes.contains("via fd00:77::1"), "{routes}");
}

#[test]
fn routed_ext_to_pod_v6() {
    ext_to_pod_v6(PodNetwork::Routed);
}

#[test]
fn bridge_ext_to_pod_v6() {
    ext_to_pod_v6(PodNetwork::Bridge);
}

#[test]
fn node_ipv6_settings() {
    root();
    for network in [PodNetwork::Routed, PodNetwork::Bridge] {
        let node = mk_node(1, network, true);
        let get = |ns: &Netns, key: &str| {
            ns.exec(&["cat", &format!("/proc/sys/{key}")])
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(get(node.ns(), "net/ipv6/conf/all/forwarding"), "1");
        assert_eq!(get(node.ns(), "net/ipv6/conf/ext0/forwarding"), "1");
        assert_eq!(get(node.ns(), "net/ipv6/conf/lxc0/forwarding"), "1");
        // Every IPv6 address is usable at once: none is tentative, and none failed DAD.
        for ns in [node.ns(), node.pod(0).ns(), node.ext().unwrap()] {
            let addrs = ns.exec(&["ip", "-6", "-o", "addr", "show"]).unwrap();
            assert!(
                !addrs.contains("tentative") && !addrs.contains("dadfailed"),
                "{addrs}"
            );
        }
        let addrs = node.ns().exec(&["ip", "-6", "-o", "addr", "show"]).unwrap();
        assert!(addrs.contains("ext0    inet6 fd00:77::1/64"), "{addrs}");
        let routes = node.ns().exec(&["ip", "-6", "route", "show"]).unwrap();
        match network {
            PodNetwork::Routed => {
                assert!(routes.contains("fd00:10:244::10 dev lxc0"), "{routes}");
                // The host veth owns the pods' gateway address.
                let lxc = node
                    .ns()
                    .exec(&["ip", "-6", "addr", "show", "dev", "lxc0"])
                    .unwrap();
                assert!(lxc.contains("fe80::ecee:eeff:feee:eeee/64"), "{lxc}");
            }
            PodNetwork::Bridge => {
                assert!(addrs.contains("cbr0    inet6 fd00:10:244::1/64"), "{addrs}");
                assert!(routes.contains("fd00:10:244::/64 dev cbr0"), "{routes}");
            }
        }
        assert_eq!(node.pod_cidr6(), "fd00:10:244:0::/64");
    }
}

/// Servers bind the same port in both families (also an ephemeral one) and report the peer of
/// either family.
#[test]
fn servers_answer_both_families() {
    root();
    let node = mk_node(2, PodNetwork::Bridge, false);
    let p1 = node.pod(1);
    let tcp = TcpServer::start(p1.ns(), 0, "any");
    let udp = UdpServer::start(p1.ns(), 0, "any");
    assert_ne!(tcp.port(), 0);
    let (tp, up) = (tcp.port(), udp.port());
    let listening = p1.ns().exec(&["ss", "-Htuln"]).unwrap();
    for want in [
        format!("0.0.0.0:{tp}"),
        format!("[::]:{tp}"),
        format!("0.0.0.0:{up}"),
        format!("[::]:{up}"),
    ] {
        assert!(listening.contains(&want), "{want} not in:\n{listening}");
    }
    let c = node.pod(0);
    for (dst_ip, seen) in [
        (IpAddr::V4(p1.ip()), IpAddr::V4(c.ip())),
        (IpAddr::V6(p1.ip6()), IpAddr::V6(c.ip6())),
    ] {
        let r = tcp_request(c.ns(), SocketAddr::new(dst_ip, tp), T).unwrap();
        assert_eq!((r.ident.as_str(), r.seen_ip()), ("any", seen), "{r:?}");
        assert_eq!(r.seen_client, r.local);
        let r = udp_request(c.ns(), SocketAddr::new(dst_ip, up), T).unwrap();
        assert_eq!((r.ident.as_str(), r.seen_ip()), ("any", seen), "{r:?}");
        assert_eq!(r.peer, SocketAddr::new(dst_ip, up));
    }
    assert_eq!((tcp.accepted(), udp.received()), (2, 2));
    // Requests to a closed port fail over IPv6 as they do over IPv4, naming the destination.
    let dst = sa6(p1.ip6(), 8081);
    let err = format!("{:#}", tcp_request(c.ns(), dst, T).unwrap_err());
    assert!(err.contains("[fd00:10:244::11]:8081"), "{err}");
    let t0 = Instant::now();
    assert!(udp_request(c.ns(), dst, Duration::from_millis(300)).is_err());
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Drop stops both sockets promptly.
    let t0 = Instant::now();
    drop((tcp, udp));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let listening = p1.ns().exec(&["ss", "-Htuln"]).unwrap();
    assert!(!listening.contains(&format!(":{tp} ")), "{listening}");
}

/// Pod on node 0 <-> pod on node 1 by IPv6 pod address, TCP and UDP, no NAT on the way; node to
/// node over IPv6; the IPv6 host-gw routes.
fn cross_node_pod_to_pod_v6(network: PodNetwork) {
    root();
    let cluster = mk_cluster(2, network, false);
    let (n0, n1) = (cluster.node(0), cluster.node(1));
    assert_eq!(n1.pod_cidr6(), "fd00:10:244:1::/64");
    assert_eq!(cluster.node_ip6(1), ip6("fd00:50::11"));
    assert_eq!(n1.node_ip6(), Some(ip6("fd00:50::11")));
    assert_eq!(
        cluster.node_ip_of(0, Family::V6),
        IpAddr::V6(ip6("fd00:50::10"))
    );
    let (a, b) = (n0.pod(1), n1.pod(1));
    assert_eq!(b.ip6(), ip6("fd00:10:244:1::11"));
    let tcp = TcpServer::start(b.ns(), 8080, "n1-pod1");
    let udp = UdpServer::start(b.ns(), 5353, "n1-pod1");
    let dst = sa6(b.ip6(), 8080);
    let r = tcp_request(a.ns(), dst, T).unwrap();
    assert_eq!(r.ident, "n1-pod1");
    assert_eq!(r.seen_client.ip(), a.ip6());
    assert_eq!(r.seen_client, r.local);
    assert_eq!(r.peer, dst);
    let udst = sa6(b.ip6(), 5353);
    let r = udp_request(a.ns(), udst, T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("n1-pod1", a.ip6().into())
    );
    assert_eq!(r.peer, udst);
    assert_eq!((tcp.accepted(), udp.received()), (1, 1));
    // The other direction.
    let _s = TcpServer::start(n0.pod(0).ns(), 8080, "n0-pod0");
    let r = tcp_request(n1.pod(0).ns(), sa6(n0.pod(0).ip6(), 8080), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("n0-pod0", ip6("fd00:10:244:1::10").into())
    );
    // Pod -> other node's IPv6 address, and node -> node.
    let _n = TcpServer::start(n1.ns(), 9000, "node-1");
    let r = tcp_request(a.ns(), sa6(cluster.node_ip6(1), 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("node-1", a.ip6().into())
    );
    let r = tcp_request(n0.ns(), sa6(cluster.node_ip6(1), 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("node-1", cluster.node_ip6(0).into())
    );
    let routes = n0.ns().exec(&["ip", "-6", "route", "show"]).unwrap();
    assert!(
        routes.contains("fd00:10:244:1::/64 via fd00:50::11 dev eth0"),
        "{routes}"
    );
    let routes = n1.ns().exec(&["ip", "-6", "route", "show"]).unwrap();
    assert!(
        routes.contains("fd00:10:244::/64 via fd00:50::10 dev eth0"),
        "{routes}"
    );
}

#[test]
fn cluster_routed_cross_node_pod_to_pod_v6() {
    cross_node_pod_to_pod_v6(PodNetwork::Routed);
}

#[test]
fn cluster_bridge_cross_node_pod_to_pod_v6() {
    cross_node_pod_to_pod_v6(PodNetwork::Bridge);
}

/// The external clients reach every node's IPv6 address (NodePort style), pods via node 0, and
/// the nodes reach the clients; two clients may use the same source port at once.
fn client_to_nodes_v6(network: PodNetwork) {
    root();
    let mut cluster = mk_cluster(2, network, true);
    assert_eq!(cluster.add_client().unwrap(), 1);
    assert_eq!(cluster.client_ip6(), Some(CLUSTER_CLIENT_IP6));
    assert_eq!(
        cluster.client_ip_of(1, Family::V6),
        IpAddr::V6(ip6("fd00:50::3"))
    );
    let client = cluster.client().expect("client");
    let _servers: Vec<TcpServer> = (0..2)
        .map(|k| TcpServer::start(cluster.node(k).ns(), 9000, &format!("node-{k}")))
        .collect();
    for k in 0..2 {
        let r = tcp_request(client, sa6(cluster.node_ip6(k), 9000), T).unwrap();
        assert_eq!(r.ident, format!("node-{k}"));
        assert_eq!(r.seen_client.ip(), CLUSTER_CLIENT_IP6);
    }
    let _u = UdpServer::start(cluster.node(1).ns(), 9001, "node-1");
    let r = udp_request(client, sa6(cluster.node_ip6(1), 9001), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("node-1", CLUSTER_CLIENT_IP6.into())
    );
    // Pods on either node, via node 0.
    for k in 0..2 {
        let pod = cluster.node(k).pod(0);
        let _s = TcpServer::start(pod.ns(), 8080, &format!("n{k}-pod0"));
        let r = tcp_request(client, sa6(pod.ip6(), 8080), T).unwrap();
        assert_eq!(
            (r.ident, r.seen_client.ip()),
            (format!("n{k}-pod0"), CLUSTER_CLIENT_IP6.into())
        );
    }
    // The nodes reach the client.
    let _c = TcpServer::start(client, 7000, "client");
    let r = tcp_request(cluster.node(1).ns(), sa6(CLUSTER_CLIENT_IP6, 7000), T).unwrap();
    assert_eq!(r.seen_client.ip(), cluster.node_ip6(1));
    let routes = client.exec(&["ip", "-6", "route", "show"]).unwrap();
    assert!(
        routes.contains("fd00:10:244::/48 via fd00:50::10 dev eth0"),
        "{routes}"
    );
    // Two clients, both from source port 40000 (bound to [::]), at the same time.
    let (c0, c1) = (&cluster.clients()[0], &cluster.clients()[1]);
    let dst = sa6(cluster.node_ip6(1), 9000);
    let mut s0 = TcpSession::connect_from(c0, 40000, dst, T).unwrap();
    let mut s1 = TcpSession::connect_from(c1, 40000, dst, T).unwrap();
    let (r0, r1) = (s0.request().unwrap(), s1.request().unwrap());
    assert_eq!(r0.seen_client, sa6(cluster_client_ip6(0), 40000));
    assert_eq!(r1.seen_client, sa6(cluster_client_ip6(1), 40000));
    assert_eq!(r0.local, r0.seen_client);
    assert_eq!(s0.request().unwrap(), r0);
    let err = TcpSession::connect_from(c0, 40000, dst, Duration::from_millis(300)).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("still in use") && err.contains("40000"),
        "{err}"
    );
    drop((s0, s1));
    for _ in 0..5 {
        for (c, cip) in [(c0, cluster_client_ip6(0)), (c1, cluster_client_ip6(1))] {
            let r = tcp_request_from(c, 40000, dst, T).unwrap();
            assert_eq!(r.seen_client, sa6(cip, 40000));
            let r = udp_request_from(c, 40000, sa6(cluster.node_ip6(1), 9001), T).unwrap();
            assert_eq!(r.seen_client, sa6(cip, 40000));
            assert_eq!(r.local.port(), 40000);
        }
    }
}

#[test]
fn cluster_routed_client_to_nodes_v6() {
    client_to_nodes_v6(PodNetwork::Routed);
}

#[test]
fn cluster_bridge_client_to_nodes_v6() {
    client_to_nodes_v6(PodNetwork::Bridge);
}
