//! ICMP errors about NATed flows reach the client in a form it recognises (real traffic).
//!
//! - A UDP backend with nothing listening answers with ICMP port unreachable about
//!   client -> backend; the client's socket is connected to the VIP, so only a translated error
//!   gives it "connection refused".
//! - The other way: a client that closed its UDP socket answers a late reply from the VIP with
//!   port unreachable, addressed to the VIP; only an error passed on (translated) to the backend
//!   gives the backend's connected socket "connection refused".
//! - Path MTU discovery through a VIP: the backend's host-side link has a smaller MTU, the node
//!   sends "fragmentation needed" about client -> backend, and only a translated error lets the
//!   client's TCP shrink its segments and finish the transfer.

use crate::support::start_agent;
use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    thread,
    time::Duration,
};

use testkit::testbed::{
    manifest, require_root, tcp_request, wait_for, Agent, Node, NodeOptions, PodNetwork, TcpServer,
};

const TIMEOUT: Duration = Duration::from_secs(3);
const SETTLE: Duration = Duration::from_secs(20);

/// A node with 2 pods and the agent, and Service `name` on `vip`: TCP 80 -> pod1:8080 (a
/// server, so that the Service is known to be programmed) and UDP 53 -> pod1:5353 (whatever
/// the test puts there). Returns once pod0 reaches the TCP port through the VIP.
fn udp_service(network: PodNetwork, name: &str, vip: Ipv4Addr) -> (Node, Agent, TcpServer) {
    require_root().unwrap();
    let node = Node::new(NodeOptions {
        pods: 2,
        network,
        external_client: false,
    })
    .unwrap();
    let agent = start_agent(&node);
    let tcp = TcpServer::start(node.pod(1).ns(), 8080, "pod1");
    let ports = [("http", 80, "TCP"), ("dns", 53, "UDP")];
    let slice_ports = [("http", 8080, "TCP"), ("dns", 5353, "UDP")];
    agent
        .write_manifest(
            "svc.yaml",
            &manifest::service(name, &vip.to_string(), &ports),
        )
        .unwrap();
    let slice = format!("{name}-1");
    agent
        .write_manifest(
            "slice.yaml",
            &manifest::slice(name, &slice, &slice_ports, &[(node.pod(1).ip(), true)]),
        )
        .unwrap();
    wait_for(SETTLE, || {
        tcp_request(node.pod(0).ns(), SocketAddrV4::new(vip, 80), TIMEOUT)
    })
    .unwrap();
    (node, agent, tcp)
}

fn udp_port_unreachable(network: PodNetwork) {
    let vip = Ipv4Addr::new(10, 96, 7, 1);
    // Nothing listens on UDP 5353.
    let (node, agent, _tcp) = udp_service(network, "echo", vip);

    let err = node.pod(0).ns().run_in(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(SocketAddrV4::new(vip, 53)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        // The first send provokes the ICMP error; the next call reports it.
        s.send(b"ping").unwrap();
        s.recv(&mut buf)
            .and_then(|_| s.send(b"ping").and_then(|_| s.recv(&mut buf)))
            .unwrap_err()
    });
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "the backend's port unreachable must reach the client as 'connection refused' ({err}); agent log:\n{}",
        agent.log()
    );
}

#[test]
fn udp_port_unreachable_from_backend_routed() {
    udp_port_unreachable(PodNetwork::Routed);
}

#[test]
fn udp_port_unreachable_from_backend_bridge() {
    udp_port_unreachable(PodNetwork::Bridge);
}

/// A client's port unreachable about a reply it got from the VIP reaches the backend.
fn client_port_unreachable_reaches_backend(network: PodNetwork) {
    let vip = Ipv4Addr::new(10, 96, 7, 3);
    let (node, agent, _tcp) = udp_service(network, "late", vip);
    let backend = node
        .pod(1)
        .ns()
        .run_in(|| UdpSocket::bind("0.0.0.0:5353").unwrap());
    backend.set_read_timeout(Some(TIMEOUT)).unwrap();

    // The client sends one datagram and closes its socket.
    let client = node
        .pod(0)
        .ns()
        .run_in(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    let client_port = client.local_addr().unwrap().port();
    client
        .send_to(b"query", SocketAddrV4::new(vip, 53))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, peer) = backend.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"query");
    assert_eq!(
        peer,
        SocketAddrV4::new(node.pod(0).ip(), client_port).into(),
        "the backend sees the client itself"
    );
    drop(client);
    // The backend answers late, on a socket connected to the client: the reply leaves as
    // VIP:53 -> client, the client's kernel answers port unreachable to the VIP, and the
    // backend's next call reports it only if the error was passed on to it.
    backend.connect(peer).unwrap();
    backend.send(b"late answer").unwrap();
    let err = backend
        .recv(&mut buf)
        .and_then(|_| backend.send(b"again").and_then(|_| backend.recv(&mut buf)))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "the client's port unreachable must reach the backend as 'connection refused' ({err}); agent log:\n{}",
        agent.log()
    );
}

#[test]
fn client_port_unreachable_reaches_backend_routed() {
    client_port_unreachable_reaches_backend(PodNetwork::Routed);
}

#[test]
fn client_port_unreachable_reaches_backend_bridge() {
    client_port_unreachable_reaches_backend(PodNetwork::Bridge);
}

/// A server that reads `n` bytes and answers with their count.
fn sink_server(node: &Node, pod: usize, port: u16) -> thread::JoinHandle<usize> {
    let listener = node
        .pod(pod)
        .ns()
        .run_in(move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut total = 0;
        let mut buf = [0u8; 65536];
        while total < 200_000 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        let _ = s.write_all(format!("{total}\n").as_bytes());
        total
    })
}

#[test]
fn path_mtu_discovery_through_a_vip() {
    require_root().unwrap();
    let node = Node::new(NodeOptions {
        pods: 2,
        network: PodNetwork::Routed,
        external_client: false,
    })
    .unwrap();
    let agent = start_agent(&node);
    let vip = Ipv4Addr::new(10, 96, 7, 2);
    let _probe = TcpServer::start(node.pod(1).ns(), 8080, "pod1");
    agent
        .write_manifest(
            "svc.yaml",
            &manifest::service(
                "bulk",
                &vip.to_string(),
                &[("probe", 80, "TCP"), ("bulk", 81, "TCP")],
            ),
        )
        .unwrap();
    agent
        .write_manifest(
            "slice.yaml",
            &manifest::slice(
                "bulk",
                "bulk-1",
                &[("probe", 8080, "TCP"), ("bulk", 9000, "TCP")],
                &[(node.pod(1).ip(), true)],
            ),
        )
        .unwrap();
    wait_for(SETTLE, || {
        tcp_request(node.pod(0).ns(), SocketAddrV4::new(vip, 80), TIMEOUT)
    })
    .unwrap();
    // The path to the backend narrows on the node: 1500 into the node, 1280 out to pod1.
    node.ns()
        .exec(&["ip", "link", "set", "lxc1", "mtu", "1280"])
        .unwrap();

    let server = sink_server(&node, 1, 9000);
    let sent = node.pod(0).ns().run_in(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&SocketAddrV4::new(vip, 81).into(), TIMEOUT)?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&vec![7u8; 200_000])?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    });
    let received = server.join().unwrap();
    assert_eq!(
        (sent.as_ref().map(|s| s.trim()).ok(), received),
        (Some("200000"), 200_000),
        "a transfer through the VIP must survive a smaller MTU (PMTU discovery needs the translated \
         'fragmentation needed'); client: {sent:?}; agent log:\n{}",
        agent.log()
    );
    let status = agent.cli(&["status"]).unwrap();
    assert!(status.contains("lxc1 (tc-egress)"), "{status}");
}
