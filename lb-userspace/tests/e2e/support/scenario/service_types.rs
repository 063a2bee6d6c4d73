//! The NodePort, externalIPs, LoadBalancer, reject, hairpin and SNAT scenarios
//! (`service_types.rs` with IPv4, `ipv6.rs` with IPv6).
//!
//! A standalone node has no Node object: NodePorts are served on, and masquerading uses, the
//! `ext0` address of the family (the fallback).
use crate::support::*;

use super::WHO;

/// "should be able to create a functioning NodePort service": the external client reaches
/// node-ip:nodePort; the replies come from there; the endpoints are balanced; the backends
/// see the masquerade address (eTP=Cluster, contract point 13), not the client. A
/// single-stack Service has no NodePort on the node's address of the other family.
pub fn nodeport_external(network: PodNetwork, family: Family) {
    let mut f = Fixture::new(WHO, network, 4, true);
    f.serve(&[1, 2, 3]);
    let (node_ip, cip) = (f.node_ip(family), vip_of(family, 10));
    let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[1, 2, 3]);
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
    let rows = f.wait_programmed(&[
        (tdst, "TCP", "NodePort"),
        (udst, "UDP", "NodePort"),
        (sa(cip, 80), "TCP", "ClusterIP"),
        (sa(cip, 53), "UDP", "ClusterIP"),
    ]);
    let np = row(&rows, tdst, "TCP").unwrap();
    assert!(
        flags(&np).iter().any(|f| f == "snat"),
        "NodePort without the snat flag: {np}"
    );
    assert_eq!(np["service"], "default/web:http", "{np}");
    let want: BTreeSet<String> = (1..=3)
        .map(|i| be(f.ip_of(i, family), TCP_BACKEND_PORT))
        .collect();
    assert_eq!(f.backends(tdst, "TCP"), Some(want));
    let other_np = sa(f.node_ip(other_family(family)), 30080);
    assert!(
        row(&rows, other_np, "TCP").is_none(),
        "NodePort {other_np} of a single-stack {} Service: {rows:?}",
        family.name()
    );

    let snat0 = f.counter("snat");
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, 30, Seen::Snat(node_ip));
        assert!(counts.len() >= 2, "{l4:?} {dst} not balanced: {counts:?}");
        assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
    }
    assert!(
        f.counter("snat") > snat0,
        "snat counter did not move: {}",
        f.status()
    );
    let st = f.status();
    assert_eq!(st[snat_key(family)], node_ip.to_string().as_str(), "{st}");
}

/// The same NodePort from a pod (pod0, not an endpoint): works, masqueraded as well (the
/// destination is external; kube-proxy's external chain masquerades with eTP=Cluster); the
/// ClusterIP of the same Service from the same pod keeps the pod's source address.
pub fn nodeport_pod(network: PodNetwork, family: Family) {
    let mut f = Fixture::new(WHO, network, 3, true);
    f.serve(&[1, 2]);
    let (node_ip, cip) = (f.node_ip(family), vip_of(family, 11));
    let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[1, 2]);
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
    f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
    for (dst, l4, n) in [(tdst, L4::Tcp, 30), (udst, L4::Udp, 20)] {
        f.wait_reply(f.ns(0), dst, l4);
        let counts = f.collect(f.ns(0), dst, l4, n, Seen::Snat(node_ip));
        assert_eq!(idents(&counts), names(&[1, 2]), "{l4:?} {dst}: {counts:?}");
    }
    let cdst = sa(cip, 80);
    let counts = f.collect(f.ns(0), cdst, L4::Tcp, 20, Seen::Client(f.ip_of(0, family)));
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
}

/// "should be possible to connect to a service via ExternalIP when the external IP is not
/// assigned to a node" (contract point 19): from the external client and from a pod,
/// masqueraded.
pub fn externalip_not_assigned_to_node(family: Family) {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    f.serve(&[1, 2]);
    let (node_ip, cip, eip) = (f.node_ip(family), vip_of(family, 12), eip_of(family, 10));
    let (svc, slice) = web_docs(&f, "web", "ClusterIP", cip, None, &[1, 2]);
    f.apply("web", &[svc.external_ip(eip).yaml(), slice]);
    let (tdst, udst) = (sa(eip, 80), sa(eip, 53));
    f.wait_programmed(&[
        (tdst, "TCP", "ExternalIP"),
        (udst, "UDP", "ExternalIP"),
        (sa(cip, 80), "TCP", "ClusterIP"),
    ]);
    let (flag, prefix) = match family {
        Family::V4 => ("-4", "192.168.78."),
        Family::V6 => ("-6", "fd00:78:"),
    };
    let addrs = f.node.ns().exec(&["ip", flag, "-o", "addr"]).unwrap();
    assert!(
        !addrs.contains(prefix),
        "the externalIP is on the node:\n{addrs}"
    );
    for (client, who) in [(f.ext(), "from outside"), (f.ns(0), "from a pod")] {
        for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
            f.wait_reply(client, dst, l4);
            let counts = f.collect(client, dst, l4, 30, Seen::Snat(node_ip));
            assert_eq!(idents(&counts), names(&[1, 2]), "{who} {l4:?}: {counts:?}");
        }
    }
}

/// LoadBalancer ingress IPs are programmed when ipMode is unset or VIP; with ipMode Proxy
/// (contract point 9) the ingress IP gets no rules, while the Service's ClusterIP and
/// NodePort still work.
pub fn loadbalancer_ingress_ip(family: Family) {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 4, true);
    f.serve(&[1, 2, 3]);
    let node_ip = f.node_ip(family);
    let (lb_ip, lb_vip_mode, lb_proxy) = (
        lb_ip_of(family, 10),
        lb_ip_of(family, 12),
        lb_ip_of(family, 11),
    );
    let (lb, lb_slice) = web_docs(
        &f,
        "lb",
        "LoadBalancer",
        vip_of(family, 13),
        Some((30080, 30053)),
        &[1, 2],
    );
    let lb = lb.ingress(lb_ip, None).ingress(lb_vip_mode, Some("VIP"));
    let proxy_vip = vip_of(family, 14);
    let (proxy, proxy_slice) = web_docs(
        &f,
        "lb-proxy",
        "LoadBalancer",
        proxy_vip,
        Some((30081, 30054)),
        &[3],
    );
    let proxy = proxy.ingress(lb_proxy, Some("Proxy"));
    f.apply("lb", &[lb.yaml(), lb_slice]);
    f.apply("lb-proxy", &[proxy.yaml(), proxy_slice]);
    let rows = f.wait_programmed(&[
        (sa(lb_ip, 80), "TCP", "LoadBalancer"),
        (sa(lb_ip, 53), "UDP", "LoadBalancer"),
        (sa(lb_vip_mode, 80), "TCP", "LoadBalancer"),
        (sa(node_ip, 30080), "TCP", "NodePort"),
        (sa(proxy_vip, 80), "TCP", "ClusterIP"),
        (sa(node_ip, 30081), "TCP", "NodePort"),
    ]);
    // "192.168.79.11:" or "[fd00:79::11]:"
    let proxy_prefix = be(lb_proxy, 0).trim_end_matches('0').to_string();
    let proxied: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["frontend"]
                .as_str()
                .is_some_and(|s| s.starts_with(&proxy_prefix))
        })
        .collect();
    assert!(
        proxied.is_empty(),
        "ipMode Proxy ingress IP programmed: {proxied:?}"
    );
    let lb_row = row(&rows, sa(lb_ip, 80), "TCP").unwrap();
    assert!(flags(&lb_row).iter().any(|f| f == "snat"), "{lb_row}");

    for (dst, l4, n) in [
        (sa(lb_ip, 80), L4::Tcp, 30),
        (sa(lb_vip_mode, 80), L4::Tcp, 30),
        (sa(lb_ip, 53), L4::Udp, 20),
    ] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, n, Seen::Snat(node_ip));
        assert_eq!(idents(&counts), names(&[1, 2]), "{dst}: {counts:?}");
    }
    // The Proxy-mode ingress IP: nothing answers for it.
    f.assert_unreachable(
        f.ext(),
        sa(lb_proxy, 80),
        L4::Tcp,
        3,
        "ipMode Proxy ingress IP",
    );
    // ... but its Service's ClusterIP and NodePort do.
    let pod_seen = Seen::Client(f.ip_of(0, family));
    let counts = f.collect(f.ns(0), sa(proxy_vip, 80), L4::Tcp, 5, pod_seen);
    assert_eq!(idents(&counts), names(&[3]), "{counts:?}");
    let np = sa(node_ip, 30081);
    let counts = f.collect(f.ext(), np, L4::Tcp, 5, Seen::Snat(node_ip));
    assert_eq!(idents(&counts), names(&[3]), "{counts:?}");
}

/// "should be rejected when no endpoints exist" (contract point 16): a Service with an empty
/// EndpointSlice REJECTs on every frontend: ClusterIP (from a pod), NodePort, externalIP and
/// LoadBalancer IP (from the external client), TCP (RST -> ConnectionRefused) and UDP
/// (ICMP(v6) port unreachable -> ConnectionRefused on a connected socket), fast, and counted.
pub fn rejected_when_no_endpoints(family: Family) {
    let f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
    let (node_ip, cip) = (f.node_ip(family), vip_of(family, 70));
    let (eip, lb_ip) = (eip_of(family, 20), lb_ip_of(family, 20));
    let (svc, slice) = web_docs(&f, "empty", "LoadBalancer", cip, Some((30080, 30053)), &[]);
    let svc = svc.external_ip(eip).ingress(lb_ip, None);
    f.apply("empty", &[svc.yaml(), slice]);
    let cases: [(&Netns, SocketAddr, SocketAddr, &str); 4] = [
        (f.ns(0), sa(cip, 80), sa(cip, 53), "ClusterIP"),
        (f.ext(), sa(node_ip, 30080), sa(node_ip, 30053), "NodePort"),
        (f.ext(), sa(eip, 80), sa(eip, 53), "ExternalIP"),
        (f.ext(), sa(lb_ip, 80), sa(lb_ip, 53), "LoadBalancer"),
    ];
    let want: Vec<(SocketAddr, &str, &str)> = cases
        .iter()
        .flat_map(|&(_, t, u, kind)| [(t, "TCP", kind), (u, "UDP", kind)])
        .collect();
    let rows = f.wait_programmed(&want);
    for &(fe, proto, _) in &want {
        let r = row(&rows, fe, proto).unwrap();
        assert_eq!(r["backends"], Value::Array(vec![]), "{r}");
        assert!(
            !flags(&r).iter().any(|f| f == "drop-empty"),
            "eTP/iTP Cluster must reject, not drop: {r}"
        );
    }
    // The first refusal on a pod interface may wait for the hook; settle on it.
    wait_refused(f.ns(0), sa(cip, 80), &f.agent);
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for &(client, tdst, udst, kind) in &cases {
        // The node's own stack would also refuse a NodePort it does not listen on; the
        // frontend's packet counter and the reject counter show that the datapath answered.
        let (p0, r0) = (f.packets(tdst, "TCP"), f.counter("reject_no_backend"));
        failures.extend(check_tcp_refused(client, tdst, kind).err());
        let (p1, r1) = (f.packets(tdst, "TCP"), f.counter("reject_no_backend"));
        if p1 <= p0 {
            failures.push(format!(
                "{kind}: TCP {tdst}: the datapath saw no packet ({p0} -> {p1})"
            ));
        }
        if r1 <= r0 {
            failures.push(format!(
                "{kind}: TCP {tdst}: reject_no_backend {r0} -> {r1}"
            ));
        }
        failures.extend(check_udp_refused(client, udst, kind).err());
        let (p2, r2) = (f.packets(udst, "UDP"), f.counter("reject_no_backend"));
        if p2 == 0 {
            failures.push(format!("{kind}: UDP {udst}: the datapath saw no packet"));
        }
        if r2 <= r1 {
            failures.push(format!(
                "{kind}: UDP {udst}: reject_no_backend {r1} -> {r2}"
            ));
        }
    }
    assert_no_failures("Service without endpoints", &failures, &f.agent);
}

/// A ClusterIP on a port it does not expose is rejected (contract point 24), from a pod and
/// from outside, TCP and UDP; nothing reaches the pod's port; the exposed port works.
pub fn clusterip_unexposed_port_rejected(family: Family) {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
    f.serve_tcp(1, TCP_BACKEND_PORT, "pod1");
    // Servers on the pod's port 81 too: nothing may be forwarded there.
    f.serve_tcp(1, 81, "pod1-81");
    f.serve_udp(1, 81, "pod1-81");
    let vip = vip_of(family, 80);
    let ep = [(f.ip_of(1, family), true)];
    f.apply("web", &clusterip_docs("web", vip, L4::Tcp, &ep));
    let (dst, unexposed) = (sa(vip, 80), sa(vip, 81));
    f.wait_programmed(&[(dst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    let mut failures = Vec::new();
    for (client, who) in [(f.ns(0), "pod"), (f.ext(), "external client")] {
        let r0 = f.counter("reject_no_port");
        failures.extend(check_tcp_refused(client, unexposed, who).err());
        let r1 = f.counter("reject_no_port");
        if r1 <= r0 {
            failures.push(format!(
                "{who}: TCP {unexposed}: reject_no_port {r0} -> {r1}"
            ));
        }
        failures.extend(check_udp_refused(client, unexposed, who).err());
        let r2 = f.counter("reject_no_port");
        if r2 <= r1 {
            failures.push(format!(
                "{who}: UDP {unexposed}: reject_no_port {r1} -> {r2}"
            ));
        }
    }
    assert_no_failures("unexposed ClusterIP port", &failures, &f.agent);
    assert_eq!(f.tcp["pod1-81"].accepted(), 0);
    assert_eq!(f.udp["pod1-81"].received(), 0);
    let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::Client(f.ip_of(0, family)));
    assert_eq!(idents(&counts), names(&[1]), "{counts:?}");
}

/// "should allow pods to hairpin back to themselves through services" (contract point 17):
/// the only endpoint connects to its own Service (ClusterIP TCP and UDP, NodePort) and is
/// answered by itself, SNATed so that the reply comes back through the node.
pub fn hairpin(network: PodNetwork, family: Family) {
    let mut f = Fixture::new(WHO, network, 2, true);
    f.serve(&[1]);
    let (node_ip, cip) = (f.node_ip(family), vip_of(family, 60));
    let (svc, slice) = web_docs(&f, "hairpin", "NodePort", cip, Some((30080, 30053)), &[1]);
    f.apply("hairpin", &[svc.yaml(), slice]);
    let (tdst, udst, ndst) = (sa(cip, 80), sa(cip, 53), sa(node_ip, 30080));
    f.wait_programmed(&[
        (tdst, "TCP", "ClusterIP"),
        (udst, "UDP", "ClusterIP"),
        (ndst, "TCP", "NodePort"),
    ]);
    // The same backend from another pod works, not SNATed (source pod IP preserved).
    f.wait_reply(f.ns(0), tdst, L4::Tcp);
    let counts = f.collect(f.ns(0), tdst, L4::Tcp, 5, Seen::Client(f.ip_of(0, family)));
    assert_eq!(idents(&counts), names(&[1]), "from pod0: {counts:?}");
    let before = f.counter("hairpin");
    let st = f.status();
    assert_eq!(st[snat_key(family)], node_ip.to_string().as_str(), "{st}");
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp), (ndst, L4::Tcp)] {
        let counts = f.collect(f.ns(1), dst, l4, 10, Seen::Snat(node_ip));
        assert_eq!(
            idents(&counts),
            names(&[1]),
            "hairpin {l4:?} {dst}: {counts:?}"
        );
    }
    let after = f.counter("hairpin");
    assert!(
        after > before,
        "hairpin counter did not move: {before} -> {after}"
    );
    // An open hairpin connection keeps working.
    let mut s = TcpSession::connect(f.ns(1), tdst, T).unwrap();
    let a = s.request().unwrap();
    let b = s.request().unwrap();
    assert_reply(&a, tdst, Seen::Snat(node_ip));
    assert_eq!(a, b, "hairpin connection changed between requests");
}

/// Two pods with the same source port to the same NodePort at the same time: SNAT maps them
/// to the same node address, so it must give them different source ports, and both
/// connections must work side by side (the conntrack e2e tests rely on this).
pub fn nodeport_snat_source_port_collision(family: Family) {
    let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
    f.serve(&[2]);
    let node_ip = f.node_ip(family);
    let cip = vip_of(family, 90);
    let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[2]);
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
    f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
    for pod in [0, 1] {
        f.wait_reply(f.ns(pod), tdst, L4::Tcp);
        f.wait_reply(f.ns(pod), udst, L4::Udp);
    }
    two_clients_same_port(
        &|| f.agent.log(),
        (f.ns(0), f.ns(1)),
        tdst,
        udst,
        "pod2",
        node_ip,
    );
}

/// The same with two real external clients (192.168.50.2 and .3, fd00:50::2 and ::3) of a
/// one-node [`Cluster`], reaching the node's NodePort on its uplink address.
pub fn nodeport_snat_source_port_collision_external_clients(family: Family) {
    require_root().unwrap_or_else(|e| panic!("{WHO} tests must run as root: {e:#}"));
    let mut cluster = Cluster::new(ClusterOptions {
        nodes: 1,
        pods_per_node: 2,
        network: PodNetwork::Routed,
        external_client: true,
    })
    .expect("building the cluster");
    cluster.add_client().expect("second client");
    let node = cluster.node(0);
    let node_ip = cluster.node_ip_of(0, family);
    let agent = start_agent(node);
    let _t = TcpServer::start(node.pod(1).ns(), TCP_BACKEND_PORT, "pod1");
    let _u = UdpServer::start(node.pod(1).ns(), UDP_BACKEND_PORT, "pod1");
    let svc = web_service("web", "NodePort", vip_of(family, 91), Some((30080, 30053)));
    let slice = web_slice("web", family).endpoint(node.pod(1).ip_of(family), true);
    agent
        .write_manifest("web.yaml", &[svc.yaml(), slice.yaml()].join("---\n"))
        .unwrap();
    let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
    let clients = cluster.clients();
    for c in clients {
        wait_answered(c, tdst, L4::Tcp, || {
            format!("from {}\n{}", c.name(), agent.log())
        });
        wait_answered(c, udst, L4::Udp, || {
            format!("from {}\n{}", c.name(), agent.log())
        });
    }
    two_clients_same_port(
        &|| agent.log(),
        (&clients[0], &clients[1]),
        tdst,
        udst,
        "pod1",
        node_ip,
    );
}
