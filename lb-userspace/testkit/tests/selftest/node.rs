//! A standalone node: pod-to-pod and external traffic in both pod networks, the node's
//! sysctls, pods added later, clean-up on drop, parallel nodes, unique names.
use super::*;

/// pod0 -> pod1 over TCP and UDP: the right server answers and sees pod0's address.
fn pod_to_pod(network: PodNetwork) {
    root();
    let node = mk_node(2, network, false);
    let (p0, p1) = (node.pod(0), node.pod(1));
    assert_eq!(
        (p0.name(), p0.host_if(), p0.ip().to_string().as_str()),
        ("pod0", "lxc0", "10.244.0.10")
    );
    assert_eq!(p1.ip().to_string(), "10.244.0.11");
    let tcp = TcpServer::start(p1.ns(), 8080, "pod1");
    let udp = UdpServer::start(p1.ns(), 5353, "pod1");
    let dst = SocketAddrV4::new(p1.ip(), 8080);
    let r = tcp_request(p0.ns(), dst, T).unwrap();
    assert_eq!(r.ident, "pod1");
    assert_eq!(r.seen_client.ip(), p0.ip());
    assert_eq!(r.seen_client, r.local);
    assert_eq!(r.peer, SocketAddr::V4(dst));
    assert_eq!(tcp.accepted(), 1);
    let udst = SocketAddrV4::new(p1.ip(), 5353);
    let r = udp_request(p0.ns(), udst, T).unwrap();
    assert_eq!(r.ident, "pod1");
    assert_eq!(r.seen_client.ip(), p0.ip());
    assert_eq!(r.peer, SocketAddr::V4(udst));
    assert_eq!(udp.received(), 1);
    // The other direction, pod1 -> pod0, too.
    let _s0 = TcpServer::start(p0.ns(), 8080, "pod0");
    let r = tcp_request(p1.ns(), SocketAddrV4::new(p0.ip(), 8080), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("pod0", p1.ip().into())
    );
}

#[test]
fn routed_pod_to_pod() {
    pod_to_pod(PodNetwork::Routed);
}

#[test]
fn bridge_pod_to_pod() {
    pod_to_pod(PodNetwork::Bridge);
}

fn ext_to_pod(network: PodNetwork) {
    root();
    let node = mk_node(2, network, true);
    assert_eq!(node.ext_ip(), Some(EXT_CLIENT_IP));
    assert_eq!(node.node_ip(), Some(EXT_NODE_IP));
    let ext = node.ext().unwrap();
    let _s = TcpServer::start(node.pod(1).ns(), 80, "pod1");
    let r = tcp_request(ext, SocketAddrV4::new(node.pod(1).ip(), 80), T).unwrap();
    assert_eq!(r.ident, "pod1");
    assert_eq!(r.seen_client.ip(), EXT_CLIENT_IP);
    // And the node itself reaches the client and the pods.
    let _e = TcpServer::start(ext, 9000, "ext");
    let r = tcp_request(node.ns(), SocketAddrV4::new(EXT_CLIENT_IP, 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client.ip()),
        ("ext", EXT_NODE_IP.into())
    );
    let r = tcp_request(node.ns(), SocketAddrV4::new(node.pod(1).ip(), 80), T).unwrap();
    assert_eq!(r.ident, "pod1");
    let routes = ext.exec(&["ip", "route", "get", "10.96.0.10"]).unwrap();
    assert!(routes.contains("via 192.168.77.1"), "{routes}");
}

#[test]
fn routed_ext_to_pod() {
    ext_to_pod(PodNetwork::Routed);
}

#[test]
fn bridge_ext_to_pod() {
    ext_to_pod(PodNetwork::Bridge);
}

#[test]
fn node_sysctls() {
    root();
    let node = mk_node(1, PodNetwork::Routed, false);
    let get = |ns: &Netns, key: &str| {
        ns.exec(&["cat", &format!("/proc/sys/{key}")])
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(get(node.ns(), "net/ipv4/ip_forward"), "1");
    assert_eq!(get(node.ns(), "net/ipv4/conf/lxc0/proxy_arp"), "1");
    assert_eq!(get(node.ns(), "net/ipv4/conf/all/rp_filter"), "0");
    assert_eq!(get(node.pod(0).ns(), "net/ipv6/conf/all/disable_ipv6"), "0");
    assert_eq!(get(node.ns(), "net/ipv6/conf/all/forwarding"), "1");
    // No duplicate address detection anywhere (addresses usable at once).
    for (ns, dev) in [(node.ns(), "lxc0"), (node.pod(0).ns(), "eth0")] {
        assert_eq!(get(ns, "net/ipv6/conf/all/accept_dad"), "0");
        assert_eq!(get(ns, &format!("net/ipv6/conf/{dev}/accept_dad")), "0");
    }
    let addrs = node
        .pod(0)
        .ns()
        .exec(&["ip", "-6", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(
        addrs.contains("fd00:10:244:0::10/128") || addrs.contains("fd00:10:244::10/128"),
        "{addrs}"
    );
    assert!(!addrs.contains("tentative"), "{addrs}");
    let err = node
        .ns()
        .exec(&["ip", "link", "show", "nosuchdev"])
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("nosuchdev") && msg.contains(node.ns().name()),
        "{msg}"
    );
}

#[test]
fn add_pod_after_construction() {
    for network in [PodNetwork::Routed, PodNetwork::Bridge] {
        root();
        let mut node = mk_node(1, network, false);
        assert_eq!(node.add_pod().unwrap(), 1);
        assert_eq!(node.add_pod().unwrap(), 2);
        let p2 = node.pod(2);
        assert_eq!(
            (p2.name(), p2.host_if(), p2.ip().to_string().as_str()),
            ("pod2", "lxc2", "10.244.0.12")
        );
        let _s = TcpServer::start(p2.ns(), 8080, "pod2");
        let r = tcp_request(node.pod(0).ns(), SocketAddrV4::new(p2.ip(), 8080), T).unwrap();
        assert_eq!(
            (r.ident.as_str(), r.seen_client.ip()),
            ("pod2", node.pod(0).ip().into())
        );
    }
}

#[test]
fn drop_removes_namespaces() {
    root();
    let node = mk_node(2, PodNetwork::Bridge, true);
    let mut names: Vec<String> = node
        .pods()
        .iter()
        .map(|p| p.ns().name().to_string())
        .collect();
    names.push(node.ns().name().to_string());
    names.push(node.ext().unwrap().name().to_string());
    assert!(
        names.iter().all(|n| listed(n)),
        "{names:?} not all in {}",
        netns_list()
    );
    drop(node);
    assert!(
        names.iter().all(|n| !listed(n)),
        "{names:?} still listed: {}",
        netns_list()
    );
    // Also when a test panics while holding a node.
    let name = std::thread::spawn(|| {
        let node = mk_node(1, PodNetwork::Routed, false);
        let name = node.ns().name().to_string();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _node = node;
            panic!("boom");
        }))
        .unwrap_err();
        name
    })
    .join()
    .unwrap();
    assert!(!listed(&name));
}

#[test]
fn parallel_nodes_do_not_collide() {
    root();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let network = if t % 2 == 0 {
                    PodNetwork::Routed
                } else {
                    PodNetwork::Bridge
                };
                let node = mk_node(2, network, true);
                let ident = format!("t{t}");
                let _s = TcpServer::start(node.pod(1).ns(), 8080, &ident);
                for _ in 0..3 {
                    let r = tcp_request(
                        node.pod(0).ns(),
                        SocketAddrV4::new(node.pod(1).ip(), 8080),
                        T,
                    )
                    .unwrap();
                    assert_eq!(r.ident, ident);
                }
                node.ns().name().to_string()
            })
        })
        .collect();
    let mut names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3);
}

#[test]
fn unique_names() {
    let (a, b) = (unique_name("pod0"), unique_name("pod0"));
    assert_ne!(a, b);
    assert!(
        a.starts_with(&format!("plb{}-", std::process::id())) && a.ends_with("-pod0"),
        "{a}"
    );
}
