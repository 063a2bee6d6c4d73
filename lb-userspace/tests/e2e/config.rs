//! The agent's configuration through the real `podlb` binary: bad configurations refused at
//! start with the exact message (and nothing touched), `--print-config` reading back the same,
//! files and flags stacked in order, the KubeProxyConfiguration warning, JSON logs; and, with
//! real traffic, `--nodeport-addresses` CIDRs from a configuration file: a NodePort answers on
//! the node address within them and not on another address of the same interface.
//!
//! The binary tests need no root; the traffic test does (fails, never skips, without it).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;
use podlb::types::Family;
use testkit::testbed::*;

const WHO: &str = "e2e::config";
const HEAD: &str = "apiVersion: podlb.io/v1alpha1\nkind: AgentConfiguration\n";
const KP_HEAD: &str =
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

/// A directory of configuration files, removed on drop.
struct Dir(TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(TempDir::new("config"))
    }

    /// Writes `name` with `text`; returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        self.0.file(name, text).display().to_string()
    }
}

/// `podlb agent ARGS`, without the environment that changes its output.
fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podlb"))
        .arg("agent")
        .args(args)
        .env_remove("PODLB_LOG")
        .env_remove("NODE_NAME")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running podlb")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the agent with `args`; asserts it exits 1 with exactly `Error: {want}` on stderr.
fn assert_refused(args: &[&str], want: &str) {
    let o = agent(args);
    assert_eq!(
        (o.status.code(), stderr(&o)),
        (Some(1), format!("Error: {want}\n")),
        "podlb agent {args:?}"
    );
    assert_eq!(stdout(&o), "", "podlb agent {args:?}");
}

#[test]
fn bad_configuration_is_refused_before_anything_is_touched() {
    let d = Dir::new();
    let root = d.0.path().join("bpf");
    let root_s = root.display().to_string();
    let file = |name: &str, body: &str| d.file(name, &format!("{HEAD}{body}"));
    let cases: Vec<(String, String)> = vec![
        (
            file("cidr.yaml", "clusterCIDR: 10.244.0.0/33\n"),
            "clusterCIDR: \"10.244.0.0/33\": the prefix length must be 0 to 32".into(),
        ),
        (
            file("two.yaml", "clusterCIDR: 10.244.0.0/16,10.245.0.0/16\n"),
            "clusterCIDR: two IPv4 CIDRs (10.244.0.0/16 and 10.245.0.0/16); at most one per \
             family"
                .into(),
        ),
        (
            file("addr.yaml", "healthzBindAddress: 0.0.0.0:http\n"),
            "healthzBindAddress: \"0.0.0.0:http\" is not an address (want IP, IP:PORT or off)"
                .into(),
        ),
        (
            file("dur.yaml", "resyncInterval: 10 seconds\n"),
            "resyncInterval: \"10 seconds\" is not a duration (want e.g. 10s, 500ms, 2m, or \
             seconds)"
                .into(),
        ),
        (
            file("glob.yaml", "podInterfaces: ['veth[']\n"),
            "podInterfaces: bad glob \"veth[\": Pattern syntax error near position 4: invalid \
             range pattern"
                .into(),
        ),
        (
            file("log.yaml", "logging: {format: logfmt}\n"),
            "logging.format: unknown log format \"logfmt\" (want text or json)".into(),
        ),
        (
            file("np.yaml", "nodePortAddresses: [primary, 10.0.0.0/8]\n"),
            "nodePortAddresses: \"primary\" cannot be combined with CIDRs".into(),
        ),
        (
            d.file("kind.yaml", "apiVersion: podlb.io/v1alpha1\nkind: Config\n"),
            "unknown configuration apiVersion \"podlb.io/v1alpha1\", kind \"Config\" (want \
             podlb.io/v1alpha1 AgentConfiguration, or kubeproxy.config.k8s.io/v1alpha1 \
             KubeProxyConfiguration)"
                .into(),
        ),
        (
            d.file(
                "kp.yaml",
                &format!("{KP_HEAD}iptables:\n  masqueradeAl: true\n"),
            ),
            "unknown field `iptables.masqueradeAl` (not in KubeProxyConfiguration \
             kubeproxy.config.k8s.io/v1alpha1)"
                .into(),
        ),
    ];
    for (path, want) in &cases {
        let good = file("good.yaml", "nodeName: a\n");
        // A bad file is refused wherever it stands among good ones.
        assert_refused(
            &["--config", &good, "--config", path, "--bpf-root", &root_s],
            &format!("{path}: {want}"),
        );
    }
    let unknown = file("unknown.yaml", "nodeName: a\nresync: 5s\n");
    let o = agent(&["--config", &unknown, "--bpf-root", &root_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(&format!(
            "Error: {unknown}: unknown field `resync`, expected one of `apiVersion`, `kind`, \
             `kubeconfig`, `manifests`, `nodeName`"
        )),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("at line 4 column 1"), "{}", stderr(&o));
    let missing = d.0.path().join("missing.yaml").display().to_string();
    assert_refused(
        &["--config", &missing],
        &format!("--config {missing}: cannot read it: No such file or directory (os error 2)"),
    );
    for (args, want) in [
        (
            &["--cluster-cidr", "10.0.0.0/8,10.1.0.0/16"][..],
            "--cluster-cidr: two IPv4 CIDRs (10.0.0.0/8 and 10.1.0.0/16); at most one per family",
        ),
        (
            &["--nodeport-addresses", "10.0.0.0/8,primary"],
            "--nodeport-addresses: \"primary\" cannot be combined with CIDRs",
        ),
        (
            &["--metrics-bind-address", "localhost:10249"],
            "--metrics-addr: \"localhost:10249\" is not an address (want IP, IP:PORT or off)",
        ),
        (
            &["--resync-interval", "0"],
            "--resync-interval: \"0\" is too short (at least 100ms)",
        ),
        (
            &["--log-format", "xml"],
            "--log-format: unknown log format \"xml\" (want text or json)",
        ),
        (
            &["--pod-interface", "lxc["],
            "--pod-interface: bad glob \"lxc[\": Pattern syntax error near position 3: invalid \
             range pattern",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--bpf-root", &root_s]);
        assert_refused(&args, want);
    }
    assert!(
        !root.exists(),
        "a refused agent created its bpf root {}",
        root.display()
    );
}

#[test]
fn print_config_stacks_files_and_flags_and_reads_back_the_same() {
    let d = Dir::new();
    let kp = d.file(
        "kube-proxy.conf",
        &format!(
            "{KP_HEAD}clientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n\
             clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\nhostnameOverride: kp-node\n\
             healthzBindAddress: 0.0.0.0\nmetricsBindAddress: 0.0.0.0:10249\n\
             nodePortAddresses: [primary]\nmode: ipvs\nconntrack:\n  maxPerCore: 0\n  min: 131072\n"
        ),
    );
    let ours = d.file(
        "podlb.yaml",
        &format!(
            "{HEAD}externalInterfaces: [eth0]\npodInterfaces: ['lxc*', 'veth*']\n\
             metricsBindAddress: 127.0.0.1:9999\nresyncInterval: 2m\nlogging: {{verbosity: 3}}\n"
        ),
    );
    let o = agent(&[
        "--config",
        &kp,
        "--config",
        &ours,
        "--print-config",
        "--hostname-override",
        "flag-node",
        "--resync-interval",
        "1.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let printed = stdout(&o);
    assert_eq!(
        printed,
        "apiVersion: podlb.io/v1alpha1
kind: AgentConfiguration
kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
nodeName: flag-node
externalInterfaces:
- eth0
podInterfaces:
- lxc*
- veth*
bpfRoot: /sys/fs/bpf/podlb
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:9999
resyncInterval: 1500ms
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses:
- primary
logging:
  format: text
  verbosity: 3
"
    );
    // The KubeProxyConfiguration's ignored fields, in one warning line.
    let err = stderr(&o);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("ignores")).collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&o));
    assert!(
        warnings[0].contains(&format!(
            "{kp}: KubeProxyConfiguration fields that podlb ignores: mode, conntrack.min \
             (conntrack: not implemented yet)"
        )),
        "{}",
        warnings[0]
    );
    // The printed configuration alone configures the same agent.
    let again = d.file("printed.yaml", &printed);
    let o = agent(&["--config", &again, "--print-config"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), printed));
    // Verbosity 3 logs the configuration at debug; there is nothing to warn about.
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(" DEBUG podlb: configuration: {"), "{err}");
}

#[test]
fn json_logs_and_todays_defaults() {
    let d = Dir::new();
    let kp = d.file("kp.conf", &format!("{KP_HEAD}mode: iptables\n"));
    let o = agent(&[
        "--config",
        &kp,
        "--log-format",
        "json",
        "--print-config",
        "--node-name",
        "n",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stderr(&o).trim())
        .unwrap_or_else(|e| panic!("not one JSON log line ({e}): {}", stderr(&o)));
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(
        line["fields"]["message"],
        format!("{kp}: KubeProxyConfiguration fields that podlb ignores: mode").as_str(),
        "{line}"
    );
    assert!(stdout(&o).contains("  format: json\n"), "{}", stdout(&o));
    // -v 3 and up: podlb's debug lines (the configuration); $PODLB_LOG, when set, wins.
    let debug = |args: &[&str], podlb_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_podlb"));
        c.args([
            "agent",
            "--print-config",
            "--node-name",
            "n",
            "--config",
            &kp,
        ]);
        c.args(args).env_remove("PODLB_LOG");
        if let Some(f) = podlb_log {
            c.env("PODLB_LOG", f);
        }
        let err = stderr(&c.output().unwrap());
        (
            err.contains("configuration: {\"apiVersion\":\"podlb.io/v1alpha1\""),
            err.contains("fields that podlb ignores"),
        )
    };
    assert_eq!(debug(&["-v", "2"], None), (false, true));
    assert_eq!(debug(&["-v", "3"], None), (true, true));
    assert_eq!(debug(&["--v=5"], None), (true, true));
    assert_eq!(debug(&["-v", "5"], Some("error")), (false, false));
    assert_eq!(debug(&[], Some("debug")), (true, true));
    // No configuration: today's defaults; $NODE_NAME names the node.
    let o = Command::new(env!("CARGO_BIN_EXE_podlb"))
        .args(["agent", "--print-config"])
        .env("NODE_NAME", "env-node")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "apiVersion: podlb.io/v1alpha1
kind: AgentConfiguration
nodeName: env-node
externalInterfaces: []
podInterfaces: []
bpfRoot: /sys/fs/bpf/podlb
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
resyncInterval: 10s
clusterCIDR: ''
nodePortAddresses: []
logging:
  format: text
  verbosity: 0
"
    );
}

/// A second address on the node's `ext0`, in the external client's subnet.
const SECOND_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 77, 3);

// `--nodeport-addresses` CIDRs, from an AgentConfiguration stacked on a KubeProxyConfiguration
// (as the kube-proxy overlay runs the agent): the NodePort is served on the node address within
// the CIDR once it appears on `ext0`, answered by the endpoints, and not served on `ext0`'s
// other address (192.168.77.1, where the default would serve it).
#[test]
fn nodeport_served_only_on_node_addresses_within_the_cidrs() {
    require_root().unwrap_or_else(|e| panic!("{WHO} tests must run as root: {e:#}"));
    let node = Node::new(NodeOptions {
        pods: 3,
        network: PodNetwork::Routed,
        external_client: true,
    })
    .expect("building the node");
    let d = Dir::new();
    let kp = d.file("kp.conf", &format!("{KP_HEAD}mode: iptables\n"));
    let ours = d.file(
        "podlb.yaml",
        &format!("{HEAD}nodePortAddresses: [{SECOND_IP}/32, 'fd00:99::/64']\n"),
    );
    let agent = Agent::start_with(
        Path::new(env!("CARGO_BIN_EXE_podlb")),
        &node,
        &["--config", &kp, "--config", &ours],
    )
    .expect("starting the agent");
    let mut f = Fixture {
        tcp: Default::default(),
        udp: Default::default(),
        agent,
        node,
    };
    f.serve(&[1, 2]);
    let cip = vip_of(Family::V4, 40);
    let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[1, 2]);
    f.apply("web", &[svc.yaml(), slice]);
    let first = sa(f.node_ip(Family::V4), 30080);
    let second = sa(SECOND_IP, 30080);

    // No node address is within the CIDRs yet: the ClusterIP only, and a warning.
    f.wait_programmed(&[(sa(cip, 80), "TCP", "ClusterIP")]);
    let np = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .filter(|r| r["kind"] == "NodePort")
            .map(|r| format!("{}/{}", r["frontend"], r["protocol"]))
            .collect()
    };
    assert_eq!(np(&f.services()), Vec::<String>::new(), "{}", f.log());
    assert!(
        f.log()
            .contains("no address of this node is within 192.168.77.3/32, fd00:99::/64"),
        "{}",
        f.log()
    );
    assert!(
        f.log()
            .contains("KubeProxyConfiguration fields that podlb ignores: mode"),
        "{}",
        f.log()
    );

    // The address appears on ext0: the NodePort follows, on it alone.
    f.node
        .ns()
        .exec(&[
            "ip",
            "addr",
            "add",
            &format!("{SECOND_IP}/24"),
            "dev",
            "ext0",
        ])
        .expect("adding the second address");
    let rows = f.wait_programmed(&[
        (second, "TCP", "NodePort"),
        (sa(SECOND_IP, 30053), "UDP", "NodePort"),
    ]);
    let mut want = vec![
        format!("\"{second}\"/\"TCP\""),
        format!("\"{}\"/\"UDP\"", sa(SECOND_IP, 30053)),
    ];
    let mut got = np(&rows);
    want.sort();
    got.sort();
    assert_eq!(got, want, "{rows:?}");
    let r = f.wait_reply(f.ext(), second, L4::Tcp);
    assert!(names(&[1, 2]).contains(&r.ident), "{r:?}");
    let counts = f.collect(
        f.ext(),
        second,
        L4::Tcp,
        20,
        Seen::Snat(f.node_ip(Family::V4)),
    );
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    f.assert_unreachable(
        f.ext(),
        first,
        L4::Tcp,
        5,
        "a NodePort on a node address outside --nodeport-addresses",
    );
}
