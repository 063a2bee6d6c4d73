//! Self tests of the namespace test bed (`testkit::testbed`). They need root and fail (never skip)
//! without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::process::Command;
use std::time::{Duration, Instant};

use podlb::types::Family;
use testkit::testbed::*;

const T: Duration = Duration::from_secs(3);

fn root() {
    require_root().expect("testbed self tests must run as root");
}

fn netns_list() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn listed(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn mk_node(pods: usize, network: PodNetwork, external_client: bool) -> Node {
    Node::new(NodeOptions {
        pods,
        network,
        external_client,
    })
    .expect("building node")
}

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

fn statfs_magic(path: &std::path::Path) -> i64 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statfs(c.as_ptr(), &mut st) },
        0,
        "statfs {}",
        path.display()
    );
    st.f_type as i64
}

fn mounted(path: &std::path::Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[test]
fn bpf_root_mounts_private_bpffs() {
    root();
    let (a, b) = (BpfRoot::new().unwrap(), BpfRoot::new().unwrap());
    assert_ne!(a.path(), b.path());
    assert!(a.path().starts_with(BPF_TEST_DIR));
    assert_eq!(statfs_magic(a.path()), 0xcafe4a11);
    assert!(mounted(a.path()));
    // Separate instances: a file pinned in one is not in the other.
    std::fs::create_dir(a.path().join("sub")).unwrap();
    assert!(!b.path().join("sub").exists());
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists(), "{} still exists", path.display());
    assert!(!mounted(&path));
}

#[test]
fn process_in_netns_keeps_mount_namespace() {
    root();
    let node = mk_node(1, PodNetwork::Routed, false);
    let bpf = BpfRoot::new().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "ip -o -4 addr show dev eth0; stat -f -c %T {}; echo to-stderr >&2",
        bpf.path().display()
    ));
    let mut p = spawn_in_netns(node.pod(0).ns(), cmd).unwrap();
    assert!(p.pid() > 0);
    let status = p
        .wait_timeout(Duration::from_secs(5))
        .expect("process did not exit");
    assert!(status.success(), "{status:?}: {}", p.log());
    let log = p.log();
    assert!(
        log.contains("10.244.0.10/32"),
        "not in the pod's netns: {log}"
    );
    assert!(log.contains("bpf_fs"), "bpf root not visible: {log}");
    assert!(log.contains("to-stderr"), "stderr not logged: {log}");

    // terminate(): SIGTERM is enough for sleep.
    let mut cmd = Command::new("sleep");
    cmd.arg("100");
    let mut p = spawn_in_netns(node.ns(), cmd).unwrap();
    assert!(p.wait_timeout(Duration::from_millis(100)).is_none());
    let t0 = Instant::now();
    let status = p.terminate();
    assert!(t0.elapsed() < Duration::from_secs(2));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));

    // kill9() for a process ignoring SIGTERM; Drop reaps another one.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("trap '' TERM; echo ready; sleep 100");
    let mut p = spawn_in_netns(node.ns(), cmd).unwrap();
    assert!(wait_until(T, Duration::from_millis(10), || p
        .log()
        .contains("ready")));
    assert_eq!(p.kill9().signal(), Some(libc::SIGKILL));
    let mut cmd = Command::new("sleep");
    cmd.arg("100");
    let p = spawn_in_netns(node.ns(), cmd).unwrap();
    let (pid, log) = (p.pid(), p.log_path().to_path_buf());
    drop(p);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped"
    );
    assert!(!log.exists());
}

#[test]
fn tcp_session_is_persistent() {
    root();
    let node = mk_node(2, PodNetwork::Routed, false);
    let srv = TcpServer::start(node.pod(1).ns(), 8080, "pod1");
    let dst = SocketAddrV4::new(node.pod(1).ip(), 8080);
    let mut s = TcpSession::connect(node.pod(0).ns(), dst, T).unwrap();
    let first = s.request().unwrap();
    // Idle longer than the server's internal read timeout: the connection must survive.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let r = s.request().unwrap();
        assert_eq!(r, first);
    }
    assert_eq!(first.local, s.local_addr().unwrap());
    assert_eq!(srv.accepted(), 1);
    // Drop of the server returns promptly and closes the connection.
    let t0 = Instant::now();
    drop(srv);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "server drop took {:?}",
        t0.elapsed()
    );
    assert!(s.request().is_err());
}

#[test]
fn clients_fail_with_context() {
    root();
    let node = mk_node(2, PodNetwork::Bridge, false);
    let dst = SocketAddrV4::new(node.pod(1).ip(), 8081); // nothing listens
    let err = format!("{:#}", tcp_request(node.pod(0).ns(), dst, T).unwrap_err());
    assert!(
        err.contains(node.pod(0).ns().name()) && err.contains("10.244.0.11:8081"),
        "{err}"
    );
    let t0 = Instant::now();
    let err = format!(
        "{:#}",
        udp_request(node.pod(0).ns(), dst, Duration::from_millis(300)).unwrap_err()
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(
        err.contains("udp") && err.contains("10.244.0.11:8081"),
        "{err}"
    );
    // Timeouts hold for unroutable destinations too (nothing answers for 10.244.0.99 in routed
    // mode is tested elsewhere; here: a bridge address nobody owns).
    let t0 = Instant::now();
    assert!(tcp_request(
        node.pod(0).ns(),
        "10.244.0.99:80".parse::<SocketAddr>().unwrap(),
        Duration::from_millis(500)
    )
    .is_err());
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn wait_helpers() {
    let t0 = Instant::now();
    let mut n = 0;
    assert!(wait_until(T, Duration::from_millis(1), || {
        n += 1;
        n == 5
    }));
    assert!(!wait_until(
        Duration::from_millis(50),
        Duration::from_millis(10),
        || false
    ));
    let mut k = 0;
    let v = wait_for(T, || {
        k += 1;
        if k < 3 {
            anyhow::bail!("not yet {k}")
        } else {
            Ok(k)
        }
    })
    .unwrap();
    assert_eq!(v, 3);
    let err = wait_for(Duration::from_millis(100), || -> anyhow::Result<()> {
        anyhow::bail!("nope")
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("nope"));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn run_in_creates_sockets_in_the_namespace() {
    root();
    let node = mk_node(1, PodNetwork::Routed, false);
    // Inside the pod the address is local; outside (this thread) it is not.
    let sock = node
        .pod(0)
        .ns()
        .run_in(|| std::net::UdpSocket::bind("10.244.0.10:0"));
    assert!(sock.is_ok());
    assert!(std::net::UdpSocket::bind("10.244.0.10:0").is_err());
    let v = node.ns().run_in(|| 42);
    assert_eq!(v, 42);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        node.ns().run_in(|| panic!("inner"))
    }));
    assert!(r.is_err());
}

fn mk_cluster(nodes: usize, network: PodNetwork, external_client: bool) -> Cluster {
    Cluster::new(ClusterOptions {
        nodes,
        pods_per_node: 2,
        network,
        external_client,
    })
    .expect("building cluster")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

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

/// The agent command line: node name per node, external interfaces, extra args. `/bin/echo`
/// stands in for the podlb binary and prints its arguments to the agent log.
#[test]
fn agent_command_line() {
    root();
    let echo = std::path::Path::new("/bin/echo");
    let log_of = |agent: &mut Agent| {
        let p = agent.process().expect("process");
        p.wait_timeout(T).expect("echo did not exit");
        agent.log()
    };
    let cluster = mk_cluster(2, PodNetwork::Routed, false);
    let mut a = Agent::start_with(echo, cluster.node(1), &["--foo", "bar"]).unwrap();
    let log = log_of(&mut a);
    assert!(
        log.contains("agent --manifests ")
            && log.contains(" --node-name node-1 ")
            && log.contains(" --pod-interface lxc* ")
            && log.contains(" --external-interface eth0 --foo bar"),
        "{log}"
    );
    assert_eq!(log.matches("--external-interface").count(), 1, "{log}");
    let node = mk_node(1, PodNetwork::Routed, true);
    let mut a = Agent::start(echo, &node).unwrap();
    let log = log_of(&mut a);
    assert!(
        log.contains(" --node-name node-0 ")
            && log.trim_end().ends_with("--external-interface ext0"),
        "{log}"
    );
    let node = mk_node(1, PodNetwork::Routed, false);
    let mut a = Agent::start(echo, &node).unwrap();
    let log = log_of(&mut a);
    assert!(!log.contains("--external-interface"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// IPv6: the same networks carry IPv6 (see the testbed module docs for the plan).

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn sa6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
}

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

/// The manifest builders write what the agent's `manifests` source parses: dual-stack and
/// IPv6 Services, IPv6 EndpointSlices, Node objects with both addresses.
#[test]
fn manifest_builders() {
    use k8s_openapi::api::core::v1::{Node as K8sNode, Service as K8sService};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use manifest::{Service, Slice};

    let v4: IpAddr = "10.96.0.10".parse().unwrap();
    let v6: IpAddr = "fd00:96::10".parse().unwrap();
    let yaml = Service::new("web", "LoadBalancer")
        .cluster_ip(v6)
        .cluster_ip(v4)
        .node_port("http", 80, "TCP", 8080, 30080)
        .port("dns", 53, "UDP", 5353)
        .external_ip(ip6("fd00:78::10"))
        .ingress(ip6("fd00:79::10"), Some("VIP"))
        .external_traffic_policy("Local")
        .yaml();
    let svc: K8sService = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("fd00:96::10"));
    assert_eq!(
        spec.cluster_ips.unwrap(),
        vec!["fd00:96::10".to_string(), "10.96.0.10".to_string()]
    );
    assert_eq!(
        spec.ip_families.unwrap(),
        vec!["IPv6".to_string(), "IPv4".to_string()]
    );
    assert_eq!(spec.ip_family_policy.as_deref(), Some("RequireDualStack"));
    assert_eq!(spec.external_ips.unwrap(), vec!["fd00:78::10".to_string()]);
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let ports = spec.ports.unwrap();
    assert_eq!(
        (ports[0].node_port, ports[1].node_port),
        (Some(30080), None)
    );
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("fd00:79::10"));
    assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));

    // The simple helpers.
    let yaml = manifest::service("web6", "fd00:96::11", &[("http", 80, "TCP")]);
    let spec = serde_yaml::from_str::<K8sService>(&yaml)
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.ip_families.unwrap(), vec!["IPv6".to_string()]);
    assert_eq!(spec.cluster_ips.unwrap(), vec!["fd00:96::11".to_string()]);
    let yaml = manifest::service("web4", "10.96.0.11", &[("http", 80, "TCP")]);
    assert!(!yaml.contains("ipFamilies"), "{yaml}");
    let yaml = manifest::dual_stack_service("ds", [v4, v6], &[("http", 80, "TCP")]);
    let spec = serde_yaml::from_str::<K8sService>(&yaml)
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        spec.ip_families.unwrap(),
        vec!["IPv4".to_string(), "IPv6".to_string()]
    );
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));

    let yaml = manifest::slice6(
        "web6",
        "web6-1",
        &[("http", 8080, "TCP")],
        &[(pod_ip6(1), true), (pod_ip6(2), false)],
    );
    let slice: EndpointSlice =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(slice.address_type, "IPv6");
    assert_eq!(
        slice.endpoints[0].addresses,
        vec!["fd00:10:244::11".to_string()]
    );
    assert_eq!(
        slice.endpoints[1].conditions.as_ref().unwrap().ready,
        Some(false)
    );
    let yaml = Slice::new("web6", "web6-2", Family::V6)
        .port("http", 8080, "TCP")
        .endpoint_on(pod_ip6_on(1, 0), "node-1")
        .label("foo", "bar")
        .yaml();
    let slice: EndpointSlice = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
    assert_eq!(
        slice
            .metadata
            .labels
            .unwrap()
            .get("kubernetes.io/service-name")
            .map(String::as_str),
        Some("web6")
    );
    let yaml = Slice::new("empty", "empty-1", Family::V6)
        .port("http", 8080, "TCP")
        .yaml();
    let slice: EndpointSlice = serde_yaml::from_str(&yaml).unwrap();
    assert!(slice.endpoints.is_empty());

    let yaml = manifest::node(
        "node-1",
        &[cluster_node_ip(1).into(), cluster_node_ip6(1).into()],
    );
    let node: K8sNode = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let addrs: Vec<(String, String)> = node
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("InternalIP".to_string(), "192.168.50.11".to_string()),
            ("InternalIP".to_string(), "fd00:50::11".to_string()),
            ("Hostname".to_string(), "node-1".to_string()),
        ]
    );
}
