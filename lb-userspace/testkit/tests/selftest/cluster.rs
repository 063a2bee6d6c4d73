//! Clusters: the address plan, cross-node pod traffic, node settings, nodes with an index,
//! external clients, clean-up on drop and parallel clusters.
use super::*;

#[test]
fn address_helpers() {
    assert_eq!(pod_ip(3), ip("10.244.0.13"));
    assert_eq!(pod_ip_on(0, 3), pod_ip(3));
    assert_eq!(pod_ip_on(2, 0), ip("10.244.2.10"));
    assert_eq!(bridge_ip_on(0), BRIDGE_IP);
    assert_eq!(bridge_ip_on(1), ip("10.244.1.1"));
    assert_eq!(cluster_node_ip(1), ip("192.168.50.11"));
    assert_eq!(cluster_client_ip(0), CLUSTER_CLIENT_IP);
    assert_eq!(cluster_client_ip(1), ip("192.168.50.3"));
}

/// Pod on node 0 <-> pod on node 1 by pod IP, TCP and UDP, no NAT on the way.
fn cross_node_pod_to_pod(network: PodNetwork) {
    root();
    let cluster = mk_cluster(2, network, false);
    let (n0, n1) = (cluster.node(0), cluster.node(1));
    assert_eq!((n0.index(), n1.index()), (0, 1));
    assert_eq!((n0.name(), n1.name()), ("node-0".into(), "node-1".into()));
    assert_eq!(n1.pod_cidr(), "10.244.1.0/24");
    let (a, b) = (n0.pod(1), n1.pod(1));
    assert_eq!(a.ip(), ip("10.244.0.11"));
    assert_eq!(b.ip(), ip("10.244.1.11"));
    assert_eq!((b.name(), b.host_if()), ("pod1", "lxc1"));
    let tcp = TcpServer::start(b.ns(), 8080, "n1-pod1");
    let udp = UdpServer::start(b.ns(), 5353, "n1-pod1");
    let dst = SocketAddrV4::new(b.ip(), 8080);
    let r = tcp_request(a.ns(), dst, T).unwrap();
    assert_eq!(r.ident, "n1-pod1");
    assert_eq!(r.seen_client.ip(), a.ip());
    assert_eq!(r.seen_client, r.local);
    assert_eq!(r.peer, SocketAddr::V4(dst));
    assert_eq!(tcp.accepted(), 1);
    let udst = SocketAddrV4::new(b.ip(), 5353);
    let r = udp_request(a.ns(), udst, T).unwrap();
    assert_eq!(r.ident, "n1-pod1");
    assert_eq!(r.seen_client.port(), r.local.port());
    assert_eq!(r.seen_client.ip(), a.ip());
    assert_eq!(r.peer, SocketAddr::V4(udst));
    assert_eq!(udp.received(), 1);
    // The other direction, and pod -> other node's IP.
    let _s = TcpServer::start(n0.pod(0).ns(), 8080, "n0-pod0");
    let r = tcp_request(n1.pod(0).ns(), SocketAddrV4::new(n0.pod(0).ip(), 8080), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("n0-pod0", ip("10.244.1.10").into())
    );
    let _n = TcpServer::start(n1.ns(), 9000, "node-1");
    let r = tcp_request(a.ns(), SocketAddrV4::new(cluster.node_ip(1), 9000), T).unwrap();
    assert_eq!(r.ident, "node-1");
    // host-gw routes.
    let routes = n0.ns().exec(&["ip", "-4", "route", "show"]).unwrap();
    assert!(
        routes.contains("10.244.1.0/24 via 192.168.50.11 dev eth0"),
        "{routes}"
    );
    let routes = n1.ns().exec(&["ip", "-4", "route", "show"]).unwrap();
    assert!(
        routes.contains("10.244.0.0/24 via 192.168.50.10 dev eth0"),
        "{routes}"
    );
}

#[test]
fn cluster_routed_cross_node_pod_to_pod() {
    cross_node_pod_to_pod(PodNetwork::Routed);
}

#[test]
fn cluster_bridge_cross_node_pod_to_pod() {
    cross_node_pod_to_pod(PodNetwork::Bridge);
}

#[test]
fn cluster_nodes_settings() {
    root();
    let mut cluster = mk_cluster(3, PodNetwork::Bridge, false);
    assert!(cluster.client().is_none() && cluster.client_ip().is_none());
    assert!(cluster.clients().is_empty());
    for k in 0..3 {
        let node = cluster.node(k);
        assert_eq!(cluster.node_ip(k), cluster_node_ip(k));
        assert_eq!(node.node_ip(), Some(cluster_node_ip(k)));
        assert_eq!(node.external_interfaces(), vec!["eth0".to_string()]);
        assert!(node.ext().is_none() && node.ext_ip().is_none());
        let get = |key: &str| {
            node.ns()
                .exec(&["cat", &format!("/proc/sys/{key}")])
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(get("net/ipv4/ip_forward"), "1");
        assert_eq!(get("net/ipv4/conf/all/rp_filter"), "0");
        assert_eq!(get("net/ipv4/conf/eth0/rp_filter"), "0");
        let addrs = node.ns().exec(&["ip", "-o", "-4", "addr", "show"]).unwrap();
        assert!(
            addrs.contains(&format!("eth0    inet 192.168.50.{}/24", 10 + k))
                && addrs.contains(&format!("cbr0    inet 10.244.{k}.1/24")),
            "{addrs}"
        );
        let routes = node.ns().exec(&["ip", "-4", "route", "show"]).unwrap();
        for j in (0..3).filter(|&j| j != k) {
            let want = format!("10.244.{j}.0/24 via 192.168.50.{} dev eth0", 10 + j);
            assert!(routes.contains(&want), "{want} not in {routes}");
        }
    }
    // Bridge ports: one per node.
    let ports = cluster
        .bridge()
        .exec(&["ip", "-o", "link", "show", "master", "br0"])
        .unwrap();
    assert_eq!(ports.lines().count(), 3, "{ports}");
    // Pods added later on node 2 get 10.244.2.x and are reachable from node 0.
    assert_eq!(cluster.node_mut(2).add_pod().unwrap(), 2);
    let p = cluster.node(2).pod(2);
    assert_eq!(p.ip(), ip("10.244.2.12"));
    let _s = TcpServer::start(p.ns(), 8080, "n2-pod2");
    let r = tcp_request(
        cluster.node(0).pod(0).ns(),
        SocketAddrV4::new(p.ip(), 8080),
        T,
    )
    .unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("n2-pod2", ip("10.244.0.10").into())
    );
}

#[test]
fn standalone_node_with_index() {
    root();
    let node = Node::with_index(
        NodeOptions {
            pods: 2,
            network: PodNetwork::Bridge,
            external_client: true,
        },
        3,
    )
    .unwrap();
    assert_eq!(node.pod(1).ip(), ip("10.244.3.11"));
    assert_eq!(node.name(), "node-3");
    assert_eq!(node.external_interfaces(), vec!["ext0".to_string()]);
    assert_eq!(node.node_ip(), Some(EXT_NODE_IP));
    let _s = TcpServer::start(node.pod(1).ns(), 80, "pod1");
    let r = tcp_request(
        node.ext().unwrap(),
        SocketAddrV4::new(node.pod(1).ip(), 80),
        T,
    )
    .unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("pod1", EXT_CLIENT_IP.into())
    );
    let r = tcp_request(node.pod(0).ns(), SocketAddrV4::new(node.pod(1).ip(), 80), T).unwrap();
    assert_eq!(r.seen_client.ip(), ip("10.244.3.10"));
    // Node 0 as before.
    let node = mk_node(1, PodNetwork::Routed, false);
    assert_eq!((node.index(), node.name()), (0, "node-0".into()));
    assert!(node.external_interfaces().is_empty());
    assert_eq!(node.node_ip(), None);
}

/// The external client reaches every node IP (NodePort style), and pods via node 0.
fn client_to_nodes(network: PodNetwork) {
    root();
    let cluster = mk_cluster(2, network, true);
    let client = cluster.client().expect("client");
    assert_eq!(cluster.client_ip(), Some(CLUSTER_CLIENT_IP));
    assert_eq!(cluster.clients().len(), 1);
    let _servers: Vec<TcpServer> = (0..2)
        .map(|k| TcpServer::start(cluster.node(k).ns(), 9000, &format!("node-{k}")))
        .collect();
    for k in 0..2 {
        let r = tcp_request(client, SocketAddrV4::new(cluster.node_ip(k), 9000), T).unwrap();
        assert_eq!(r.ident, format!("node-{k}"));
        assert_eq!(r.seen_client.ip(), CLUSTER_CLIENT_IP);
    }
    let _u = UdpServer::start(cluster.node(1).ns(), 9001, "node-1");
    let r = udp_request(client, SocketAddrV4::new(cluster.node_ip(1), 9001), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("node-1", CLUSTER_CLIENT_IP.into())
    );
    // Pods on either node, via node 0 (replies from node 1 go straight back on the underlay).
    for k in 0..2 {
        let pod = cluster.node(k).pod(0);
        let _s = TcpServer::start(pod.ns(), 8080, &format!("n{k}-pod0"));
        let r = tcp_request(client, SocketAddrV4::new(pod.ip(), 8080), T).unwrap();
        assert_eq!(
            (r.ident, r.seen_client.ip()),
            (format!("n{k}-pod0"), CLUSTER_CLIENT_IP.into())
        );
    }
    // And the nodes reach the client.
    let _c = TcpServer::start(client, 7000, "client");
    let r = tcp_request(
        cluster.node(1).ns(),
        SocketAddrV4::new(CLUSTER_CLIENT_IP, 7000),
        T,
    )
    .unwrap();
    assert_eq!(r.seen_client.ip(), cluster.node_ip(1));
}

#[test]
fn cluster_routed_client_to_nodes() {
    client_to_nodes(PodNetwork::Routed);
}

#[test]
fn cluster_bridge_client_to_nodes() {
    client_to_nodes(PodNetwork::Bridge);
}

/// Two client namespaces both bound to source port 40000, connected at the same time.
#[test]
fn two_clients_same_source_port() {
    root();
    let mut cluster = mk_cluster(2, PodNetwork::Routed, true);
    assert_eq!(cluster.add_client().unwrap(), 1);
    assert_eq!(cluster.clients().len(), 2);
    let pod = cluster.node(1).pod(0);
    let tcp = TcpServer::start(pod.ns(), 8080, "n1-pod0");
    let udp = UdpServer::start(cluster.node(0).ns(), 5353, "node-0");
    let node_srv = TcpServer::start(cluster.node(1).ns(), 9000, "node-1");
    let (c0, c1) = (&cluster.clients()[0], &cluster.clients()[1]);
    let (ip0, ip1) = (cluster_client_ip(0), cluster_client_ip(1));

    // Both sessions open at once, to a node IP and to a pod behind node 0.
    for (dst, ident) in [
        (SocketAddrV4::new(cluster.node_ip(1), 9000), "node-1"),
        (SocketAddrV4::new(pod.ip(), 8080), "n1-pod0"),
    ] {
        let mut s0 = TcpSession::connect_from(c0, 40000, dst, T).unwrap();
        let mut s1 = TcpSession::connect_from(c1, 40000, dst, T).unwrap();
        let (r0, r1) = (s0.request().unwrap(), s1.request().unwrap());
        assert_eq!((r0.ident.as_str(), r1.ident.as_str()), (ident, ident));
        assert_eq!(r0.seen_client, SocketAddr::from((ip0, 40000)));
        assert_eq!(r1.seen_client, SocketAddr::from((ip1, 40000)));
        assert_eq!(r0.local, r0.seen_client);
        assert_eq!(s1.local_addr().unwrap().port(), 40000);
        // Still both alive.
        assert_eq!(s0.request().unwrap(), r0);
        assert_eq!(s1.request().unwrap(), r1);
        // A second session with the same 4-tuple cannot be open at the same time.
        let t0 = Instant::now();
        let err = TcpSession::connect_from(c0, 40000, dst, Duration::from_millis(300)).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("still in use") && err.contains("40000"),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    assert_eq!((node_srv.accepted(), tcp.accepted()), (2, 2));

    // One-shot requests with the same 4-tuple, repeated at once (TIME_WAIT is reused).
    let dst = SocketAddrV4::new(cluster.node_ip(1), 9000);
    for _ in 0..20 {
        for (c, cip) in [(c0, ip0), (c1, ip1)] {
            let r = tcp_request_from(c, 40000, dst, T).unwrap();
            assert_eq!(r.seen_client, SocketAddr::from((cip, 40000)));
        }
    }
    // The same source port to another destination right after (SO_REUSEADDR).
    let r = tcp_request_from(c0, 40000, SocketAddrV4::new(pod.ip(), 8080), T).unwrap();
    assert_eq!(r.seen_client, SocketAddr::from((ip0, 40000)));

    // UDP from port 40000 of both clients.
    let udst = SocketAddrV4::new(cluster.node_ip(0), 5353);
    for (c, cip) in [(c0, ip0), (c1, ip1), (c0, ip0)] {
        let r = udp_request_from(c, 40000, udst, T).unwrap();
        assert_eq!(r.seen_client, SocketAddr::from((cip, 40000)));
        assert_eq!(r.local.port(), 40000);
        assert_eq!(r.peer, SocketAddr::V4(udst));
    }
    assert_eq!(udp.received(), 3);

    // Errors name the namespace and the source port.
    let err = format!(
        "{:#}",
        tcp_request_from(c0, 40001, SocketAddrV4::new(cluster.node_ip(0), 9999), T).unwrap_err()
    );
    assert!(
        err.contains(c0.name()) && err.contains("40001") && err.contains("192.168.50.10:9999"),
        "{err}"
    );
    let t0 = Instant::now();
    let err = format!(
        "{:#}",
        tcp_request_from(
            c1,
            40001,
            "192.168.50.99:80".parse::<SocketAddr>().unwrap(),
            Duration::from_millis(400)
        )
        .unwrap_err()
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(err.contains("192.168.50.99:80"), "{err}");
}

#[test]
fn cluster_drop_removes_namespaces() {
    root();
    let mut cluster = mk_cluster(2, PodNetwork::Bridge, true);
    cluster.add_client().unwrap();
    let mut names: Vec<String> = vec![cluster.bridge().name().to_string()];
    names.extend(cluster.clients().iter().map(|c| c.name().to_string()));
    for node in cluster.nodes() {
        names.push(node.ns().name().to_string());
        names.extend(node.pods().iter().map(|p| p.ns().name().to_string()));
    }
    assert_eq!(names.len(), 1 + 2 + 2 * 3);
    assert!(
        names.iter().all(|n| listed(n)),
        "{names:?} not all in {}",
        netns_list()
    );
    drop(cluster);
    let list = netns_list();
    assert!(
        names
            .iter()
            .all(|n| !list.lines().any(|l| l.split_whitespace().next() == Some(n))),
        "{names:?} still listed: {list}"
    );
    // Also when a test panics while holding a cluster.
    let names = std::thread::spawn(|| {
        let cluster = mk_cluster(2, PodNetwork::Routed, true);
        let names: Vec<String> = [
            cluster.bridge(),
            cluster.node(1).ns(),
            cluster.client().unwrap(),
        ]
        .iter()
        .map(|n| n.name().to_string())
        .collect();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _cluster = cluster;
            panic!("boom");
        }))
        .unwrap_err();
        names
    })
    .join()
    .unwrap();
    assert!(names.iter().all(|n| !listed(n)), "{names:?}");
}

#[test]
fn parallel_clusters_do_not_collide() {
    root();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let network = if t % 2 == 0 {
                    PodNetwork::Routed
                } else {
                    PodNetwork::Bridge
                };
                let cluster = mk_cluster(2, network, true);
                let ident = format!("t{t}");
                let pod = cluster.node(1).pod(1);
                let _s = TcpServer::start(pod.ns(), 8080, &ident);
                let _n = TcpServer::start(cluster.node(1).ns(), 9000, &ident);
                for _ in 0..3 {
                    let r = tcp_request(
                        cluster.node(0).pod(0).ns(),
                        SocketAddrV4::new(pod.ip(), 8080),
                        T,
                    )
                    .unwrap();
                    assert_eq!(r.ident, ident);
                    let r = tcp_request_from(
                        cluster.client().unwrap(),
                        40000,
                        SocketAddrV4::new(cluster.node_ip(1), 9000),
                        T,
                    )
                    .unwrap();
                    assert_eq!(r.ident, ident);
                }
                cluster.bridge().name().to_string()
            })
        })
        .collect();
    let mut names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3);
}
