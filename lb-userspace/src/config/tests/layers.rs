//! The flags, the stacking of files and flags, the defaults, and the effective configuration.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::{parse, resolved};
use crate::agent::SourceConfig;
use crate::config::file::effective;
use crate::config::*;
use crate::types::NodePortAddresses;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: AgentArgs,
}

/// `podlb agent ARGS`'s flags.
fn flags(args: &[&str]) -> AgentArgs {
    let argv = std::iter::once("podlb-agent").chain(args.iter().copied());
    match Cmd::try_parse_from(argv) {
        Ok(c) => c.args,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn flag_settings(args: &[&str]) -> Settings {
    flags(args)
        .settings()
        .unwrap_or_else(|e| panic!("{args:?}: {e:#}"))
}

fn flag_err(args: &[&str]) -> String {
    match flags(args).settings() {
        Ok(s) => panic!("{args:?} accepted: {s:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn sa(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn no_configuration_is_todays_agent() {
    let l = resolved(vec![flag_settings(&[])]);
    let a = &l.agent;
    assert!(matches!(a.source, SourceConfig::Kubernetes(None)));
    assert_eq!(a.node_name, "node-a");
    assert!(a.external_interfaces.is_empty() && a.pod_interfaces.is_empty());
    assert_eq!(a.bpf_root, PathBuf::from("/sys/fs/bpf/podlb"));
    assert_eq!(a.healthz_addr, sa("0.0.0.0:10256"));
    assert_eq!(a.metrics_addr, sa("127.0.0.1:10249"));
    assert_eq!(a.resync_interval, Duration::from_secs(10));
    assert!(a.cluster_cidrs.is_empty());
    assert_eq!(a.nodeport_addresses, NodePortAddresses::Default);
    assert_eq!(l.logging, Logging::default());
    // The test bed's command line.
    let l = resolved(vec![flag_settings(&[
        "--manifests",
        "/tmp/m",
        "--node-name",
        "node-1",
        "--pod-interface",
        "lxc*",
        "--bpf-root",
        "/run/x",
        "--external-interface",
        "ext0",
        "--resync-interval",
        "0.5",
        "--healthz-addr",
        "off",
        "--metrics-addr",
        "",
    ])]);
    let a = &l.agent;
    assert!(matches!(&a.source, SourceConfig::Manifests(p) if p == &PathBuf::from("/tmp/m")));
    assert_eq!(a.node_name, "node-1");
    assert_eq!(a.external_interfaces, ["ext0"]);
    assert_eq!(a.pod_interfaces[0].as_str(), "lxc*");
    assert_eq!(a.resync_interval, Duration::from_millis(500));
    assert_eq!((a.healthz_addr, a.metrics_addr), (None, None));
}

#[test]
fn kube_proxy_flag_names_mean_the_same() {
    let ours = flag_settings(&[
        "--healthz-addr",
        "10.0.0.1:1",
        "--metrics-addr",
        "10.0.0.1:2",
        "--node-name",
        "n",
    ]);
    let theirs = flag_settings(&[
        "--healthz-bind-address",
        "10.0.0.1:1",
        "--metrics-bind-address=10.0.0.1:2",
        "--hostname-override",
        "n",
    ]);
    assert_eq!(ours, theirs);
    let s = flag_settings(&[
        "--healthz-bind-address",
        "10.0.0.1",
        "--metrics-bind-address",
        "::1",
    ]);
    assert_eq!(s.healthz_addr, Some(sa("10.0.0.1:10256")));
    assert_eq!(s.metrics_addr, Some(sa("[::1]:10249")));
    for v in [&["-v", "4"][..], &["--v", "4"], &["--v=4"], &["-v4"]] {
        assert_eq!(flag_settings(v).verbosity, Some(4), "{v:?}");
    }
    let s = flag_settings(&[
        "--log-format",
        "json",
        "--cluster-cidr",
        "10.244.0.0/16,fd00:10:244::/56",
        "--nodeport-addresses",
        "192.168.0.0/16,fd00::/8",
        "--kubeconfig",
        "/k",
    ]);
    assert_eq!(s.log_format, Some(LogFormat::Json));
    assert_eq!(s.cluster_cidrs.as_ref().map(Vec::len), Some(2));
    assert_eq!(
        s.nodeport_addresses,
        Some(NodePortAddresses::Cidrs(vec![
            "192.168.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap()
        ]))
    );
    assert_eq!(s.source, Some(SourceSetting::Kubeconfig("/k".into())));
    let s = flag_settings(&["--nodeport-addresses", "primary", "--cluster-cidr", ""]);
    assert_eq!(s.nodeport_addresses, Some(NodePortAddresses::Primary));
    assert_eq!(s.cluster_cidrs, Some(vec![]));
    let cmd = Cmd::try_parse_from(["x", "--kubeconfig", "/k", "--manifests", "/m"]);
    assert!(cmd.is_err(), "--kubeconfig with --manifests accepted");
}

#[test]
fn bad_flags_are_named() {
    assert_eq!(
        flag_err(&["--cluster-cidr", "10.0.0.0/8,10.1.0.0/16"]),
        "--cluster-cidr: two IPv4 CIDRs (10.0.0.0/8 and 10.1.0.0/16); at most one per family"
    );
    assert_eq!(
        flag_err(&["--nodeport-addresses", "primary,10.0.0.0/8"]),
        "--nodeport-addresses: \"primary\" cannot be combined with CIDRs"
    );
    assert_eq!(
        flag_err(&["--healthz-bind-address", "x"]),
        "--healthz-addr: \"x\" is not an address (want IP, IP:PORT or off)"
    );
    assert_eq!(
        flag_err(&["--metrics-addr", "1.1.1.1:-1"]),
        "--metrics-addr: \"1.1.1.1:-1\" is not an address (want IP, IP:PORT or off)"
    );
    assert_eq!(
        flag_err(&["--resync-interval", "0.05"]),
        "--resync-interval: \"0.05\" is too short (at least 100ms)"
    );
    assert_eq!(
        flag_err(&["--log-format", "yaml"]),
        "--log-format: unknown log format \"yaml\" (want text or json)"
    );
    assert_eq!(
        flag_err(&["--pod-interface", "a["]),
        "--pod-interface: bad glob \"a[\": Pattern syntax error near position 1: invalid range pattern"
    );
}

const A: &str = "apiVersion: podlb.io/v1alpha1
kind: AgentConfiguration
nodeName: from-a
externalInterfaces: [eth0]
clusterCIDR: 10.1.0.0/16
resyncInterval: 20s
logging: {verbosity: 3}
";
const B: &str = "apiVersion: podlb.io/v1alpha1
kind: AgentConfiguration
externalInterfaces: [eth1, eth2]
clusterCIDR: ''
resyncInterval: 30s
";
const KP: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
hostnameOverride: from-kp
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 0.0.0.0:12345
mode: iptables
";

#[test]
fn later_files_override_earlier_ones_and_flags_override_files() {
    let (a, b, kp) = (
        parse("a", A).settings,
        parse("b", B).settings,
        parse("kp", KP).settings,
    );
    // b replaces a's interfaces and interval; its empty clusterCIDR leaves a's.
    let l = resolved(vec![a.clone(), b.clone()]);
    assert_eq!(l.agent.node_name, "from-a");
    assert_eq!(l.agent.external_interfaces, ["eth1", "eth2"]);
    assert_eq!(l.agent.resync_interval, Duration::from_secs(30));
    assert_eq!(l.agent.cluster_cidrs, ["10.1.0.0/16".parse().unwrap()]);
    assert_eq!(l.logging.verbosity, 3);
    // The kube-proxy overlay's order: kube-proxy's file, then podlb's.
    let l = resolved(vec![kp.clone(), a.clone()]);
    assert_eq!(l.agent.node_name, "from-a");
    assert_eq!(l.agent.cluster_cidrs, ["10.1.0.0/16".parse().unwrap()]);
    assert_eq!(l.agent.healthz_addr, sa("0.0.0.0:12345"));
    let l = resolved(vec![a.clone(), kp.clone()]);
    assert_eq!(l.agent.node_name, "from-kp");
    assert_eq!(l.agent.cluster_cidrs, ["10.244.0.0/16".parse().unwrap()]);
    // Flags over both.
    let f = flag_settings(&[
        "--hostname-override",
        "from-flag",
        "--cluster-cidr",
        "",
        "--external-interface",
        "ext0",
        "-v",
        "0",
        "--healthz-addr",
        "off",
    ]);
    let l = resolved(vec![kp, a, b, f]);
    assert_eq!(l.agent.node_name, "from-flag");
    assert!(l.agent.cluster_cidrs.is_empty());
    assert_eq!(l.agent.external_interfaces, ["ext0"]);
    assert_eq!(l.agent.resync_interval, Duration::from_secs(30));
    assert_eq!(l.agent.healthz_addr, None);
    assert_eq!(l.logging.verbosity, 0);
}

#[test]
fn node_name_from_flag_file_environment_then_hostname() {
    let host = || Ok("host-1".to_string());
    let named = |n: &str| Settings {
        node_name: Some(n.into()),
        ..Settings::default()
    };
    let name = |layers: Vec<Settings>, env: Option<&str>| {
        resolve(layers, env.map(String::from), host)
            .unwrap()
            .0
            .node_name
    };
    assert_eq!(name(vec![], None), "host-1");
    assert_eq!(name(vec![], Some("")), "host-1");
    assert_eq!(name(vec![], Some("env-1")), "env-1");
    assert_eq!(name(vec![named("file-1")], Some("env-1")), "file-1");
    let e = resolve(vec![], None, || anyhow::bail!("no hostname")).err();
    assert_eq!(e.map(|e| e.to_string()), Some("no hostname".to_string()));
}

#[test]
fn effective_configuration_reads_back_the_same() {
    let full = flag_settings(&[
        "--manifests",
        "/srv/manifests",
        "--external-interface",
        "eth0",
        "--pod-interface",
        "lxc*",
        "--pod-interface",
        "veth*",
        "--bpf-root",
        "/run/podlb",
        "--healthz-addr",
        "[::]:1",
        "--metrics-addr",
        "off",
        "--resync-interval",
        "1.5",
        "--cluster-cidr",
        "10.244.0.0/16,fd00:10:244::/56",
        "--nodeport-addresses",
        "192.168.0.0/16",
        "--log-format",
        "json",
        "-v",
        "5",
    ]);
    for layers in [
        vec![],
        vec![full],
        vec![parse("kp", KP).settings],
        vec![flag_settings(&[
            "--kubeconfig",
            "/k",
            "--nodeport-addresses",
            "primary",
        ])],
    ] {
        let first = resolved(layers);
        let yaml = effective_yaml(&first).unwrap();
        let again = resolved(vec![parse("printed", &yaml).settings]);
        assert_eq!(effective_yaml(&again).unwrap(), yaml);
        let e = effective(&again);
        assert_eq!(e.node_name, Some(first.agent.node_name.clone()), "{yaml}");
        assert_eq!(
            e.pod_interfaces.map(|p| p.len()),
            Some(first.agent.pod_interfaces.len())
        );
    }
    let yaml = effective_yaml(&resolved(vec![])).unwrap();
    assert_eq!(
        yaml,
        "apiVersion: podlb.io/v1alpha1
kind: AgentConfiguration
nodeName: node-a
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
