//! End-to-end tests of the Service types and port handling, with real traffic, named after the
//! upstream Kubernetes e2e tests (test/e2e/network/service.go) they mirror: NodePort, externalIPs,
//! LoadBalancer ingress (ipMode), multiport and named ports, same port with different protocols,
//! live port and type changes, deleted and recreated Services, the skip labels, hairpin, REJECT
//! without endpoints or on an unexposed ClusterIP port, and SNAT source-port collisions.
//!
//! Every test builds its own namespace node (`testkit::testbed`) with an external client
//! (192.168.77.2 behind the node's `ext0`, 192.168.77.1), runs a real `podlb agent` on it and
//! writes hand-written Service / EndpointSlice YAML into the agent's manifests directory. Without
//! a Node object, NodePorts are served on, and masquerading uses, the `ext0` address 192.168.77.1.
//! Addresses used: ClusterIPs 10.96.0.x, externalIPs 192.168.78.x, LoadBalancer ingress IPs
//! 192.168.79.x (never assigned to an interface).
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test e2e -- service_types::`

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::support::*;
use podlb::types::Family;
use testkit::testbed::manifest::{Service, Slice};
use testkit::testbed::*;

const WHO: &str = "e2e::service_types";
/// The address NodePorts are served on and SNAT uses: `ext0` of the node.
const NODE_IP: IpAddr = IpAddr::V4(EXT_NODE_IP);

/// An IPv4 EndpointSlice of Service `service` with `(name, port, protocol)` ports and ready
/// endpoints `ips`; `labels` are added to `kubernetes.io/service-name`.
fn slice_yaml(
    service: &str,
    slice: &str,
    ports: &[(&str, u16, &str)],
    ips: &[Ipv4Addr],
    labels: &[(&str, &str)],
) -> String {
    let mut s = Slice::new(service, slice, Family::V4);
    for &(name, port, proto) in ports {
        s = s.port(name, port, proto);
    }
    for &ip in ips {
        s = s.endpoint(ip, true);
    }
    for &(k, v) in labels {
        s = s.label(k, v);
    }
    s.yaml()
}

// The bodies of the tests that have an IPv6 twin in `ipv6.rs` are shared
// (`crate::support::scenario`).

// 1. "should be able to create a functioning NodePort service": an external client reaches
// node-ip:nodePort; the replies come from node-ip:nodePort; the endpoints are balanced; the
// backends see the masquerade address (eTP=Cluster, contract point 13), not the client.
#[test]
fn nodeport_reachable_from_external_client() {
    scenario::nodeport_external(PodNetwork::Routed, Family::V4);
}

#[test]
fn nodeport_reachable_from_external_client_bridge() {
    scenario::nodeport_external(PodNetwork::Bridge, Family::V4);
}

// 2. The same NodePort from a pod (pod0, not an endpoint): works, masqueraded as well (the
// destination is external; kube-proxy's external chain masquerades with eTP=Cluster).
#[test]
fn nodeport_reachable_from_pod() {
    scenario::nodeport_pod(PodNetwork::Routed, Family::V4);
}

#[test]
fn nodeport_reachable_from_pod_bridge() {
    scenario::nodeport_pod(PodNetwork::Bridge, Family::V4);
}

// 3. "should be possible to connect to a service via ExternalIP when the external IP is not
// assigned to a node" (contract point 19).
#[test]
fn externalip_not_assigned_to_node() {
    scenario::externalip_not_assigned_to_node(Family::V4);
}

// 4. LoadBalancer ingress IPs are programmed when ipMode is unset or VIP; with ipMode Proxy
// (contract point 9) the ingress IP gets no rules, while the Service's ClusterIP and NodePort
// still work.
#[test]
fn loadbalancer_ingress_ip() {
    scenario::loadbalancer_ingress_ip(Family::V4);
}

// 5. "should serve multiport endpoints from pods" with named targetPorts: each slice resolves
// the port names to its own numbers (pod1: http 8080, metrics 9090; pod2: http 8081, metrics
// 9091). Decoy servers listen on the other pod's numbers, so a wrong resolution shows up as a
// wrong ident instead of a refused connection.
#[test]
fn multiport_named_ports() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    for (pod, ports) in [(1, [8080, 9090, 8081, 9091]), (2, [8081, 9091, 8080, 9090])] {
        for port in ports {
            f.serve_tcp(pod, port, &format!("pod{pod}-{port}"));
        }
    }
    let svc = Service::new("multi", "ClusterIP")
        .cluster_ip(vip(15))
        .port_named("http", 80, "TCP", "http", None)
        .port_named("metrics", 81, "TCP", "metrics", None);
    let a = slice_yaml(
        "multi",
        "multi-a",
        &[("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
        &[f.ip(1)],
        &[],
    );
    let b = slice_yaml(
        "multi",
        "multi-b",
        &[("metrics", 9091, "TCP"), ("http", 8081, "TCP")],
        &[f.ip(2)],
        &[],
    );
    f.apply("multi", &[svc.yaml(), a, b]);
    let (http, metrics) = (sa(vip(15), 80), sa(vip(15), 81));
    f.wait_programmed(&[(http, "TCP", "ClusterIP"), (metrics, "TCP", "ClusterIP")]);
    let be = |pod: usize, port: u16| format!("{}:{port}", f.ip(pod));
    assert_eq!(
        f.backends(http, "TCP"),
        Some([be(1, 8080), be(2, 8081)].into())
    );
    assert_eq!(
        f.backends(metrics, "TCP"),
        Some([be(1, 9090), be(2, 9091)].into())
    );
    f.wait_reply(f.ns(0), http, L4::Tcp);
    let counts = f.collect(f.ns(0), http, L4::Tcp, 30, Seen::client(f.ip(0)));
    assert_eq!(
        idents(&counts),
        set(&["pod1-8080", "pod2-8081"]),
        "port 80: {counts:?}"
    );
    let counts = f.collect(f.ns(0), metrics, L4::Tcp, 30, Seen::client(f.ip(0)));
    assert_eq!(
        idents(&counts),
        set(&["pod1-9090", "pod2-9091"]),
        "port 81: {counts:?}"
    );
}

// 6. "should serve endpoints on same port and different protocols" (contract point 25), also on
// a NodePort with the same number for TCP and UDP ("should be able to update service type to
// NodePort listening on same port number but different protocols").
#[test]
fn same_port_different_protocols() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    for pod in [1, 2] {
        f.serve_tcp(pod, 5353, &format!("pod{pod}-tcp"));
        f.serve_udp(pod, 5353, &format!("pod{pod}-udp"));
    }
    let svc = Service::new("dns", "NodePort")
        .cluster_ip(vip(16))
        .node_port("dns-tcp", 53, "TCP", 5353, 30053)
        .node_port("dns-udp", 53, "UDP", 5353, 30053);
    let slice = slice_yaml(
        "dns",
        "dns-1",
        &[("dns-tcp", 5353, "TCP"), ("dns-udp", 5353, "UDP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    f.apply("dns", &[svc.yaml(), slice]);
    let (cdst, ndst) = (sa(vip(16), 53), sa(NODE_IP, 30053));
    let rows = f.wait_programmed(&[
        (cdst, "TCP", "ClusterIP"),
        (cdst, "UDP", "ClusterIP"),
        (ndst, "TCP", "NodePort"),
        (ndst, "UDP", "NodePort"),
    ]);
    let tcp_row = row(&rows, cdst, "TCP").unwrap();
    let udp_row = row(&rows, cdst, "UDP").unwrap();
    assert_eq!(tcp_row["service"], "default/dns:dns-tcp", "{tcp_row}");
    assert_eq!(udp_row["service"], "default/dns:dns-udp", "{udp_row}");
    assert_ne!(
        tcp_row["id"], udp_row["id"],
        "one service id for both protocols"
    );

    for (client, dst, seen) in [
        (f.ns(0), cdst, Seen::client(f.ip(0))),
        (f.ext(), ndst, Seen::Snat(NODE_IP)),
    ] {
        f.wait_reply(client, dst, L4::Tcp);
        f.wait_reply(client, dst, L4::Udp);
        let counts = f.collect(client, dst, L4::Tcp, 20, seen);
        assert_eq!(
            idents(&counts),
            set(&["pod1-tcp", "pod2-tcp"]),
            "TCP {dst}: {counts:?}"
        );
        let counts = f.collect(client, dst, L4::Udp, 20, seen);
        assert_eq!(
            idents(&counts),
            set(&["pod1-udp", "pod2-udp"]),
            "UDP {dst}: {counts:?}"
        );
    }
}

// 7. "should be updated after adding or deleting ports": a port added to a live Service starts
// working; once removed, connections to it are REFUSED (the ClusterIP is still programmed, so the
// unexposed port is rejected, contract point 24); the other port and an open connection on it
// keep working throughout.
#[test]
fn ports_added_and_removed_on_live_service() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
    f.serve_tcp(1, 8080, "pod1-8080");
    f.serve_tcp(1, 9090, "pod1-9090");
    let base = Service::new("web", "ClusterIP")
        .cluster_ip(vip(17))
        .port("http", 80, "TCP", 8080);
    let one_port = [("http", 8080, "TCP")];
    let two_ports = [("http", 8080, "TCP"), ("metrics", 9090, "TCP")];
    f.apply(
        "web",
        &[
            base.yaml(),
            slice_yaml("web", "web-1", &one_port, &[f.ip(1)], &[]),
        ],
    );
    let (http, metrics) = (sa(vip(17), 80), sa(vip(17), 81));
    f.wait_programmed(&[(http, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), http, L4::Tcp);
    let mut session = TcpSession::connect(f.ns(0), http, T).unwrap();
    let first = session.request().unwrap();
    assert_reply(&first, http, Seen::client(f.ip(0)));
    let check_http = |session: &mut TcpSession, when: &str| {
        let r = session
            .request()
            .unwrap_or_else(|e| panic!("open connection to port 80 broken {when}: {e:#}"));
        assert_eq!(r, first, "open connection changed {when}");
        let counts = f.collect(f.ns(0), http, L4::Tcp, 3, Seen::client(f.ip(0)));
        assert_eq!(idents(&counts), set(&["pod1-8080"]), "{when}: {counts:?}");
    };
    // The unexposed port 81 is refused before it is added.
    assert_tcp_refused(f.ns(0), metrics, "port 81 before it is added");

    // Add port 81.
    let added = base.clone().port("metrics", 81, "TCP", 9090);
    f.apply(
        "web",
        &[
            added.yaml(),
            slice_yaml("web", "web-1", &two_ports, &[f.ip(1)], &[]),
        ],
    );
    f.wait_programmed(&[(metrics, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), metrics, L4::Tcp);
    let counts = f.collect(f.ns(0), metrics, L4::Tcp, 5, Seen::client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1-9090"]), "port 81: {counts:?}");
    check_http(&mut session, "after adding port 81");

    // Remove it again.
    f.apply(
        "web",
        &[
            base.yaml(),
            slice_yaml("web", "web-1", &one_port, &[f.ip(1)], &[]),
        ],
    );
    f.wait_unprogrammed(&[(metrics, "TCP")]);
    let hits = f.tcp["pod1-9090"].accepted();
    let rejects = f.counter("reject_no_port");
    for _ in 0..3 {
        assert_tcp_refused(f.ns(0), metrics, "port 81 after it was removed");
    }
    assert_eq!(
        f.tcp["pod1-9090"].accepted(),
        hits,
        "removed port reached its backend"
    );
    assert!(
        f.counter("reject_no_port") >= rejects + 3,
        "reject_no_port did not count the rejected connections: {}",
        f.status()
    );
    check_http(&mut session, "after removing port 81");
}

// 8a. "should be able to up and down services": deleting one Service stops its VIP (no rules
// left; the packet goes to the node's routing and reaches no backend) while the others keep
// working; a Service created afterwards works.
#[test]
fn up_and_down_services() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 5, true);
    for i in 1..=4 {
        f.serve_tcp(i, 8080, &format!("pod{i}"));
    }
    let apply = |f: &Fixture, n: usize| {
        let name = format!("svc{n}");
        let svc = Service::new(&name, "ClusterIP")
            .cluster_ip(vip(20 + n as u8))
            .port("http", 80, "TCP", 8080);
        let slice = slice_yaml(
            &name,
            &format!("{name}-1"),
            &[("http", 8080, "TCP")],
            &[f.ip(n)],
            &[],
        );
        f.apply(&name, &[svc.yaml(), slice]);
        sa(vip(20 + n as u8), 80)
    };
    let dsts: Vec<SocketAddr> = (1..=3).map(|n| apply(&f, n)).collect();
    let check = |f: &Fixture, n: usize, dst: SocketAddr| {
        let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::client(f.ip(0)));
        assert_eq!(
            idents(&counts),
            set(&[&format!("pod{n}")]),
            "svc{n}: {counts:?}"
        );
    };
    for (n, &dst) in (1..).zip(&dsts) {
        f.wait_reply(f.ns(0), dst, L4::Tcp);
        check(&f, n, dst);
    }

    f.remove("svc2");
    f.wait_unprogrammed(&[(dsts[1], "TCP")]);
    f.assert_unreachable(f.ns(0), dsts[1], L4::Tcp, 3, "deleted svc2");
    check(&f, 1, dsts[0]);
    check(&f, 3, dsts[2]);

    let dst4 = apply(&f, 4);
    f.wait_reply(f.ns(0), dst4, L4::Tcp);
    check(&f, 4, dst4);
    check(&f, 1, dsts[0]);
    check(&f, 3, dsts[2]);
    f.assert_unreachable(f.ns(0), dsts[1], L4::Tcp, 2, "deleted svc2");
}

// 8b. "should work after the service has been recreated": delete a Service, its VIP stops;
// recreate it with the same ClusterIP, it works again; another Service is unaffected.
#[test]
fn recreated_service() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    let web = Service::new("web", "ClusterIP")
        .cluster_ip(vip(30))
        .port("http", 80, "TCP", 8080);
    let web_slice = slice_yaml("web", "web-1", &[("http", 8080, "TCP")], &[f.ip(1)], &[]);
    let other = Service::new("other", "ClusterIP")
        .cluster_ip(vip(31))
        .port("http", 80, "TCP", 8080);
    let other_slice = slice_yaml(
        "other",
        "other-1",
        &[("http", 8080, "TCP")],
        &[f.ip(2)],
        &[],
    );
    f.apply("web", &[web.yaml(), web_slice.clone()]);
    f.apply("other", &[other.yaml(), other_slice]);
    let (dst, odst) = (sa(vip(30), 80), sa(vip(31), 80));
    let check = |f: &Fixture, dst: SocketAddr, want: &str| {
        let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::client(f.ip(0)));
        assert_eq!(idents(&counts), set(&[want]), "{dst}: {counts:?}");
    };
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    f.wait_reply(f.ns(0), odst, L4::Tcp);
    check(&f, dst, "pod1");

    f.remove("web");
    f.wait_unprogrammed(&[(dst, "TCP")]);
    f.assert_unreachable(f.ns(0), dst, L4::Tcp, 3, "deleted Service");
    check(&f, odst, "pod2");

    f.apply("web", &[web.yaml(), web_slice]);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    check(&f, dst, "pod1");
    check(&f, odst, "pod2");
}

// 9. "should be able to change the type and ports of a TCP service" / "should be able to change
// the type from ExternalName to ClusterIP" and back: ClusterIP -> NodePort (the NodePort starts
// working) -> ClusterIP (the NodePort stops) -> ExternalName (no frontend at all) -> ClusterIP.
#[test]
fn type_changes() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    let cluster_ip = Service::new("web", "ClusterIP")
        .cluster_ip(vip(40))
        .port("http", 80, "TCP", 8080);
    let node_port = Service::new("web", "NodePort")
        .cluster_ip(vip(40))
        .node_port("http", 80, "TCP", 8080, 30080);
    // No clusterIP field.
    let external_name = Service::new("web", "ExternalName")
        .port("http", 80, "TCP", 8080)
        .external_name("web.example.com");
    let (cdst, ndst) = (sa(vip(40), 80), sa(NODE_IP, 30080));
    let both = |f: &Fixture, dst: SocketAddr, client: &Netns, seen: Seen, when: &str| {
        let counts = f.collect(client, dst, L4::Tcp, 20, seen);
        assert_eq!(
            idents(&counts),
            set(&["pod1", "pod2"]),
            "{when} {dst}: {counts:?}"
        );
    };

    f.apply("web", &[cluster_ip.yaml(), slice.clone()]);
    f.wait_programmed(&[(cdst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), cdst, L4::Tcp);
    f.assert_unreachable(f.ext(), ndst, L4::Tcp, 2, "NodePort of a ClusterIP Service");

    f.apply("web", &[node_port.yaml(), slice.clone()]);
    f.wait_programmed(&[(ndst, "TCP", "NodePort"), (cdst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ext(), ndst, L4::Tcp);
    both(&f, ndst, f.ext(), Seen::Snat(NODE_IP), "NodePort");
    both(&f, cdst, f.ns(0), Seen::client(f.ip(0)), "NodePort");

    f.apply("web", &[cluster_ip.yaml(), slice.clone()]);
    f.wait_unprogrammed(&[(ndst, "TCP")]);
    let rows = f.services();
    assert!(
        rows.iter().all(|r| r["kind"] != "NodePort"),
        "a NodePort frontend is left: {rows:?}"
    );
    f.assert_unreachable(
        f.ext(),
        ndst,
        L4::Tcp,
        3,
        "NodePort after the change back to ClusterIP",
    );
    both(&f, cdst, f.ns(0), Seen::client(f.ip(0)), "ClusterIP again");

    f.apply("web", &[external_name.yaml(), slice.clone()]);
    f.wait_unprogrammed(&[(cdst, "TCP")]);
    let rows = f.services();
    assert!(rows.is_empty(), "ExternalName Service programmed: {rows:?}");
    f.assert_unreachable(
        f.ns(0),
        cdst,
        L4::Tcp,
        3,
        "ClusterIP of an ExternalName Service",
    );

    f.apply("web", &[cluster_ip.yaml(), slice]);
    f.wait_programmed(&[(cdst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), cdst, L4::Tcp);
    both(
        &f,
        cdst,
        f.ns(0),
        Seen::client(f.ip(0)),
        "ExternalName -> ClusterIP",
    );
}

// 10. "should implement service.kubernetes.io/service-proxy-name" and ".../headless" (contract
// points 1 and 2): labelled Services and clusterIP None are not programmed; an EndpointSlice with
// such a label is ignored (its Service has no endpoints, so it is rejected); a normal Service is
// programmed.
#[test]
fn skip_labels() {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
    f.serve_tcp(1, 8080, "pod1");
    let ports = [("http", 8080, "TCP")];
    let ep = [f.ip(1)];
    let mk = |name: &str, last: u8| {
        Service::new(name, "ClusterIP")
            .cluster_ip(vip(last))
            .port("http", 80, "TCP", 8080)
    };
    let foreign = mk("foreign", 50).label("service.kubernetes.io/service-proxy-name", "foo");
    let headless = mk("headless", 51).label("service.kubernetes.io/headless", "");
    let none = Service::new("none", "ClusterIP")
        .cluster_ip_literal("None")
        .port("http", 80, "TCP", 8080);
    let normal = mk("normal", 53);
    let foreign_slice = mk("foreign-slice", 54);
    for (svc, slice_labels) in [
        (&foreign, &[][..]),
        (&headless, &[][..]),
        (&none, &[][..]),
        (&normal, &[][..]),
        (
            &foreign_slice,
            &[("service.kubernetes.io/service-proxy-name", "foo")][..],
        ),
    ] {
        let slice = slice_yaml(
            &svc.name,
            &format!("{}-1", svc.name),
            &ports,
            &ep,
            slice_labels,
        );
        f.apply(&svc.name, &[svc.yaml(), slice]);
    }
    let rows = f.wait_programmed(&[
        (sa(vip(53), 80), "TCP", "ClusterIP"),
        (sa(vip(54), 80), "TCP", "ClusterIP"),
    ]);
    let frontends: BTreeSet<String> = rows
        .iter()
        .map(|r| r["frontend"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        frontends,
        set(&["10.96.0.53:80", "10.96.0.54:80"]),
        "{rows:?}"
    );
    assert_eq!(
        f.backends(sa(vip(54), 80), "TCP"),
        Some(BTreeSet::new()),
        "endpoints from a slice labelled for another proxy"
    );
    let log = f.agent.log();
    assert!(
        !log.contains("default/none") && !log.contains("default/headless"),
        "skipped Services reported as malformed:\n{log}"
    );

    f.wait_reply(f.ns(0), sa(vip(53), 80), L4::Tcp);
    let counts = f.collect(f.ns(0), sa(vip(53), 80), L4::Tcp, 5, Seen::client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1"]), "{counts:?}");
    for (last, why) in [(50, "service-proxy-name"), (51, "headless label")] {
        f.assert_unreachable(f.ns(0), sa(vip(last), 80), L4::Tcp, 2, why);
    }
    assert_tcp_refused(
        f.ns(0),
        sa(vip(54), 80),
        "Service whose only slice is foreign",
    );
}

// 11. "should allow pods to hairpin back to themselves through services" (contract point 17).
#[test]
fn hairpin() {
    scenario::hairpin(PodNetwork::Routed, Family::V4);
}

#[test]
fn hairpin_bridge() {
    scenario::hairpin(PodNetwork::Bridge, Family::V4);
}

// 12. "should be rejected when no endpoints exist" (contract point 16), on every frontend kind.
#[test]
fn rejected_when_no_endpoints() {
    scenario::rejected_when_no_endpoints(Family::V4);
}

// 13. A ClusterIP on a port it does not expose is rejected (contract point 24).
#[test]
fn clusterip_unexposed_port_rejected() {
    scenario::clusterip_unexposed_port_rejected(Family::V4);
}

// 14. Two clients with the same source port to the same NodePort at the same time: SNAT maps
// them to the same node address, so it must give them different source ports, and both
// connections must work side by side (the conntrack e2e tests rely on this). Pods as clients,
// then two real external clients of a one-node `Cluster`.
#[test]
fn nodeport_snat_source_port_collision() {
    scenario::nodeport_snat_source_port_collision(Family::V4);
}

#[test]
fn nodeport_snat_source_port_collision_external_clients() {
    scenario::nodeport_snat_source_port_collision_external_clients(Family::V4);
}
