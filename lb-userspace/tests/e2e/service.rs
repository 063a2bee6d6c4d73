//! End-to-end Service tests with real traffic: a namespace node (`testkit::testbed`), a real
//! `podlb agent` with its own manifests directory and bpf root, real servers in pod namespaces
//! and real clients. Every scenario runs with routed /32 pods and with a Linux bridge.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test e2e -- service::`

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use podlb::types::Family;
use serde_json::Value;
use testkit::testbed::*;

const WHO: &str = "e2e::service";

/// Writes Service `name` (one port of `l4` on `vip`) to `{name}-svc.yaml` and its
/// EndpointSlice with `(pod, ready)` endpoints to `{name}-slice.yaml`. Returns the frontend
/// address.
fn apply(
    f: &Fixture,
    name: &str,
    vip: Ipv4Addr,
    l4: L4,
    endpoints: &[(usize, bool)],
) -> SocketAddr {
    let (pname, port, _) = l4.ports();
    let eps: Vec<(Ipv4Addr, bool)> = endpoints.iter().map(|&(i, r)| (f.ip(i), r)).collect();
    f.agent
        .write_manifest(
            &format!("{name}-svc.yaml"),
            &manifest::service(name, &vip.to_string(), &[(pname, port, l4.proto())]),
        )
        .unwrap();
    write_slice(f, name, l4, &eps);
    sa(vip, port)
}

/// Writes `{name}-slice.yaml`: the EndpointSlice of Service `name` with `eps`.
fn write_slice(f: &Fixture, name: &str, l4: L4, eps: &[(Ipv4Addr, bool)]) {
    let (pname, _, target) = l4.ports();
    f.agent
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

// 1 and 2. ClusterIP from a pod: balanced over the ready endpoints, replies come from the VIP,
// no SNAT, and a not-ready endpoint (whose server is up) never answers.
#[test]
fn tcp_clusterip_routed() {
    scenario::clusterip(PodNetwork::Routed, L4::Tcp, Family::V4);
}

#[test]
fn tcp_clusterip_bridge() {
    scenario::clusterip(PodNetwork::Bridge, L4::Tcp, Family::V4);
}

#[test]
fn udp_clusterip_routed() {
    scenario::clusterip(PodNetwork::Routed, L4::Udp, Family::V4);
}

#[test]
fn udp_clusterip_bridge() {
    scenario::clusterip(PodNetwork::Bridge, L4::Udp, Family::V4);
}

// 3. Endpoints removed from and added to the EndpointSlice are applied live.
#[test]
fn endpoint_changes_routed() {
    scenario::endpoint_changes(PodNetwork::Routed, Family::V4);
}

#[test]
fn endpoint_changes_bridge() {
    scenario::endpoint_changes(PodNetwork::Bridge, Family::V4);
}

// 4. Pod-to-pod traffic that is not addressed to a VIP passes untouched (with the hooks attached
// and a Service to the same backend in place).
#[test]
fn non_service_traffic_routed() {
    scenario::non_service_traffic(PodNetwork::Routed, Family::V4);
}

#[test]
fn non_service_traffic_bridge() {
    scenario::non_service_traffic(PodNetwork::Bridge, Family::V4);
}

// 5. kill -9 the agent: open flows and new connections keep working; the restarted agent adopts
// the pinned state and writes nothing.
fn agent_restart(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(WHO, network, 3, false);
    f.serve(&[1, 2]);
    let dst = apply(&f, "web", vip(14), l4, &[(1, true), (2, true)]);
    f.wait_reply(f.ns(0), dst, l4);
    f.wait_backends(dst, l4, &[1, 2]);

    let mut session = TcpSession::connect(f.ns(0), dst, T).unwrap();
    let first = session.request().unwrap();
    assert_eq!(first.peer, dst);
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
    let counts = f.collect(f.ns(0), dst, l4, 30, Seen::client(f.ip(0)));
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
    let counts = f.collect(f.ns(0), dst, l4, 30, Seen::client(f.ip(0)));
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
    let mut f = Fixture::new(WHO, network, 4, false);
    f.serve(&[1, 2, 3]);
    let dst = apply(&f, "web", vip(15), l4, &[(1, true), (2, true)]);
    f.wait_reply(f.ns(0), dst, l4);
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
    let counts = f.collect(f.ns(0), dst, l4, 30, Seen::client(f.ip(0)));
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
    assert_eq!(f.hits(l4, 3), 0, "pod3 from a rejected file got traffic");
    assert!(
        f.agent.process().unwrap().try_wait().is_none(),
        "agent exited"
    );

    // The agent still applies good changes: the slice file fixed (pod2 only).
    write_slice(&f, "web", l4, &[(f.ip(2), true)]);
    f.wait_backends(dst, l4, &[2]);
    let counts = f.collect(f.ns(0), dst, l4, 10, Seen::client(f.ip(0)));
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
    let mut f = Fixture::new(WHO, network, 3, false);
    f.serve(&[1, 2]);
    let dst = apply(&f, "web", vip(16), l4, &[(1, true), (2, true)]);
    f.wait_reply(f.ns(0), dst, l4);

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
    f.wait_reply(f.ns(3), dst, l4);
    let counts = f.collect(f.ns(3), dst, l4, 30, Seen::client(f.ip(3)));
    assert_eq!(
        idents(&counts),
        names(&[1, 2]),
        "from the new pod: {counts:?}"
    );
    // As a backend.
    f.serve(&[3]);
    apply(&f, "web", vip(16), l4, &[(1, true), (2, true), (3, true)]);
    f.wait_backends(dst, l4, &[1, 2, 3]);
    let counts = f.collect(f.ns(0), dst, l4, 60, Seen::client(f.ip(0)));
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
#[test]
fn external_client_routed() {
    scenario::external_client(PodNetwork::Routed, Family::V4);
}

#[test]
fn external_client_bridge() {
    scenario::external_client(PodNetwork::Bridge, Family::V4);
}

// 9. The operator CLI: service list (JSON and table), status, and service list with the agent
// dead.
#[test]
fn cli_routed() {
    scenario::cli(PodNetwork::Routed, Family::V4);
}

#[test]
fn cli_bridge() {
    scenario::cli(PodNetwork::Bridge, Family::V4);
}

// 10. Maps carry BTF: bpftool prints field names.
fn bpftool_btf(network: PodNetwork) {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(WHO, network, 2, false);
    f.serve(&[1]);
    let dst = apply(&f, "web", vip(19), l4, &[(1, true)]);
    f.wait_reply(f.ns(0), dst, l4);
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
