//! The DaemonSet's exact container spec, proven on the test bed: podlb's image (built once per
//! test run by the code of `cargo xtask image`) runs with podman in a test-bed node namespace
//! with what `kubectl kustomize deploy/base` renders, read from the YAML by
//! `testkit::podspec`: image, args, env (NODE_NAME as the downward API gives it),
//! capabilities, seccomp, no_new_privs, read-only root, the hostPath and ConfigMap volumes, the
//! host network. What kubelet adds to every pod is emulated: the service account's token and
//! CA at /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST and _PORT
//! (the HTTPS API stand-in in the node namespace). The host's /sys/fs/bpf is a bpffs of the
//! test's own.
//!
//! Needs root and podman (fails, never skips, without them): `cargo xtask test -- --test e2e daemonset`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};
use testkit::apiserver::{http_get, ApiServer};
use testkit::podspec::podman::{podman_out, require_podman, run_once, Container};
use testkit::podspec::{Host, PodSpec};
use testkit::testbed::*;

/// The image build of `cargo xtask image`, the same file.
#[allow(dead_code)]
#[path = "../../../xtask/src/image.rs"]
mod image;

const DAEMONSET: &str = "podlb";
const CLUSTER_IP: u8 = 60;
const NODE_PORT: u16 = 30090;
/// The ClusterIP Service's backends (pods), pod0 is the client.
const BACKENDS: [usize; 2] = [1, 2];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lb-userspace lives in the workspace")
        .to_path_buf()
}

/// Builds the image once per test process (the build is itself idempotent and locked, for
/// parallel processes) from the `podlb` these tests were built with.
fn build_image() {
    static BUILT: OnceLock<Result<Duration, String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        require_root().map_err(|e| format!("e2e::daemonset tests must run as root: {e:#}"))?;
        require_podman().map_err(|e| format!("{e:#}"))?;
        let t = Instant::now();
        image::build(
            &workspace(),
            Path::new(env!("CARGO_BIN_EXE_podlb")),
            env!("CARGO_PKG_VERSION"),
        )
        .map_err(|e| format!("building the image: {e:#}"))?;
        Ok(t.elapsed())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// `kubectl kustomize deploy/base`, once.
fn rendered() -> &'static str {
    static RENDERED: OnceLock<Result<String, String>> = OnceLock::new();
    let r = RENDERED.get_or_init(|| testkit::kustomize::render(&workspace().join("deploy/base")));
    r.as_deref().unwrap_or_else(|e| panic!("{e}"))
}

fn spec() -> PodSpec {
    PodSpec::from_rendered(rendered(), DAEMONSET).expect("reading the rendered DaemonSet")
}

/// The DaemonSet as `kubectl kustomize deploy/overlays/privileged` renders it.
fn privileged_spec() -> PodSpec {
    let dir = workspace().join("deploy/overlays/privileged");
    let yaml = testkit::kustomize::render(&dir).unwrap_or_else(|e| panic!("{e}"));
    PodSpec::from_rendered(&yaml, DAEMONSET).expect("reading the privileged DaemonSet")
}

/// The ConfigMap's configuration, parsed.
fn config_of(spec: &PodSpec) -> Value {
    let files = spec.configmap_files();
    let (_, text) = files
        .iter()
        .find(|(p, _)| p.ends_with("config.yaml"))
        .expect("the ConfigMap holds config.yaml");
    serde_yaml::from_str(text).expect("config.yaml is YAML")
}

/// Node (its uplink named eth0, as the ConfigMap expects), a bpffs standing for the host's
/// /sys/fs/bpf, the HTTPS API stand-in and the service account, and the container. Field
/// order is drop order; Drop removes the container before `podlb reset` and the unmount.
struct Bed {
    container: Option<Container>,
    _servers: Vec<TcpServer>,
    api: ApiServer,
    _sa: TempDir,
    configmaps: TempDir,
    bpf: BpfRoot,
    node: Node,
}

impl Bed {
    /// The test bed, without the container.
    fn new(spec: &PodSpec, network: PodNetwork) -> Bed {
        build_image();
        let ext_if = config_of(spec)["externalInterfaces"][0]
            .as_str()
            .expect("the ConfigMap names an external interface")
            .to_string();
        let node = Node::with_external_interface(
            NodeOptions {
                pods: 3,
                network,
                external_client: true,
            },
            &ext_if,
        )
        .expect("building the node");
        let bpf = BpfRoot::new().expect("a bpffs for the node's /sys/fs/bpf");
        let api = ApiServer::start_tls(&node.ns().path()).expect("starting the HTTPS API stand-in");
        let sa = TempDir::new("serviceaccount");
        api.write_service_account(sa.path()).unwrap();
        let servers = BACKENDS
            .iter()
            .map(|&i| TcpServer::start(node.pod(i).ns(), TCP_BACKEND_PORT, node.pod(i).name()))
            .collect();
        Bed {
            container: None,
            _servers: servers,
            api,
            _sa: sa,
            configmaps: TempDir::new("configmaps"),
            bpf,
            node,
        }
    }

    /// What stands for the node, as kubelet would give it to the pod.
    fn host(&self) -> Host {
        Host {
            netns: self.node.ns().path(),
            node_name: self.node.name(),
            host_paths: BTreeMap::from([
                ("/sys/fs/bpf".to_string(), self.bpf.path().to_path_buf()),
                (
                    "/sys/fs/cgroup".to_string(),
                    PathBuf::from("/sys/fs/cgroup"),
                ),
            ]),
            configmaps: self.configmaps.path().to_path_buf(),
            service_account_dir: Some(self._sa.path().to_path_buf()),
            kubelet_env: vec![
                ("KUBERNETES_SERVICE_HOST".into(), self.api.host()),
                (
                    "KUBERNETES_SERVICE_PORT".into(),
                    self.api.port().to_string(),
                ),
            ],
        }
    }

    fn start(&mut self, spec: &PodSpec) {
        let c = Container::start(spec, &self.host()).unwrap_or_else(|e| panic!("{e:#}"));
        self.container = Some(c);
    }

    fn container(&self) -> &Container {
        self.container.as_ref().expect("the container was started")
    }

    fn logs(&self) -> String {
        self.container
            .as_ref()
            .map(|c| strip_ansi(&c.logs()))
            .unwrap_or_default()
    }

    /// The agent's pin directory on the host: the ConfigMap's bpfRoot under the test's bpffs.
    fn pins(&self, spec: &PodSpec) -> PathBuf {
        let root = config_of(spec)["bpfRoot"]
            .as_str()
            .expect("bpfRoot in the ConfigMap")
            .to_string();
        let rel = root
            .strip_prefix("/sys/fs/bpf")
            .expect("bpfRoot lies under the bpffs hostPath");
        self.bpf.path().join(rel.trim_start_matches('/'))
    }

    /// `podlb service list -o json` on the host, against the container's pins.
    fn services(&self, spec: &PodSpec) -> Option<Vec<Value>> {
        let out = Command::new(env!("CARGO_BIN_EXE_podlb"))
            .args(["service", "list", "-o", "json", "--bpf-root"])
            .arg(self.pins(spec))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn apply(&self, obj: Value) {
        self.api.apply(obj).unwrap();
    }

    fn http(&self, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        self.node
            .ns()
            .run_in(|| http_get(addr, path, Duration::from_secs(2)))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        drop(self.container.take());
        let root = self.bpf.path().join("podlb");
        let _ = Command::new(env!("CARGO_BIN_EXE_podlb"))
            .args(["reset", "--bpf-root"])
            .arg(root)
            .output();
    }
}

/// The Services: `web` ClusterIP 10.96.0.60:80 and NodePort 30090, endpoints [`BACKENDS`];
/// the Node object of this node with its external address.
fn apply_objects(bed: &Bed) {
    let node_ip = bed.node.node_ip().expect("external client");
    bed.apply(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": bed.node.name()},
        "status": {"addresses": [{"type": "InternalIP", "address": node_ip.to_string()}]},
    }));
    bed.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": vip(CLUSTER_IP).to_string(),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                            "targetPort": TCP_BACKEND_PORT, "nodePort": NODE_PORT}]},
    }));
    let endpoints: Vec<Value> = BACKENDS
        .iter()
        .map(|&i| json!({"addresses": [bed.node.pod(i).ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    bed.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": TCP_BACKEND_PORT, "protocol": "TCP"}],
        "endpoints": endpoints,
    }));
}

/// `n` requests from `client` to `dst`: the pods that answered, and the client addresses the
/// backends saw.
fn balance(
    bed: &Bed,
    client: &Netns,
    dst: SocketAddr,
    n: usize,
) -> (BTreeSet<String>, BTreeSet<IpAddr>) {
    let mut who = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for k in 0..n {
        let r = tcp_request(client, dst, T)
            .unwrap_or_else(|e| panic!("request {k} to {dst}: {e:#}\n{}", bed.logs()));
        assert!(r.from_addr(dst), "reply from {} not {dst}", r.peer);
        seen.insert(r.seen_ip());
        who.insert(r.ident);
    }
    (who, seen)
}

/// Probes, accept_local, a pod to the ClusterIP and the external client to the NodePort,
/// each balanced; the maps as read on the host. The container runs on `bed`.
fn serves(bed: &Bed, spec: &PodSpec) {
    let log = || bed.logs();
    // Probes, on the ports and paths the DaemonSet names: ready once synced.
    let readiness = spec.readiness.clone().expect("a readiness probe");
    let liveness = spec.liveness.clone().expect("a liveness probe");
    let ready = wait_until(SETTLE, Duration::from_millis(100), || {
        matches!(bed.http(readiness.port, &readiness.path), Ok((200, _)))
    });
    assert!(ready, "{} never answered 200\n{}", readiness.path, log());
    let (code, body) = bed.http(liveness.port, &liveness.path).unwrap();
    assert_eq!(code, 200, "{}: {body}\n{}", liveness.path, log());

    // /proc/sys is read-only in the container: accept_local is on for each attached interface
    // (and a bridge the pods' interfaces belong to) instead of `all`, which the test bed
    // leaves off; without it the NodePort's replies would be dropped as martians.
    let sysctl = |key: &str| {
        let path = format!("/proc/sys/net/ipv4/conf/{key}/accept_local");
        bed.node
            .ns()
            .run_in(|| std::fs::read_to_string(&path).unwrap())
            .trim()
            .to_string()
    };
    if spec.privileged {
        // A privileged container's /proc/sys is writable: the agent sets `all`.
        assert_eq!(sysctl("all"), "1", "{}", log());
    } else {
        assert_eq!(sysctl("all"), "0");
    }
    let ext_if = config_of(spec)["externalInterfaces"][0]
        .as_str()
        .unwrap()
        .to_string();
    let mut devs = vec![ext_if, "lxc0".to_string(), "lxc1".to_string()];
    if bed.node.network() == PodNetwork::Bridge {
        devs.push("cbr0".into());
    }
    for dev in devs.iter().filter(|_| !spec.privileged) {
        assert_eq!(sysctl(dev), "1", "accept_local on {dev}\n{}", log());
    }

    // A pod to the ClusterIP: both endpoints answer and see the pod's own address.
    let client = bed.node.pod(0).ns();
    let cip = sa(vip(CLUSTER_IP), 80);
    wait_answered(client, cip, L4::Tcp, log);
    let (who, seen) = balance(bed, client, cip, 30);
    assert_eq!(who, names(&BACKENDS), "{}", log());
    assert_eq!(seen, BTreeSet::from([IpAddr::V4(bed.node.pod(0).ip())]));

    // The external client to the NodePort: balanced, masqueraded to the node's address.
    let ext = bed.node.ext().expect("external client");
    let node_ip = bed.node.node_ip().expect("external client");
    let np = sa(node_ip, NODE_PORT);
    wait_answered(ext, np, L4::Tcp, log);
    let (who, seen) = balance(bed, ext, np, 30);
    assert_eq!(who, names(&BACKENDS), "{}", log());
    assert_eq!(seen, BTreeSet::from([IpAddr::V4(node_ip)]), "{}", log());

    // The maps (read on the host from the container's pins) hold what the stand-in serves.
    let rows = bed
        .services(spec)
        .expect("podlb service list on the container's pins");
    let fe = rows
        .iter()
        .find(|r| r["frontend"] == cip.to_string().as_str())
        .unwrap_or_else(|| panic!("{cip} not programmed: {rows:?}"));
    assert_eq!(row_backends(fe).len(), BACKENDS.len());
}

// The DaemonSet's container serves a pod's ClusterIP traffic and an external client's
// NodePort traffic, balanced over the endpoints; its probes answer as the DaemonSet expects;
// `podman restart` (kubelet restarting the container) keeps an open connection.
#[test]
fn daemonset_container_balances_and_survives_a_restart() {
    let spec = spec();
    let mut bed = Bed::new(&spec, PodNetwork::Routed);
    apply_objects(&bed);
    bed.start(&spec);
    serves(&bed, &spec);
    let log = || bed.logs();
    let readiness = spec.readiness.clone().expect("a readiness probe");
    let client = bed.node.pod(0).ns();
    let cip = sa(vip(CLUSTER_IP), 80);

    // An open connection survives the container's restart.
    let mut session = TcpSession::connect(client, cip, T).unwrap();
    let first = session.request().unwrap();
    let pid = bed.container().pid();
    bed.container()
        .restart()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    let restarted = wait_until(SETTLE, Duration::from_millis(100), || {
        bed.container().pid().is_some_and(|p| Some(p) != pid)
            && matches!(bed.http(readiness.port, &readiness.path), Ok((200, _)))
    });
    assert!(
        restarted,
        "the container did not come back ready\n{}",
        log()
    );
    for i in 0..5 {
        let r = session
            .request()
            .unwrap_or_else(|e| panic!("request {i} after the restart: {e:#}\n{}", log()));
        assert_eq!(
            r.ident, first.ident,
            "the connection moved to another backend"
        );
    }
    assert!(
        log().contains("adopted=true"),
        "the restarted agent did not adopt the pinned datapath\n{}",
        log()
    );
    let (who, _) = balance(&bed, client, cip, 20);
    assert_eq!(who, names(&BACKENDS), "{}", log());
}

// The same on a bridge CNI node: replies enter the stack on the bridge, which gets
// accept_local as the master of the pods' interfaces.
#[test]
fn daemonset_container_balances_on_a_bridge_node() {
    let spec = spec();
    let mut bed = Bed::new(&spec, PodNetwork::Bridge);
    apply_objects(&bed);
    bed.start(&spec);
    serves(&bed, &spec);
}

// The privileged overlay (privileged, the bpffs mounted Bidirectional) serves the same.
#[test]
fn daemonset_privileged_overlay_balances() {
    let spec = privileged_spec();
    assert!(spec.privileged, "the privileged overlay is not privileged");
    let mut bed = Bed::new(&spec, PodNetwork::Routed);
    apply_objects(&bed);
    bed.start(&spec);
    serves(&bed, &spec);
}

// With each capability of the DaemonSet's set taken away, the container exits at once with
// an error naming that capability and what it is for.
#[test]
fn daemonset_container_without_a_capability_names_it() {
    let spec = spec();
    assert!(
        !spec.cap_add.is_empty(),
        "the DaemonSet adds no capabilities"
    );
    for cap in spec.cap_add.clone() {
        let without = spec.without_capability(&cap).unwrap();
        let mut bed = Bed::new(&without, PodNetwork::Routed);
        bed.start(&without);
        let code = bed.container().wait_exit(SETTLE);
        let logs = bed.logs();
        assert!(
            matches!(code, Some(c) if c != 0),
            "without {cap} the agent did not fail (exit {code:?})\n{logs}"
        );
        let name = format!("CAP_{cap}");
        let purpose = podlb::caps::NEEDED
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("{name} is in the DaemonSet but not in podlb::caps::NEEDED"))
            .purpose;
        assert!(
            logs.contains(&format!("missing {name}: {purpose}")),
            "without {cap}: {logs}"
        );
        // Only that one is named.
        for other in spec.cap_add.iter().filter(|c| **c != cap) {
            assert!(!logs.contains(&format!("missing CAP_{other}")), "{logs}");
        }
    }
}

// The image's entrypoint and the DaemonSet's args make a valid podlb command: run in the
// container as the DaemonSet specifies, `--print-config` prints the ConfigMap's settings.
#[test]
fn image_entrypoint_and_daemonset_args_agree() {
    let spec = spec();
    let bed = Bed::new(&spec, PodNetwork::Routed);
    assert!(
        spec.command.is_empty(),
        "the DaemonSet overrides the entrypoint: {:?}",
        spec.command
    );
    let inspect = |f: &str| podman_out(&["image", "inspect", "--format", f, &spec.image]).unwrap();
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}").trim(),
        r#"["/usr/bin/podlb"]"#
    );
    assert_eq!(
        inspect(r#"{{index .Labels "org.opencontainers.image.version"}}"#).trim(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        !inspect(r#"{{index .Labels "org.opencontainers.image.revision"}}"#)
            .trim()
            .is_empty()
    );

    let out = run_once(&spec, &bed.host(), &["--print-config"]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?} --print-config: {stderr}",
        spec.args
    );
    let printed: Value = serde_yaml::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        printed["nodeName"],
        bed.node.name().as_str(),
        "NODE_NAME: {stdout}"
    );
    let cfg = config_of(&spec);
    for field in [
        "externalInterfaces",
        "podInterfaces",
        "bpfRoot",
        "healthzBindAddress",
    ] {
        assert_eq!(printed[field], cfg[field], "{field}: printed {stdout}");
    }
    // The probes ask the port the configuration serves health on.
    let healthz = cfg["healthzBindAddress"].as_str().unwrap();
    for p in [&spec.readiness, &spec.liveness] {
        let port = p.as_ref().expect("probe").port;
        assert!(
            healthz.ends_with(&format!(":{port}")),
            "probe port {port} vs {healthz}"
        );
    }
}
