//! The ClusterIP scenarios (`service.rs` with IPv4, `ipv6.rs` with IPv6).
use std::collections::BTreeSet;

use podlb::types::Family;
use testkit::testbed::PodNetwork;

use crate::support::*;

use super::WHO;

/// ClusterIP from a pod: balanced over the ready endpoints, replies come from VIP:port, the
/// server sees the pod's own address, a not-ready endpoint (whose server is up) never
/// answers.
pub fn clusterip(network: PodNetwork, l4: L4, family: Family) {
    let mut f = Fixture::new(WHO, network, 4, false);
    f.serve(&[1, 2, 3]);
    let vip = vip_of(family, 10);
    let eps = [
        (f.ip_of(1, family), true),
        (f.ip_of(2, family), true),
        (f.ip_of(3, family), false),
    ];
    f.apply("web", &clusterip_docs("web", vip, l4, &eps));
    let dst = sa(vip, l4.ports().1);
    let rows = f.wait_programmed(&[(dst, l4.proto(), "ClusterIP")]);
    let r = row(&rows, dst, l4.proto()).unwrap();
    assert_eq!(r["frontend"], dst.to_string().as_str(), "{r}");
    assert_eq!(r["family"], family.name(), "{r}");
    f.wait_reply(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2]);
    let counts = f.collect(f.ns(0), dst, l4, 30, Seen::Client(f.ip_of(0, family)));
    assert!(counts.len() >= 2, "not balanced: {counts:?}");
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    assert_eq!(f.hits(l4, 3), 0, "the not-ready endpoint pod3 got traffic");
}

/// Endpoints removed from and added to the EndpointSlice are applied live.
pub fn endpoint_changes(network: PodNetwork, family: Family) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(WHO, network, 4, false);
    f.serve(&[1, 2, 3]);
    let vip = vip_of(family, 11);
    let dst = sa(vip, 80);
    let all: Vec<(IpAddr, bool)> = (1..=3).map(|i| (f.ip_of(i, family), true)).collect();
    f.apply("web", &clusterip_docs("web", vip, l4, &all));
    f.wait_reply(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2, 3]);
    let seen = Seen::Client(f.ip_of(0, family));
    let counts = f.collect(f.ns(0), dst, l4, 60, seen);
    assert_eq!(idents(&counts), names(&[1, 2, 3]), "{counts:?}");

    // Remove pod3.
    f.apply("web", &clusterip_docs("web", vip, l4, &all[..2]));
    f.wait_backends(dst, l4, &[1, 2]);
    let before = f.hits(l4, 3);
    let counts = f.collect(f.ns(0), dst, l4, 30, seen);
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    assert!(counts.len() >= 2, "not balanced: {counts:?}");
    assert_eq!(f.hits(l4, 3), before, "removed endpoint pod3 got traffic");

    // Add it back.
    f.apply("web", &clusterip_docs("web", vip, l4, &all));
    f.wait_backends(dst, l4, &[1, 2, 3]);
    let counts = f.collect(f.ns(0), dst, l4, 60, seen);
    assert!(
        counts.contains_key("pod3"),
        "added endpoint never answered: {counts:?}"
    );
    assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
}

/// Pod-to-pod traffic that is not addressed to a VIP passes untouched (with the hooks
/// attached and a Service to the same backend in place), in both directions, and so does the
/// external client's traffic to a pod.
pub fn non_service_traffic(network: PodNetwork, family: Family) {
    let mut f = Fixture::new(WHO, network, 2, true);
    f.serve(&[1]);
    let ep = [(f.ip_of(1, family), true)];
    let (tvip, uvip) = (vip_of(family, 12), vip_of(family, 13));
    f.apply("web", &clusterip_docs("web", tvip, L4::Tcp, &ep));
    f.apply("dns", &clusterip_docs("dns", uvip, L4::Udp, &ep));
    f.wait_reply(f.ns(0), sa(tvip, 80), L4::Tcp);
    f.wait_reply(f.ns(0), sa(uvip, 53), L4::Udp);
    for l4 in [L4::Tcp, L4::Udp] {
        let direct = sa(f.ip_of(1, family), l4.ports().2);
        let counts = f.collect(f.ns(0), direct, l4, 5, Seen::Client(f.ip_of(0, family)));
        assert_eq!(idents(&counts), names(&[1]), "{l4:?}: {counts:?}");
    }
    // And the other direction, to a port that is no Service's backend.
    let _s0 = TcpServer::start(f.ns(0), 9000, "pod0");
    let pod0 = sa(f.ip_of(0, family), 9000);
    let r = testkit::testbed::tcp_request(f.ns(1), pod0, T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client),
        ("pod0", r.local),
        "{r:?}"
    );
    assert_eq!(r.seen_client.ip(), f.ip_of(1, family));
    // And the external client to a pod.
    let r = testkit::testbed::tcp_request(f.ext(), pod0, T).unwrap();
    assert_eq!(r.seen_client.ip(), f.ext_ip(family), "{r:?}");
}

/// An external client reaches the ClusterIP through ext0 (not masqueraded: ClusterIP).
pub fn external_client(network: PodNetwork, family: Family) {
    let mut f = Fixture::new(WHO, network, 3, true);
    f.serve(&[1, 2]);
    let vip = vip_of(family, 17);
    let eps = [(f.ip_of(1, family), true), (f.ip_of(2, family), true)];
    f.apply("web", &clusterip_docs("web", vip, L4::Tcp, &eps));
    let dst = sa(vip, 80);
    f.wait_reply(f.ext(), dst, L4::Tcp);
    let counts = f.collect(f.ext(), dst, L4::Tcp, 30, Seen::Client(f.ext_ip(family)));
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
}

/// The operator CLI: service list (JSON and table: frontends and backends as `SocketAddr`
/// prints them, the family, counters), status, and service list with the agent dead.
pub fn cli(network: PodNetwork, family: Family) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(WHO, network, 3, false);
    f.serve(&[1, 2]);
    let vip = vip_of(family, 18);
    let eps = [(f.ip_of(1, family), true), (f.ip_of(2, family), true)];
    f.apply("web", &clusterip_docs("web", vip, l4, &eps));
    let dst = sa(vip, 80);
    f.wait_reply(f.ns(0), dst, l4);
    let seen = Seen::Client(f.ip_of(0, family));
    f.collect(f.ns(0), dst, l4, 10, seen);
    let (fe, backends) = match family {
        Family::V4 => ("10.96.0.18:80", ["10.244.0.11:8080", "10.244.0.12:8080"]),
        Family::V6 => (
            "[fd00:96::18]:80",
            ["[fd00:10:244::11]:8080", "[fd00:10:244::12]:8080"],
        ),
    };

    let rows = f.services();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["frontend"], fe, "{row}");
    assert_eq!(row["family"], family.name(), "{row}");
    assert_eq!(row["kind"], "ClusterIP", "{row}");
    assert_eq!(row["protocol"], "TCP", "{row}");
    assert_eq!(row["service"], "default/web:http", "{row}");
    let want = set(&backends);
    assert_eq!(row_backends(row), want, "{row}");
    assert_eq!(f.backends(dst, "TCP"), Some(want.clone()), "{row}");
    let packets = row["packets"].as_u64().expect("packets is a number");
    assert!(packets > 0, "no packets counted: {row}");
    assert!(
        row["bytes"].as_u64().expect("bytes is a number") > 0,
        "{row}"
    );

    let table = f.agent.cli(&["service", "list"]).unwrap();
    assert!(table.contains("FRONTEND"), "{table}");
    let line = table.lines().find(|l| l.contains(fe)).expect(&table);
    assert!(
        line.contains("default/web:http") && line.contains("TCP"),
        "{line}"
    );

    let status = f.status();
    let ifs: BTreeSet<(&str, &str)> = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["hook"].as_str().unwrap()))
        .collect();
    let hooks: BTreeSet<(&str, &str)> = ["lxc0", "lxc1", "lxc2"]
        .into_iter()
        .flat_map(|n| [(n, "tc"), (n, "tc-egress")])
        .collect();
    assert_eq!(ifs, hooks, "{status}");
    assert_eq!(
        (status["frontends"].as_u64(), status["backends"].as_u64()),
        (Some(1), Some(2))
    );
    let text = f.agent.cli(&["status"]).unwrap();
    assert!(
        text.contains("lxc0") && text.contains("frontends"),
        "{text}"
    );

    f.agent.kill9();
    let rows = f.services();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["frontend"], fe);
    assert_eq!(f.backends(dst, "TCP"), Some(want), "agent down");
    assert!(rows[0]["packets"].as_u64().unwrap() >= packets);
    f.collect(f.ns(0), dst, l4, 5, seen);
    let after = f.services()[0]["packets"].as_u64().unwrap();
    assert!(
        after > packets,
        "counter did not grow with the agent down: {after} <= {packets}"
    );
}
