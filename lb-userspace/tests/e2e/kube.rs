//! End-to-end tests of the `kubernetes` source: a real `podlb agent --kubeconfig` on a
//! namespace node, talking list/watch HTTP to the in-process API server stand-in
//! (`testkit::apiserver`, listening on 127.0.0.1 of the node namespace), with real traffic
//! where there is a datapath effect. Also the health and metrics endpoints and drift repair.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test e2e -- kube::`

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};
use testkit::apiserver::{http_get, ApiServer, Kind};
use testkit::testbed::*;

const LABEL_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
const HEALTHZ: &str = "127.0.0.1:10256";
const METRICS: &str = "127.0.0.1:10249";

/// A kubeconfig file, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Node + API stand-in + agent + servers. Field order is drop order.
struct Fixture {
    _servers: BTreeMap<usize, TcpServer>,
    udp: Vec<UdpServer>,
    agent: Agent,
    api: ApiServer,
    _kubeconfig: TempFile,
    node: Node,
}

impl Fixture {
    /// A routed node with `pods` pods (pod0 is the client), a TCP server in every other pod,
    /// the stand-in in the node namespace, and an agent with `extra_args`.
    fn new(pods: usize, extra_args: &[&str]) -> Fixture {
        Self::with_api(pods, extra_args, |_| {})
    }

    /// Like [`Fixture::new`]; `before` runs on the stand-in before the agent starts.
    fn with_api(pods: usize, extra_args: &[&str], before: impl FnOnce(&mut ApiServer)) -> Fixture {
        require_root().unwrap_or_else(|e| panic!("e2e::kube tests must run as root: {e:#}"));
        let node = Node::new(NodeOptions {
            pods,
            network: PodNetwork::Routed,
            external_client: false,
        })
        .expect("building the node");
        let mut api = ApiServer::start(&node.ns().path()).expect("starting the API stand-in");
        let dir = std::env::temp_dir().join("podlb-test");
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = TempFile(dir.join(unique_name("kubeconfig")));
        api.write_kubeconfig(&kubeconfig.0).unwrap();
        before(&mut api);
        let agent = Agent::start_kube(
            Path::new(env!("CARGO_BIN_EXE_podlb")),
            &node,
            &kubeconfig.0,
            extra_args,
        )
        .expect("starting the agent");
        let mut tcp = BTreeMap::new();
        for i in 1..pods {
            let pod = node.pod(i);
            tcp.insert(i, TcpServer::start(pod.ns(), TCP_BACKEND_PORT, pod.name()));
        }
        Fixture {
            _servers: tcp,
            udp: Vec::new(),
            agent,
            api,
            _kubeconfig: kubeconfig,
            node,
        }
    }

    fn client(&self) -> &Netns {
        self.node.pod(0).ns()
    }

    fn ip(&self, pod: usize) -> Ipv4Addr {
        self.node.pod(pod).ip()
    }

    /// Service `name` with one TCP port "http" 80 on `vip` and `labels`.
    fn service(&self, name: &str, vip: Ipv4Addr, labels: Value) {
        self.api
            .apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "spec": {"type": "ClusterIP", "clusterIP": vip.to_string(),
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9999}]},
            }))
            .unwrap();
    }

    /// EndpointSlice `{service}-1` for `service`, port "http" 8080, ready endpoints `pods`.
    fn slice(&self, service: &str, pods: &[usize], labels: Value) {
        let ips: Vec<Ipv4Addr> = pods.iter().map(|&i| self.ip(i)).collect();
        self.api.apply(slice_json(service, &ips, labels)).unwrap();
    }

    /// The backends ("ip:port") the datapath holds for `frontend`, if it exists.
    fn backends(&self, frontend: SocketAddr) -> Option<BTreeSet<String>> {
        let fe = frontend.to_string();
        try_services(&self.agent)
            .ok()?
            .iter()
            .find(|r| r["frontend"] == fe.as_str())
            .map(row_backends)
    }

    fn want(&self, pods: &[usize]) -> BTreeSet<String> {
        pods.iter()
            .map(|&i| format!("{}:{TCP_BACKEND_PORT}", self.ip(i)))
            .collect()
    }

    /// Waits until `frontend` has exactly the backends of `pods` (None: is not programmed).
    fn wait_backends(&self, frontend: SocketAddr, pods: Option<&[usize]>) {
        let want = pods.map(|p| self.want(p));
        let ok = wait_until(SETTLE, Duration::from_millis(50), || {
            self.backends(frontend) == want
        });
        assert!(
            ok,
            "{frontend}: wanted backends {want:?}, the maps hold {:?}\n{}",
            self.backends(frontend),
            self.log()
        );
    }

    /// `n` requests to `dst`; the set of pods (by server ident) that answered.
    fn answered(&self, dst: SocketAddr, n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|k| {
                let r = tcp_request(self.client(), dst, T)
                    .unwrap_or_else(|e| panic!("request {k} to {dst}: {e:#}\n{}", self.log()));
                assert_eq!(r.peer, dst, "reply not from the VIP");
                r.ident
            })
            .collect()
    }

    fn log(&self) -> String {
        strip_ansi(&self.agent.log())
    }

    /// GET `path` on `addr` from inside the node namespace.
    fn get(&self, addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.node.ns().run_in(|| http_get(addr, path, T))
    }

    /// The agent's metrics text.
    fn metrics(&self) -> String {
        wait_for(SETTLE, || {
            let (code, body) = self.get(METRICS, "/metrics")?;
            anyhow::ensure!(code == 200, "status {code}: {body}");
            Ok(body)
        })
        .unwrap_or_else(|e| panic!("scraping /metrics: {e:#}\n{}", self.log()))
    }

    /// The value of the sample `name` (with its labels, e.g. `x{a="b"}`) in `/metrics`.
    fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics();
        metric_value(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }
}

fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn slice_json(service: &str, ips: &[Ipv4Addr], mut labels: Value) -> Value {
    if labels.is_null() {
        labels = json!({});
    }
    labels["kubernetes.io/service-name"] = service.into();
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default", "labels": labels},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": TCP_BACKEND_PORT, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn names(pods: &[usize]) -> BTreeSet<String> {
    pods.iter().map(|i| format!("pod{i}")).collect()
}

fn none() -> Value {
    Value::Null
}

// 1. Services and EndpointSlices created, updated and deleted through the API reach the maps
// and the traffic.
#[test]
fn create_update_delete() {
    let f = Fixture::new(4, &[]);
    let dst = sa(vip(20), 80);
    f.service("web", vip(20), none());
    f.slice("web", &[1, 2], none());
    f.wait_backends(dst, Some(&[1, 2]));
    wait_answered(f.client(), dst, L4::Tcp, || f.log());
    assert_eq!(f.answered(dst, 30), names(&[1, 2]));

    // Endpoints replaced.
    f.slice("web", &[2, 3], none());
    f.wait_backends(dst, Some(&[2, 3]));
    assert_eq!(f.answered(dst, 30), names(&[2, 3]));

    // The Service moves to another ClusterIP.
    let moved = sa(vip(21), 80);
    f.service("web", vip(21), none());
    f.wait_backends(moved, Some(&[2, 3]));
    f.wait_backends(dst, None);
    assert_eq!(f.answered(moved, 20), names(&[2, 3]));

    // The slice deleted: the Service rejects (connection refused at once).
    assert!(f.api.delete(Kind::EndpointSlice, "default", "web-1"));
    f.wait_backends(moved, Some(&[]));
    let e =
        tcp_request(f.client(), moved, SHORT).expect_err("a Service without endpoints answered");
    assert!(
        format!("{e:#}").contains("refused"),
        "expected connection refused: {e:#}"
    );

    // The Service deleted: its frontend is gone.
    assert!(f.api.delete(Kind::Service, "default", "web"));
    f.wait_backends(moved, None);
    assert!(try_services(&f.agent).unwrap().is_empty());
}

// 2. The service-proxy-name and headless labels are filtered by the API server (label
// selector), and an object that gains or loses the label comes or goes.
#[test]
fn label_filters() {
    let f = Fixture::new(3, &[]);
    let (a, b, c) = (sa(vip(30), 80), sa(vip(31), 80), sa(vip(32), 80));
    f.service("foreign", vip(30), json!({LABEL_PROXY_NAME: "other-proxy"}));
    f.slice("foreign", &[1], none());
    f.service("mine", vip(31), none());
    f.slice("mine", &[1], none());
    // A slice carrying the label is filtered too, even under a Service of ours.
    f.service("filtered-slice", vip(32), none());
    f.slice("filtered-slice", &[2], json!({LABEL_HEADLESS: ""}));
    f.wait_backends(b, Some(&[1]));
    f.wait_backends(c, Some(&[]));
    assert_eq!(
        f.backends(a),
        None,
        "a Service with {LABEL_PROXY_NAME} was programmed"
    );
    // Filtered by the API server, as kube-proxy asks for it (the model checks the labels too).
    for kind in [Kind::Service, Kind::EndpointSlice] {
        assert!(f.api.lists(kind) >= 1 && f.api.watches(kind) >= 1);
        assert_eq!(
            f.api.selectors(kind),
            [(
                format!("!{LABEL_PROXY_NAME},!{LABEL_HEADLESS}"),
                String::new()
            )],
            "{kind:?}"
        );
    }

    // The label removed: the Service is ours now; added again: gone.
    f.service("foreign", vip(30), none());
    f.wait_backends(a, Some(&[1]));
    f.service("foreign", vip(30), json!({LABEL_PROXY_NAME: "other-proxy"}));
    f.wait_backends(a, None);
    f.slice("filtered-slice", &[2], none());
    f.wait_backends(c, Some(&[2]));
    assert_eq!(f.answered(c, 5), names(&[2]));
}

// 3. The API server goes away: the datapath keeps serving what it has. It comes back with
// changes made meanwhile: the agent reconnects and converges.
#[test]
fn api_unreachable_then_restarted() {
    let mut f = Fixture::new(4, &["--resync-interval", "1"]);
    let (web, old) = (sa(vip(40), 80), sa(vip(41), 80));
    f.service("web", vip(40), none());
    f.slice("web", &[1, 2], none());
    f.service("old", vip(41), none());
    f.slice("old", &[3], none());
    f.wait_backends(web, Some(&[1, 2]));
    f.wait_backends(old, Some(&[3]));
    let watches = f.api.watches(Kind::Service);

    f.api.stop();
    // Watches fail and are retried; several resyncs pass; nothing is flushed.
    let failed = wait_until(SETTLE, Duration::from_millis(100), || {
        f.log().contains("watch failed")
    });
    assert!(
        failed,
        "the agent did not notice the API going away:\n{}",
        f.log()
    );
    assert!(f.metric("podlb_watch_errors_total") >= 1.0);
    thread::sleep(Duration::from_secs(3));
    assert_eq!(f.backends(web), Some(f.want(&[1, 2])));
    assert_eq!(f.backends(old), Some(f.want(&[3])));
    assert_eq!(f.answered(web, 20), names(&[1, 2]));
    assert_eq!(f.answered(old, 5), names(&[3]));
    let (code, body) = f.get(HEALTHZ, "/healthz").unwrap();
    assert_eq!(
        code, 200,
        "the datapath is in sync with the last known state: {body}"
    );

    // Changed while the agent could not see it.
    f.slice("web", &[3], none());
    assert!(f.api.delete(Kind::Service, "default", "old"));
    f.api.restart().unwrap();
    f.wait_backends(web, Some(&[3]));
    f.wait_backends(old, None);
    assert_eq!(f.answered(web, 10), names(&[3]));
    assert!(f.api.watches(Kind::Service) > watches, "no new watch");
    assert!(f.log().contains("watch recovered"), "{}", f.log());

    // Dropped connections (a network blip): the watches resume.
    let watches = f.api.watches(Kind::EndpointSlice);
    f.api.drop_connections();
    f.slice("web", &[1, 3], none());
    f.wait_backends(web, Some(&[1, 3]));
    assert!(f.api.watches(Kind::EndpointSlice) > watches, "no new watch");
}

// 4. 410 Gone: the agent's resourceVersion was compacted away while it was disconnected, and
// an open watch is expired: both lead to a re-list and a converged state, deletions included.
#[test]
fn gone_410_relists() {
    let mut f = Fixture::new(4, &[]);
    let (web, old) = (sa(vip(50), 80), sa(vip(51), 80));
    f.service("web", vip(50), none());
    f.slice("web", &[1], none());
    f.service("old", vip(51), none());
    f.slice("old", &[2], none());
    f.wait_backends(web, Some(&[1]));
    f.wait_backends(old, Some(&[2]));
    let lists = f.api.lists(Kind::Service);

    // Disconnected, changed, compacted: the resumed watch gets 410 and the agent re-lists.
    f.api.stop();
    f.slice("web", &[1, 2], none());
    assert!(f.api.delete(Kind::Service, "default", "old"));
    assert!(f.api.delete(Kind::EndpointSlice, "default", "old-1"));
    f.api.compact();
    f.api.restart().unwrap();
    f.wait_backends(web, Some(&[1, 2]));
    f.wait_backends(old, None);
    assert!(f.api.gone_sent() >= 1, "no 410 was sent");
    assert!(f.api.lists(Kind::Service) > lists, "no re-list");
    assert!(f.log().contains("re-listing"), "{}", f.log());
    assert_eq!(f.answered(web, 20), names(&[1, 2]));

    // 410 on open watches (the API server's watch cache moved on).
    let gone = f.api.gone_sent();
    f.api.expire_watches();
    f.slice("web", &[3], none());
    f.wait_backends(web, Some(&[3]));
    assert!(f.api.gone_sent() > gone);
    assert_eq!(f.answered(web, 10), names(&[3]));
    assert!(f.metric("podlb_relists_total") >= 2.0);
}

// 5. Continuous traffic while the backend set is replaced, grown and shrunk in a loop: no
// request fails, so no packet saw a half-written backend set (a slot naming a freed backend,
// a count beyond the written slots, a missing frontend). Every pod keeps its server. The
// requests are UDP: one datagram and its reply, so a request cannot fail merely because its
// backend was removed while it was in flight (a TCP connection whose backend is removed is
// moved to another backend by design, which resets it).
#[test]
fn backend_churn_under_traffic() {
    let mut f = Fixture::new(6, &[]);
    for i in 1..6 {
        let pod = f.node.pod(i);
        f.udp
            .push(UdpServer::start(pod.ns(), UDP_BACKEND_PORT, pod.name()));
    }
    let dst = sa(vip(60), 53);
    let udp_slice = |pods: &[usize]| {
        let mut s = slice_json(
            "dns",
            &pods.iter().map(|&i| f.ip(i)).collect::<Vec<_>>(),
            none(),
        );
        s["ports"] = json!([{"name": "dns", "port": UDP_BACKEND_PORT, "protocol": "UDP"}]);
        f.api.apply(s).unwrap();
    };
    f.api
        .apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "dns", "namespace": "default"},
            "spec": {"clusterIP": vip(60).to_string(),
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
        }))
        .unwrap();
    udp_slice(&[1, 2]);
    wait_answered(f.client(), dst, L4::Udp, || f.log());

    let stop = AtomicBool::new(false);
    let client = f.node.pod(0).ns();
    let (ok, failures, seen) = thread::scope(|s| {
        let traffic = s.spawn(|| {
            let (mut ok, mut failures, mut seen) = (0usize, Vec::new(), BTreeSet::new());
            while !stop.load(Ordering::SeqCst) {
                match udp_request(client, dst, T) {
                    Ok(r) if r.peer == dst => {
                        ok += 1;
                        seen.insert(r.ident);
                    }
                    Ok(r) => failures.push(format!("reply from {}", r.peer)),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            (ok, failures, seen)
        });
        let sets: [&[usize]; 8] = [
            &[2, 3],
            &[3, 4, 5],
            &[5],
            &[1, 2, 3, 4, 5],
            &[4, 1],
            &[1],
            &[2, 5, 3],
            &[1, 2],
        ];
        for round in 0..6 {
            for set in sets {
                udp_slice(set);
                thread::sleep(Duration::from_millis(if round % 2 == 0 { 150 } else { 20 }));
            }
        }
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        traffic.join().unwrap()
    });
    eprintln!(
        "churn: {ok} requests, {} failed, answered by {seen:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)],
        f.log()
    );
    assert!(ok >= 100, "too little traffic to mean anything: {ok}");
    assert_eq!(
        seen,
        names(&[1, 2, 3, 4, 5]),
        "the churn did not reach the traffic"
    );
    let writes = f.metric("podlb_map_writes_total");
    assert!(
        writes >= 48.0 * 3.0,
        "the churn did not reach the maps: {writes} writes"
    );
}

// 6. kill -9 and restart through the kubernetes source: the restarted agent adopts the pinned
// maps and writes nothing; an open connection is not disturbed.
#[test]
fn restart_writes_nothing() {
    let mut f = Fixture::new(3, &[]);
    let dst = sa(vip(70), 80);
    f.service("web", vip(70), none());
    f.slice("web", &[1, 2], none());
    f.wait_backends(dst, Some(&[1, 2]));
    wait_answered(f.client(), dst, L4::Tcp, || f.log());
    let mut session = TcpSession::connect(f.client(), dst, T).unwrap();
    let first = session.request().unwrap();

    f.agent.kill9();
    assert_eq!(session.request().unwrap().ident, first.ident);
    let old_len = f.agent.log().len();
    f.agent.restart().unwrap();
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        strip_ansi(&f.agent.log()[old_len..]).contains("synced")
    });
    let new_log = strip_ansi(&f.agent.log()[old_len..]);
    assert!(ok, "restarted agent never synced:\n{new_log}");
    let ready = new_log
        .lines()
        .find(|l| l.contains("datapath ready"))
        .unwrap();
    assert!(ready.contains("adopted=true"), "{ready}");
    let synced = new_log.lines().find(|l| l.contains("synced")).unwrap();
    assert!(
        synced.split_whitespace().any(|w| w == "writes=0"),
        "the restart rewrote the maps: {synced}"
    );
    assert!(
        synced.contains("frontends=1") && synced.contains("backends=2"),
        "{synced}"
    );
    let r = session.request().expect("the open connection broke");
    assert_eq!((r.ident, r.seen_client), (first.ident, first.seen_client));
    assert_eq!(f.answered(dst, 20), names(&[1, 2]));
    assert_eq!(f.metric("podlb_map_writes_total"), 0.0);
}

// 7. /healthz is 503 until the first sync (the API server is down at start), then 200 with
// lastUpdated; /livez is 200 throughout. /metrics has the sync and latency histograms, the
// programmed gauges and per-service counters.
#[test]
fn health_and_metrics() {
    let mut f = Fixture::with_api(3, &["--resync-interval", "1"], |api| api.stop());
    let (code, body) = wait_for(SETTLE, || f.get(HEALTHZ, "/healthz")).unwrap();
    assert_eq!(code, 503, "healthy before any sync: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["lastUpdated"], "", "{body}");
    assert!(v["currentTime"].as_str().unwrap().ends_with('Z'), "{body}");
    let (code, _) = f.get(HEALTHZ, "/livez").unwrap();
    assert_eq!(code, 200);
    assert_eq!(f.metric("podlb_syncs_total"), 0.0, "synced without the API");

    let dst = sa(vip(80), 80);
    f.service("web", vip(80), none());
    f.slice("web", &[1, 2], none());
    f.api.restart().unwrap();
    f.wait_backends(dst, Some(&[1, 2]));
    let (code, body) = wait_for(SETTLE, || {
        let r = f.get(HEALTHZ, "/healthz")?;
        anyhow::ensure!(r.0 == 200, "{r:?}");
        Ok(r)
    })
    .unwrap();
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["lastUpdated"].as_str().unwrap().starts_with("20"),
        "{body}"
    );

    wait_answered(f.client(), dst, L4::Tcp, || f.log());
    assert_eq!(f.answered(dst, 10), names(&[1, 2]));
    let text = f.metrics();
    let sample = |s: &str| metric_value(&text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));
    assert!(sample("podlb_sync_duration_seconds_count") >= 1.0);
    assert!(sample("podlb_event_to_map_latency_seconds_count") >= 1.0);
    assert!(sample("podlb_event_to_map_latency_seconds_bucket{le=\"+Inf\"}") >= 1.0);
    assert_eq!(sample("podlb_services_programmed"), 1.0);
    assert_eq!(sample("podlb_frontends_programmed"), 1.0);
    assert_eq!(sample("podlb_backends_programmed"), 2.0);
    assert_eq!(sample("podlb_map_write_errors_total"), 0.0);
    assert_eq!(sample("podlb_map_full_errors_total"), 0.0);
    let labels = format!(
        "{{service=\"default/web:http\",frontend=\"{dst}\",protocol=\"TCP\",kind=\"ClusterIP\"}}"
    );
    // 11+ connections, several packets each.
    assert!(
        sample(&format!("podlb_service_packets_total{labels}")) >= 33.0,
        "{text}"
    );
    assert!(
        sample(&format!("podlb_service_bytes_total{labels}")) >= 33.0 * 40.0,
        "{text}"
    );
    let (code, _) = f.get(METRICS, "/nope").unwrap();
    assert_eq!(code, 404);
}

// 8. Drift repair: a frontend deleted and a backend altered behind the agent's back (through
// the pinned maps) are repaired at the next resync and counted.
#[test]
fn drift_repair() {
    let f = Fixture::new(3, &["--resync-interval", "1"]);
    let dst = sa(vip(90), 80);
    f.service("web", vip(90), none());
    f.slice("web", &[1, 2], none());
    f.wait_backends(dst, Some(&[1, 2]));
    wait_answered(f.client(), dst, L4::Tcp, || f.log());
    assert_eq!(f.metric("podlb_drift_repairs_total"), 0.0);

    {
        let mut maps = podlb::datapath::Maps::open(f.agent.bpf_root()).unwrap();
        let key = maps.frontends.keys().next().unwrap().unwrap();
        maps.frontends.remove(&key).unwrap();
    }
    f.wait_backends(dst, Some(&[1, 2]));
    let repairs = f.metric("podlb_drift_repairs_total");
    assert!(repairs >= 1.0, "repair not counted");
    assert_eq!(f.answered(dst, 20), names(&[1, 2]));

    {
        let maps = podlb::datapath::Maps::open(f.agent.bpf_root()).unwrap();
        let mut backends = maps.backends;
        let (id, mut b) = (0..)
            .zip(backends.iter())
            .map(|(i, b)| (i, b.unwrap()))
            .find(|(_, b)| b.port == TCP_BACKEND_PORT)
            .unwrap();
        b.port = 1;
        backends.set(id, b, 0).unwrap();
    }
    let ok = wait_until(SETTLE, Duration::from_millis(100), || {
        f.metric("podlb_drift_repairs_total") > repairs
    });
    assert!(ok, "the altered backend was not repaired:\n{}", f.log());
    f.wait_backends(dst, Some(&[1, 2]));
    assert_eq!(f.answered(dst, 20), names(&[1, 2]));
    assert!(f.log().contains("repaired map entries"), "{}", f.log());
}

// 9. A burst of 10,000 watch events on one EndpointSlice converges to the last version with
// far fewer map writes than events (reconciles take the latest snapshot).
#[test]
fn event_burst_is_coalesced() {
    let f = Fixture::new(3, &[]);
    let dst = sa(vip(100), 80);
    f.service("web", vip(100), none());
    f.slice("web", &[1, 2], none());
    f.wait_backends(dst, Some(&[1, 2]));
    let writes = f.metric("podlb_map_writes_total");
    let syncs = f.metric("podlb_syncs_total");
    let events = 10_000;
    let t = Instant::now();
    for i in 0..events {
        // Every version differs from the one before: one endpoint moves each time.
        let extra = Ipv4Addr::new(10, 244, 9, (i % 200) as u8 + 1);
        let ips = [f.ip(1), extra];
        f.api.apply(slice_json("web", &ips, none())).unwrap();
    }
    f.slice("web", &[1, 2], none());
    f.wait_backends(dst, Some(&[1, 2]));
    let elapsed = t.elapsed();
    let writes = f.metric("podlb_map_writes_total") - writes;
    let syncs = f.metric("podlb_syncs_total") - syncs;
    eprintln!("burst: {events} events converged in {elapsed:?} with {syncs} syncs and {writes} map writes");
    // One reconcile per event would write at least 3 entries per event (backend, slot, old
    // backend's removal).
    assert!(
        writes < events as f64,
        "{writes} map writes for {events} events"
    );
    assert!(
        syncs < events as f64 / 2.0,
        "{syncs} syncs for {events} events"
    );
    assert_eq!(f.answered(dst, 10), names(&[1, 2]));
}

// 11. NodePorts are served on the addresses of this node's Node object (watched by
// metadata.name), never on another node's; an address change moves the NodePort.
#[test]
fn node_addresses_from_the_node_object() {
    let f = Fixture::new(2, &[]);
    let node = |name: &str, ip: &str| {
        json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        })
    };
    f.api.apply(node(&f.node.name(), "10.9.9.9")).unwrap();
    f.api.apply(node("some-other-node", "10.8.8.8")).unwrap();
    f.api
        .apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": vip(110).to_string(),
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
        }))
        .unwrap();
    f.slice("np", &[1], none());
    let (mine, other) = (
        sa(Ipv4Addr::new(10, 9, 9, 9), 30080),
        sa(Ipv4Addr::new(10, 8, 8, 8), 30080),
    );
    f.wait_backends(mine, Some(&[1]));
    f.wait_backends(sa(vip(110), 80), Some(&[1]));
    assert_eq!(f.backends(other), None, "the other node's address was used");
    assert!(f.api.lists(Kind::Node) >= 1 && f.api.watches(Kind::Node) >= 1);
    assert_eq!(
        f.api.selectors(Kind::Node),
        [(String::new(), format!("metadata.name={}", f.node.name()))]
    );

    f.api.apply(node(&f.node.name(), "10.9.9.10")).unwrap();
    f.wait_backends(sa(Ipv4Addr::new(10, 9, 9, 10), 30080), Some(&[1]));
    f.wait_backends(mine, None);
}

// 10. Many Services through the API (default 1,000 × 10 endpoints; PODLB_SCALE=N for more),
// listed (in pages of 500) by an agent that starts on an empty datapath: all are programmed. Then single
// endpoint changes, one at a time, at least 50 and for as long as it takes for two periodic
// resyncs to complete meanwhile (default interval, or PODLB_RESYNC_INTERVAL seconds), so that
// changes meet resyncs; writes during a resync's read must not be taken for drift. Prints the
// times, the event-to-map latencies and the agent's RSS (measured, not asserted); with
// PODLB_AGENT_LOG=info,podlb::agent=debug also the resyncs' read and compare times.
#[test]
fn many_services() {
    let n: usize = std::env::var("PODLB_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let vip_of = |i: usize| {
        Ipv4Addr::new(
            10,
            100 + (i / 62500) as u8,
            (i / 250 % 250) as u8,
            (i % 250) as u8 + 1,
        )
    };
    // Endpoint j of Service i is pod (10 i + j) mod 50,000 of a pool: at most 50,000 distinct
    // backends (the backend map holds 65,536), so pods back two Services each from 5,000 on.
    const POOL: usize = 50_000;
    let pod = |p: usize| Ipv4Addr::new(10, 128, (p / 250) as u8, (p % 250) as u8 + 1);
    let endpoints = |i: usize, first: Ipv4Addr| -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = (0..10).map(|j| pod((i * 10 + j) % POOL)).collect();
        ips[0] = first;
        ips
    };
    let first = |i: usize| pod(i * 10 % POOL);
    let started = std::cell::Cell::new(Instant::now());
    let interval = std::env::var("PODLB_RESYNC_INTERVAL").ok();
    let args: Vec<&str> = match &interval {
        Some(s) => vec!["--resync-interval", s],
        None => vec![],
    };
    let mut f = Fixture::with_api(2, &args, |api| {
        for i in 0..n {
            let name = format!("svc-{i}");
            api.apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": vip_of(i).to_string(),
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            }))
            .unwrap();
            api.apply(slice_json(&name, &endpoints(i, first(i)), none()))
                .unwrap();
        }
        started.set(Instant::now());
    });
    let ok = wait_until(Duration::from_secs(300), Duration::from_millis(20), || {
        f.log().contains("synced")
    });
    let programmed = started.get().elapsed();
    assert!(ok, "the agent never synced:\n{}", f.log());
    let text = f.metrics();
    assert_eq!(
        metric_value(&text, "podlb_frontends_programmed"),
        Some(n as f64)
    );
    assert_eq!(
        metric_value(&text, "podlb_backends_programmed"),
        Some((10 * n).min(POOL) as f64)
    );
    // kube-rs lists in pages of 500 (client-go's default limit), following `continue`.
    for kind in [Kind::Service, Kind::EndpointSlice] {
        let (lists, pages) = (f.api.lists(kind), f.api.list_pages(kind));
        assert!(
            lists >= 1 && pages >= lists * n.div_ceil(500),
            "{kind:?}: {lists} lists in {pages} pages, wanted pages of 500 for {n} objects"
        );
        assert_eq!(
            f.api.max_page_items(kind),
            n.min(500),
            "{kind:?}: the largest list page"
        );
    }
    let log = f.log();
    let first_sync = log
        .lines()
        .find(|l| l.contains("synced"))
        .unwrap()
        .to_string();

    // Single endpoint changes, each applied before the next.
    let min_changes = 50;
    let (count0, sum0, syncs0) = (
        metric_value(&text, "podlb_event_to_map_latency_seconds_count").unwrap(),
        metric_value(&text, "podlb_event_to_map_latency_seconds_sum").unwrap(),
        metric_value(&text, "podlb_syncs_total").unwrap(),
    );
    let synced_lines = |f: &Fixture| f.log().lines().filter(|l| l.contains("synced")).count();
    let lines0 = synced_lines(&f);
    let mut sync_us = Vec::new();
    let mut latency_ms = Vec::new();
    // Completed resyncs count as syncs without a "synced" line (when they repair nothing).
    let mut resyncs = 0.0;
    let changing = Instant::now();
    let mut changes = 0;
    while changes < min_changes || resyncs < 2.0 {
        assert!(changes < 5_000, "no resyncs in {changes} changes");
        let k = changes;
        changes += 1;
        let i = (k * 7919) % n;
        let before = synced_lines(&f);
        let m = f.metrics();
        let sum_before = metric_value(&m, "podlb_event_to_map_latency_seconds_sum").unwrap();
        let moved = Ipv4Addr::new(10, 199, (k / 250) as u8, (k % 250) as u8 + 1);
        f.api
            .apply(slice_json(
                &format!("svc-{i}"),
                &endpoints(i, moved),
                none(),
            ))
            .unwrap();
        let ok = wait_until(SETTLE, Duration::from_millis(2), || {
            synced_lines(&f) > before
        });
        assert!(ok, "change {k} never synced");
        let log = f.log();
        let line = log
            .lines()
            .filter(|l| l.contains("synced"))
            .nth(before)
            .unwrap();
        assert!(line.contains("writes="), "{line}");
        let us: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("duration_us=")?.parse().ok())
            .unwrap();
        sync_us.push(us);
        // Each change is one watch event: its latency is what the histogram's sum grew by.
        let m = f.metrics();
        let sum = metric_value(&m, "podlb_event_to_map_latency_seconds_sum").unwrap();
        latency_ms.push((sum - sum_before) * 1000.0);
        let lines = (synced_lines(&f) - lines0) as f64;
        resyncs = metric_value(&m, "podlb_syncs_total").unwrap() - syncs0 - lines;
    }
    let changing = changing.elapsed();
    let log = f.log();
    eprintln!(
        "scale: last change: {}",
        log.lines().rfind(|l| l.contains("synced")).unwrap()
    );
    // The resyncs' times, when the agent logs them (debug).
    let field = |l: &str, name: &str| -> Option<u64> {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
    };
    let (mut read_us, mut compare_us): (Vec<u64>, Vec<u64>) = log
        .lines()
        .filter_map(|l| Some((field(l, "read_us=")?, field(l, "compare_us=")?)))
        .unzip();
    if !read_us.is_empty() {
        read_us.sort();
        compare_us.sort();
        eprintln!(
            "scale: {} resyncs: read (off the loop) median {} us, max {} us; \
             compare on the loop median {} us, max {} us",
            read_us.len(),
            read_us[read_us.len() / 2],
            read_us[read_us.len() - 1],
            compare_us[compare_us.len() / 2],
            compare_us[compare_us.len() - 1],
        );
    }
    let text = f.metrics();
    assert_eq!(
        metric_value(&text, "podlb_drift_repairs_total"),
        Some(0.0),
        "the agent's own writes were taken for drift:\n{log}"
    );
    let count = metric_value(&text, "podlb_event_to_map_latency_seconds_count").unwrap() - count0;
    let sum = metric_value(&text, "podlb_event_to_map_latency_seconds_sum").unwrap() - sum0;
    sync_us.sort();
    latency_ms.sort_by(f64::total_cmp);
    let pct = |p: usize| latency_ms[(latency_ms.len() * p / 100).min(latency_ms.len() - 1)];
    let pid = f.agent.process().unwrap().pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "scale: {n} services x 10 endpoints: agent start to all programmed {programmed:?}; first sync: {first_sync}\n\
         scale: {changes} single endpoint changes in {changing:.1?} ({resyncs} resyncs completed \
         meanwhile): event-to-map mean {:.2} ms over {count} events, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; sync duration median {} us, max {} us; \
         agent {} (peak), {}",
        sum / count * 1000.0,
        pct(50),
        pct(99),
        latency_ms[latency_ms.len() - 1],
        sync_us[sync_us.len() / 2],
        sync_us[sync_us.len() - 1],
        field("VmHWM"),
        field("VmRSS"),
    );
    let rows = try_services(&f.agent).unwrap();
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|r| row_backends(r).len() == 10));
}

// 12. A kubeconfig that cannot be read stops the agent at once with a message naming it.
#[test]
fn bad_kubeconfig_fails_clearly() {
    require_root().unwrap_or_else(|e| panic!("e2e::kube tests must run as root: {e:#}"));
    let node = Node::new(NodeOptions {
        pods: 1,
        network: PodNetwork::Routed,
        external_client: false,
    })
    .unwrap();
    let missing = std::env::temp_dir().join(unique_name("no-such-kubeconfig"));
    let mut agent =
        Agent::start_kube(Path::new(env!("CARGO_BIN_EXE_podlb")), &node, &missing, &[]).unwrap();
    let status = agent.process().unwrap().wait_timeout(SETTLE);
    let log = strip_ansi(&agent.log());
    let status = status.unwrap_or_else(|| panic!("the agent kept running:\n{log}"));
    assert!(!status.success(), "{status:?}");
    assert!(
        log.contains("kubeconfig") && log.contains(&missing.display().to_string()),
        "{log}"
    );
}
