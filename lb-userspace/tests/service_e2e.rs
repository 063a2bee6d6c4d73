//! End-to-end Service tests with real traffic: a namespace node (`podlb::testbed`), a real
//! `podlb agent` with its own manifests directory and bpf root, real servers in pod namespaces
//! and real clients. Every scenario runs with routed /32 pods and with a Linux bridge.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test service_e2e`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use common::e2e::*;
use podlb::testbed::*;
use serde_json::Value;

/// Node + agent + servers. Field order is drop order: servers, then the agent, then the node.
struct Fixture {
    tcp: BTreeMap<usize, TcpServer>,
    udp: BTreeMap<usize, UdpServer>,
    agent: Agent,
    node: Node,
}

impl Fixture {
    fn new(network: PodNetwork, pods: usize, external_client: bool) -> Fixture {
        let (node, agent) = node_with_agent("service_e2e", network, pods, external_client);
        Fixture {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agent,
            node,
        }
    }

    fn ns(&self, pod: usize) -> &Netns {
        self.node.pod(pod).ns()
    }

    fn ip(&self, pod: usize) -> Ipv4Addr {
        self.node.pod(pod).ip()
    }

    /// Starts a server for `l4` in each pod, answering with the pod's name.
    fn serve(&mut self, l4: L4, pods: &[usize]) {
        for &i in pods {
            let (ns, name) = (self.node.pod(i).ns(), self.node.pod(i).name());
            match l4 {
                L4::Tcp => {
                    self.tcp
                        .insert(i, TcpServer::start(ns, TCP_BACKEND_PORT, name));
                }
                L4::Udp => {
                    self.udp
                        .insert(i, UdpServer::start(ns, UDP_BACKEND_PORT, name));
                }
            }
        }
    }

    /// Connections (TCP) or datagrams (UDP) the server of `pod` has seen.
    fn hits(&self, l4: L4, pod: usize) -> usize {
        match l4 {
            L4::Tcp => self.tcp[&pod].accepted(),
            L4::Udp => self.udp[&pod].received(),
        }
    }

    /// Writes Service `name` (one port of `l4` on `vip`) and its EndpointSlice with
    /// `(pod, ready)` endpoints. Returns the frontend address.
    fn apply(
        &self,
        name: &str,
        vip: Ipv4Addr,
        l4: L4,
        endpoints: &[(usize, bool)],
    ) -> SocketAddrV4 {
        let (pname, port, _) = l4.ports();
        let eps: Vec<(Ipv4Addr, bool)> = endpoints.iter().map(|&(i, r)| (self.ip(i), r)).collect();
        self.agent
            .write_manifest(
                &format!("{name}-svc.yaml"),
                &manifest::service(name, &vip.to_string(), &[(pname, port, l4.proto())]),
            )
            .unwrap();
        self.write_slice(name, l4, &eps);
        SocketAddrV4::new(vip, port)
    }

    fn write_slice(&self, name: &str, l4: L4, eps: &[(Ipv4Addr, bool)]) {
        let (pname, _, target) = l4.ports();
        self.agent
            .write_manifest(
                &format!("{name}-slice.yaml"),
                &manifest::slice(
                    name,
                    &format!("{name}-1"),
                    &[(pname, target, l4.proto())],
                    eps,
                ),
            )
            .unwrap();
    }

    /// Waits until a request from `client` to `dst` is answered from `dst` (the Service is
    /// programmed and the client's interface hooked).
    fn wait_ready(&self, client: &Netns, dst: SocketAddrV4, l4: L4) -> Reply {
        wait_answered(client, dst, l4, || self.agent.log())
    }

    /// `n` requests from `client` (address `client_ip`) to `dst`; asserts on each reply that it
    /// came from `dst` and that the server saw the client's own address (no SNAT). Returns how
    /// often each server ident answered.
    fn collect(
        &self,
        client: &Netns,
        client_ip: Ipv4Addr,
        dst: SocketAddrV4,
        l4: L4,
        n: usize,
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for k in 0..n {
            let r = l4
                .request(client, dst, T)
                .unwrap_or_else(|e| panic!("{l4:?} request {k} of {n} to {dst}: {e:#}"));
            assert_reply(&r, dst, Seen::Client(client_ip));
            *counts.entry(r.ident).or_insert(0) += 1;
        }
        counts
    }

    /// `podlb service list -o json`, parsed.
    fn services(&self) -> Vec<Value> {
        try_services(&self.agent).unwrap_or_else(|e| panic!("podlb service list -o json: {e:#}"))
    }

    /// The backends the datapath holds for `frontend` ("ip:port"), if it exists.
    fn backends(&self, frontend: SocketAddrV4) -> Option<BTreeSet<String>> {
        let fe = frontend.to_string();
        self.services()
            .iter()
            .find(|r| r["frontend"] == fe.as_str())
            .map(row_backends)
    }

    /// Waits until the datapath holds exactly the backends of `pods` for `frontend`.
    fn wait_backends(&self, frontend: SocketAddrV4, l4: L4, pods: &[usize]) {
        let want: BTreeSet<String> = pods
            .iter()
            .map(|&i| format!("{}:{}", self.ip(i), l4.ports().2))
            .collect();
        let ok = wait_until(SETTLE, Duration::from_millis(50), || {
            self.backends(frontend).as_ref() == Some(&want)
        });
        assert!(
            ok,
            "{frontend} never got backends {want:?}; have {:?}\n{}",
            self.backends(frontend),
            self.agent.log()
        );
    }

    /// The agent's log without colour codes.
    fn log(&self) -> String {
        strip_ansi(&self.agent.log())
    }
}

fn names(pods: &[usize]) -> BTreeSet<String> {
    pods.iter().map(|i| format!("pod{i}")).collect()
}

// 1 and 2. ClusterIP from a pod: balanced over the ready endpoints, replies come from the VIP,
// no SNAT, and a not-ready endpoint (whose server is up) never answers.
fn clusterip(network: PodNetwork, l4: L4) {
    let mut f = Fixture::new(network, 4, false);
    f.serve(l4, &[1, 2, 3]);
    let dst = f.apply("web", vip(10), l4, &[(1, true), (2, true), (3, false)]);
    f.wait_ready(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2]);
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 30);
    assert!(counts.len() >= 2, "not balanced: {counts:?}");
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    assert_eq!(f.hits(l4, 3), 0, "the not-ready endpoint pod3 got traffic");
}

#[test]
fn tcp_clusterip_routed() {
    clusterip(PodNetwork::Routed, L4::Tcp);
}

#[test]
fn tcp_clusterip_bridge() {
    clusterip(PodNetwork::Bridge, L4::Tcp);
}

#[test]
fn udp_clusterip_routed() {
    clusterip(PodNetwork::Routed, L4::Udp);
}

#[test]
fn udp_clusterip_bridge() {
    clusterip(PodNetwork::Bridge, L4::Udp);
}

// 3. Endpoints removed from and added to the EndpointSlice are applied live.
fn endpoint_changes(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 4, false);
    f.serve(l4, &[1, 2, 3]);
    let dst = f.apply("web", vip(11), l4, &[(1, true), (2, true), (3, true)]);
    f.wait_ready(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2, 3]);
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 60);
    assert_eq!(idents(&counts), names(&[1, 2, 3]), "{counts:?}");

    // Remove pod3.
    let eps = [(f.ip(1), true), (f.ip(2), true)];
    f.write_slice("web", l4, &eps);
    f.wait_backends(dst, l4, &[1, 2]);
    let before = f.hits(l4, 3);
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 30);
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    assert!(counts.len() >= 2, "not balanced: {counts:?}");
    assert_eq!(
        f.hits(l4, 3),
        before,
        "removed endpoint pod3 accepted connections"
    );

    // Add it back.
    let eps = [(f.ip(1), true), (f.ip(2), true), (f.ip(3), true)];
    f.write_slice("web", l4, &eps);
    f.wait_backends(dst, l4, &[1, 2, 3]);
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 60);
    assert!(
        counts.contains_key("pod3"),
        "added endpoint never answered: {counts:?}"
    );
    assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
}

#[test]
fn endpoint_changes_routed() {
    endpoint_changes(PodNetwork::Routed);
}

#[test]
fn endpoint_changes_bridge() {
    endpoint_changes(PodNetwork::Bridge);
}

// 4. Pod-to-pod traffic that is not addressed to a VIP passes untouched (with the hooks attached
// and a Service to the same backend in place).
fn non_service_traffic(network: PodNetwork) {
    let mut f = Fixture::new(network, 2, false);
    f.serve(L4::Tcp, &[1]);
    f.serve(L4::Udp, &[1]);
    let tdst = f.apply("web", vip(12), L4::Tcp, &[(1, true)]);
    let udst = f.apply("dns", vip(13), L4::Udp, &[(1, true)]);
    f.wait_ready(f.ns(0), tdst, L4::Tcp);
    f.wait_ready(f.ns(0), udst, L4::Udp);
    for l4 in [L4::Tcp, L4::Udp] {
        let direct = SocketAddrV4::new(f.ip(1), l4.ports().2);
        let counts = f.collect(f.ns(0), f.ip(0), direct, l4, 5);
        assert_eq!(idents(&counts), names(&[1]), "{l4:?}: {counts:?}");
    }
    // And the other direction, to a port that is no Service's backend.
    let _s0 = TcpServer::start(f.ns(0), 9000, "pod0");
    let r = tcp_request(f.ns(1), SocketAddrV4::new(f.ip(0), 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client),
        ("pod0", r.local),
        "{r:?}"
    );
    assert_eq!(r.seen_client.ip(), IpAddr::V4(f.ip(1)));
}

#[test]
fn non_service_traffic_routed() {
    non_service_traffic(PodNetwork::Routed);
}

#[test]
fn non_service_traffic_bridge() {
    non_service_traffic(PodNetwork::Bridge);
}

// 5. kill -9 the agent: open flows and new connections keep working; the restarted agent adopts
// the pinned state and writes nothing.
fn agent_restart(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 3, false);
    f.serve(l4, &[1, 2]);
    let dst = f.apply("web", vip(14), l4, &[(1, true), (2, true)]);
    f.wait_ready(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2]);

    let mut session = TcpSession::connect(f.ns(0), dst, T).unwrap();
    let first = session.request().unwrap();
    assert_eq!(first.peer, SocketAddr::V4(dst));
    let check = |session: &mut TcpSession, when: &str| {
        let r = session
            .request()
            .unwrap_or_else(|e| panic!("session broken {when}: {e:#}"));
        assert_eq!(r.ident, first.ident, "session moved backend {when}");
        assert_eq!(
            (r.peer, r.seen_client),
            (first.peer, first.seen_client),
            "{when}"
        );
    };

    f.agent.kill9();
    check(&mut session, "after kill -9");
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 30);
    assert_eq!(idents(&counts), names(&[1, 2]), "agent down: {counts:?}");

    let first_run = f.log();
    assert!(
        first_run
            .lines()
            .any(|l| l.contains("datapath ready") && l.contains("adopted=false")),
        "first run did not load a fresh datapath:\n{first_run}"
    );
    let old_len = f.agent.log().len();
    f.agent.restart().unwrap();
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        strip_ansi(&f.agent.log()[old_len..]).contains("synced")
    });
    let new_log = strip_ansi(&f.agent.log()[old_len..]);
    assert!(ok, "restarted agent never synced:\n{new_log}");
    check(&mut session, "after restart");

    let ready = new_log
        .lines()
        .find(|l| l.contains("datapath ready"))
        .unwrap_or_else(|| panic!("no 'datapath ready' after restart:\n{new_log}"));
    assert!(ready.contains("adopted=true"), "not adopted: {ready}");
    assert!(
        ready.contains("frontends=1") && ready.contains("backends=2"),
        "{ready}"
    );
    let synced = new_log.lines().find(|l| l.contains("synced")).unwrap();
    assert!(
        synced.split_whitespace().any(|w| w == "writes=0"),
        "restart rewrote the maps: {synced}"
    );
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 30);
    assert_eq!(idents(&counts), names(&[1, 2]), "after restart: {counts:?}");
    check(&mut session, "at the end");
    assert!(
        f.agent.process().unwrap().try_wait().is_none(),
        "agent exited"
    );
}

#[test]
fn agent_restart_routed() {
    agent_restart(PodNetwork::Routed);
}

#[test]
fn agent_restart_bridge() {
    agent_restart(PodNetwork::Bridge);
}

// 6. Malformed manifests are logged with their file name and change nothing.
fn malformed_manifests(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 4, false);
    f.serve(l4, &[1, 2, 3]);
    let dst = f.apply("web", vip(15), l4, &[(1, true), (2, true)]);
    f.wait_ready(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2]);
    let strip = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .map(|mut r| {
                let o = r.as_object_mut().unwrap();
                o.remove("packets");
                o.remove("bytes");
                r
            })
            .collect()
    };
    let before = strip(f.services());

    let a = &f.agent;
    a.write_manifest(
        "bad.yaml",
        "kind: Service\nmetadata: {name: [unclosed\n  : :\n",
    )
    .unwrap();
    // A new file: a valid endpoint (pod3) next to a bad address; the file must be rejected whole.
    let bad_slice = manifest::slice(
        "web",
        "web-extra",
        &[("http", TCP_BACKEND_PORT, "TCP")],
        &[(f.ip(3), true)],
    ) + "- addresses: [\"not-an-ip\"]\n";
    a.write_manifest("bad-slice.yaml", &bad_slice).unwrap();
    // The good slice file replaced by a bad version (pod1 only + a bad address): its last good
    // version stays in effect.
    let broken = manifest::slice(
        "web",
        "web-1",
        &[("http", TCP_BACKEND_PORT, "TCP")],
        &[(f.ip(1), true)],
    ) + "- addresses: [\"not-an-ip\"]\n";
    a.write_manifest("web-slice.yaml", &broken).unwrap();

    let rejected = |log: &str, file: &str| {
        log.lines()
            .any(|l| l.contains(&format!("/{file}:")) && l.contains("rejected"))
    };
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        let log = f.log();
        ["bad.yaml", "bad-slice.yaml", "web-slice.yaml"]
            .iter()
            .all(|file| rejected(&log, file))
    });
    let log = f.log();
    assert!(
        ok,
        "bad manifests not all logged with their file name:\n{log}"
    );
    let line = |file: &str| {
        log.lines()
            .find(|l| l.contains(&format!("/{file}:")))
            .unwrap()
            .to_string()
    };
    assert!(
        line("bad-slice.yaml").contains("not-an-ip"),
        "{}",
        line("bad-slice.yaml")
    );
    assert!(
        line("web-slice.yaml").contains("not-an-ip"),
        "{}",
        line("web-slice.yaml")
    );

    assert_eq!(strip(f.services()), before, "service list changed");
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 30);
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
    assert_eq!(f.hits(l4, 3), 0, "pod3 from a rejected file got traffic");
    assert!(
        f.agent.process().unwrap().try_wait().is_none(),
        "agent exited"
    );

    // The agent still applies good changes: the slice file fixed (pod2 only).
    f.write_slice("web", l4, &[(f.ip(2), true)]);
    f.wait_backends(dst, l4, &[2]);
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 10);
    assert_eq!(idents(&counts), names(&[2]), "{counts:?}");
}

#[test]
fn malformed_manifests_routed() {
    malformed_manifests(PodNetwork::Routed);
}

#[test]
fn malformed_manifests_bridge() {
    malformed_manifests(PodNetwork::Bridge);
}

// 7. A pod interface created after the agent started is hooked: the new pod reaches the VIP as a
// client (reverse NAT happens on its interface) and receives traffic as a backend.
fn new_pod_interface(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 3, false);
    f.serve(l4, &[1, 2]);
    let dst = f.apply("web", vip(16), l4, &[(1, true), (2, true)]);
    f.wait_ready(f.ns(0), dst, l4);

    let new = f.node.add_pod().expect("adding a pod");
    assert_eq!(new, 3);
    let hooked = wait_until(SETTLE, Duration::from_millis(50), || {
        f.agent
            .cli(&["status", "-o", "json"])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|v| {
                v["interfaces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["name"] == "lxc3" && i["hook"] == "tc")
            })
    });
    assert!(hooked, "agent never attached to lxc3\n{}", f.agent.log());
    // As a client (backends pod1 and pod2, so no hairpin).
    f.wait_ready(f.ns(3), dst, l4);
    let counts = f.collect(f.ns(3), f.ip(3), dst, l4, 30);
    assert_eq!(
        idents(&counts),
        names(&[1, 2]),
        "from the new pod: {counts:?}"
    );
    // As a backend.
    f.serve(l4, &[3]);
    f.apply("web", vip(16), l4, &[(1, true), (2, true), (3, true)]);
    f.wait_backends(dst, l4, &[1, 2, 3]);
    let counts = f.collect(f.ns(0), f.ip(0), dst, l4, 60);
    assert!(
        counts.contains_key("pod3"),
        "new pod never answered: {counts:?}"
    );
    assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
}

#[test]
fn new_pod_interface_routed() {
    new_pod_interface(PodNetwork::Routed);
}

#[test]
fn new_pod_interface_bridge() {
    new_pod_interface(PodNetwork::Bridge);
}

// 8. An external client reaches the ClusterIP through ext0.
fn external_client(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 3, true);
    f.serve(l4, &[1, 2]);
    let dst = f.apply("web", vip(17), l4, &[(1, true), (2, true)]);
    let ext = f.node.ext().expect("external client");
    f.wait_ready(ext, dst, l4);
    let counts = f.collect(ext, EXT_CLIENT_IP, dst, l4, 30);
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
}

#[test]
fn external_client_routed() {
    external_client(PodNetwork::Routed);
}

#[test]
fn external_client_bridge() {
    external_client(PodNetwork::Bridge);
}

// 9. The operator CLI: service list (JSON and table), status, and service list with the agent
// dead.
fn cli(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 3, false);
    f.serve(l4, &[1, 2]);
    let dst = f.apply("web", vip(18), l4, &[(1, true), (2, true)]);
    f.wait_ready(f.ns(0), dst, l4);
    f.collect(f.ns(0), f.ip(0), dst, l4, 10);

    let rows = f.services();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["frontend"], "10.96.0.18:80", "{row}");
    assert_eq!(row["protocol"], "TCP", "{row}");
    assert_eq!(row["service"], "default/web:http", "{row}");
    let want: BTreeSet<String> = ["10.244.0.11:8080", "10.244.0.12:8080"]
        .map(String::from)
        .into();
    assert_eq!(f.backends(dst), Some(want.clone()), "{row}");
    let packets = row["packets"].as_u64().expect("packets is a number");
    assert!(packets > 0, "no packets counted: {row}");
    assert!(
        row["bytes"].as_u64().expect("bytes is a number") > 0,
        "{row}"
    );

    let table = f.agent.cli(&["service", "list"]).unwrap();
    assert!(table.contains("FRONTEND"), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains("10.96.0.18:80"))
        .expect(&table);
    assert!(
        line.contains("default/web:http") && line.contains("TCP"),
        "{line}"
    );

    let status: Value =
        serde_json::from_str(&f.agent.cli(&["status", "-o", "json"]).unwrap()).unwrap();
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
    assert_eq!(rows[0]["frontend"], "10.96.0.18:80");
    assert_eq!(f.backends(dst), Some(want), "agent down");
    assert!(rows[0]["packets"].as_u64().unwrap() >= packets);
    f.collect(f.ns(0), f.ip(0), dst, l4, 5);
    let after = f.services()[0]["packets"].as_u64().unwrap();
    assert!(
        after > packets,
        "counter did not grow with the agent down: {after} <= {packets}"
    );
}

#[test]
fn cli_routed() {
    cli(PodNetwork::Routed);
}

#[test]
fn cli_bridge() {
    cli(PodNetwork::Bridge);
}

// 10. Maps carry BTF: bpftool prints field names.
fn bpftool_btf(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(network, 2, false);
    f.serve(l4, &[1]);
    let dst = f.apply("web", vip(19), l4, &[(1, true)]);
    f.wait_ready(f.ns(0), dst, l4);
    let pin = f.agent.bpf_root().join("lb_frontends");
    let out = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(&pin)
        .output()
        .expect("running bpftool");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bpftool failed: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in ["\"addr\"", "\"port\": 80", "\"svc_id\"", "\"count\": 1"] {
        assert!(
            text.contains(field),
            "no {field} in bpftool output:\n{text}"
        );
    }
}

#[test]
fn bpftool_btf_routed() {
    bpftool_btf(PodNetwork::Routed);
}

#[test]
fn bpftool_btf_bridge() {
    bpftool_btf(PodNetwork::Bridge);
}
