//! The two kinds of file: podlb's AgentConfiguration and kube-proxy's KubeProxyConfiguration.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{parse, parse_err};
use crate::config::{LogFormat, Settings, SourceSetting};
use crate::types::NodePortAddresses;

const HEAD: &str = "apiVersion: podlb.io/v1alpha1\nkind: AgentConfiguration\n";
const KP_HEAD: &str =
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn agent_configuration_every_field() {
    let p = parse(
        "a.yaml",
        &format!(
            "{HEAD}kubeconfig: /etc/kube.conf
nodeName: node-7
externalInterfaces: [eth0, eth1]
podInterfaces: ['lxc*', 'veth*']
bpfRoot: /run/podlb
healthzBindAddress: 10.0.0.1
metricsBindAddress: '[::1]:9100'
resyncInterval: 500ms
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: [192.168.0.0/16]
logging:
  format: json
  verbosity: 4
"
        ),
    );
    assert_eq!(p.warning, None);
    let s = p.settings;
    assert_eq!(
        s,
        Settings {
            source: Some(SourceSetting::Kubeconfig("/etc/kube.conf".into())),
            node_name: Some("node-7".into()),
            external_interfaces: Some(vec!["eth0".into(), "eth1".into()]),
            pod_interfaces: Some(vec!["lxc*".into(), "veth*".into()]),
            bpf_root: Some(PathBuf::from("/run/podlb")),
            healthz_addr: Some(Some(sa("10.0.0.1:10256"))),
            metrics_addr: Some(Some(sa("[::1]:9100"))),
            resync_interval: Some(Duration::from_millis(500)),
            cluster_cidrs: Some(vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap()
            ]),
            nodeport_addresses: Some(NodePortAddresses::Cidrs(vec!["192.168.0.0/16"
                .parse()
                .unwrap()])),
            log_format: Some(LogFormat::Json),
            verbosity: Some(4),
        }
    );
    let p = parse(
        "b.yaml",
        &format!("{HEAD}manifests: /srv/m\nresyncInterval: 2.5\nhealthzBindAddress: 'off'\nnodePortAddresses: [primary]\n"),
    );
    assert_eq!(
        p.settings.source,
        Some(SourceSetting::Manifests("/srv/m".into()))
    );
    assert_eq!(
        p.settings.resync_interval,
        Some(Duration::from_millis(2500))
    );
    assert_eq!(p.settings.healthz_addr, Some(None));
    assert_eq!(
        p.settings.nodeport_addresses,
        Some(NodePortAddresses::Primary)
    );
}

#[test]
fn empty_fields_set_nothing() {
    let p = parse(
        "a.yaml",
        &format!(
            "{HEAD}kubeconfig: ''\nnodeName: ''\nexternalInterfaces: []\npodInterfaces: []\n\
             bpfRoot: ''\nhealthzBindAddress: ''\nmetricsBindAddress: ''\nresyncInterval: ''\n\
             clusterCIDR: ''\nnodePortAddresses: []\nlogging: {{format: ''}}\n"
        ),
    );
    assert_eq!(p.settings, Settings::default());
    assert_eq!(parse("b.yaml", HEAD).settings, Settings::default());
    // The shipped configuration is valid.
    let shipped = include_str!("../../../../deploy/base/config.yaml");
    let s = parse("config.yaml", shipped).settings;
    assert_eq!(s.external_interfaces, Some(vec!["eth0".to_string()]));
    assert_eq!(s.cluster_cidrs, None);
}

#[test]
fn agent_configuration_errors_name_the_file_and_field() {
    let err = |body: &str| parse_err("/etc/podlb/config.yaml", &format!("{HEAD}{body}"));
    let f = "/etc/podlb/config.yaml";
    assert!(
        err("nodeNme: x\n").starts_with(&format!(
            "{f}: unknown field `nodeNme`, expected one of `apiVersion`, `kind`, `kubeconfig`"
        )),
        "{}",
        err("nodeNme: x\n")
    );
    assert!(
        err("logging:\n  level: 3\n").starts_with(&format!(
            "{f}: logging: unknown field `level`, expected `format` or `verbosity`"
        )),
        "{}",
        err("logging:\n  level: 3\n")
    );
    assert_eq!(
        err("clusterCIDR: 10.0.0.0/33\n"),
        format!("{f}: clusterCIDR: \"10.0.0.0/33\": the prefix length must be 0 to 32")
    );
    assert_eq!(
        err("clusterCIDR: 10.0.0.0/8,10.1.0.0/16\n"),
        format!(
            "{f}: clusterCIDR: two IPv4 CIDRs (10.0.0.0/8 and 10.1.0.0/16); at most one per family"
        )
    );
    assert_eq!(
        err("healthzBindAddress: nowhere:1\n"),
        format!(
            "{f}: healthzBindAddress: \"nowhere:1\" is not an address (want IP, IP:PORT or off)"
        )
    );
    assert_eq!(
        err("metricsBindAddress: 1.2.3\n"),
        format!("{f}: metricsBindAddress: \"1.2.3\" is not an address (want IP, IP:PORT or off)")
    );
    assert_eq!(
        err("resyncInterval: 10 s\n"),
        format!(
            "{f}: resyncInterval: \"10 s\" is not a duration (want e.g. 10s, 500ms, 2m, or seconds)"
        )
    );
    assert_eq!(
        err("resyncInterval: [1]\n"),
        format!(
            "{f}: resyncInterval: - 1 is not a duration (want e.g. 10s, 500ms, 2m, or seconds)"
        )
    );
    assert_eq!(
        err("resyncInterval: 0.01\n"),
        format!("{f}: resyncInterval: \"0.01\" is too short (at least 100ms)")
    );
    assert_eq!(
        err("podInterfaces: ['lxc[']\n"),
        format!(
            "{f}: podInterfaces: bad glob \"lxc[\": Pattern syntax error near position 3: invalid range pattern"
        )
    );
    assert_eq!(
        err("externalInterfaces: ['']\n"),
        format!("{f}: externalInterfaces: \"\" is not an interface name")
    );
    assert_eq!(
        err("logging:\n  format: xml\n"),
        format!("{f}: logging.format: unknown log format \"xml\" (want text or json)")
    );
    assert_eq!(
        err("nodePortAddresses: [primary, 10.0.0.0/8]\n"),
        format!("{f}: nodePortAddresses: \"primary\" cannot be combined with CIDRs")
    );
    assert_eq!(
        err("kubeconfig: /a\nmanifests: /b\n"),
        format!("{f}: kubeconfig and manifests exclude each other")
    );
    assert!(
        err("logging:\n  verbosity: loud\n").starts_with(&format!(
            "{f}: logging.verbosity: invalid type: string \"loud\", expected u32"
        )),
        "{}",
        err("logging:\n  verbosity: loud\n")
    );
}

#[test]
fn unknown_kinds_are_refused() {
    assert_eq!(
        parse_err("x.yaml", "apiVersion: v1\nkind: ConfigMap\n"),
        "x.yaml: unknown configuration apiVersion \"v1\", kind \"ConfigMap\" (want \
         podlb.io/v1alpha1 AgentConfiguration, or kubeproxy.config.k8s.io/v1alpha1 \
         KubeProxyConfiguration)"
    );
    assert_eq!(
        parse_err(
            "x.yaml",
            "apiVersion: podlb.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        ),
        "x.yaml: unknown configuration apiVersion \"podlb.io/v1alpha1\", kind \
         \"KubeProxyConfiguration\" (want podlb.io/v1alpha1 AgentConfiguration, or \
         kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration)"
    );
    assert_eq!(
        parse_err("x.yaml", "nodeName: a\n"),
        "x.yaml: unknown configuration apiVersion \"\", kind \"\" (want podlb.io/v1alpha1 \
         AgentConfiguration, or kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration)"
    );
    assert_eq!(
        parse_err("x.yaml", "- a\n"),
        "x.yaml: not a configuration (want a mapping with apiVersion and kind)"
    );
    assert!(parse_err("x.yaml", "a: [\n").starts_with("x.yaml: not a YAML document: "));
}

/// What kubeadm writes to /var/lib/kube-proxy/config.conf (every field, most at their zero
/// values), with a few set.
const KUBEADM: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: \"\"
  burst: 0
  contentType: \"\"
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: \"\"
  interfaceNamePrefix: \"\"
detectLocalMode: \"\"
enableProfiling: false
healthzBindAddress: \"\"
hostnameOverride: \"\"
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: \"\"
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
    text:
      infoBufferSize: \"0\"
  verbosity: 0
metricsBindAddress: \"\"
mode: \"\"
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: \"\"
showHiddenMetricsForVersion: \"\"
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: \"\"
  rootHnsEndpointName: \"\"
  sourceVip: \"\"
";

#[test]
fn kubeadm_kube_proxy_configuration() {
    let p = parse("/var/lib/kube-proxy/config.conf", KUBEADM);
    assert_eq!(
        p.settings,
        Settings {
            source: Some(SourceSetting::Kubeconfig(
                "/var/lib/kube-proxy/kubeconfig.conf".into()
            )),
            cluster_cidrs: Some(vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap()
            ]),
            ..Settings::default()
        }
    );
    // Only bindAddress is set among the fields podlb ignores.
    assert_eq!(
        p.warning.as_deref(),
        Some(
            "/var/lib/kube-proxy/config.conf: KubeProxyConfiguration fields that podlb ignores: \
             bindAddress"
        )
    );
}

#[test]
fn kube_proxy_fields_that_carry_over() {
    let p = parse(
        "kp.conf",
        &format!(
            "{KP_HEAD}healthzBindAddress: 0.0.0.0
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: fd00:10:244::/56
nodePortAddresses: [primary]
hostnameOverride: node-3
clientConnection:
  kubeconfig: /k.conf
logging:
  format: json
  verbosity: 5
"
        ),
    );
    assert_eq!(p.warning, None);
    assert_eq!(
        p.settings,
        Settings {
            source: Some(SourceSetting::Kubeconfig("/k.conf".into())),
            node_name: Some("node-3".into()),
            healthz_addr: Some(Some(sa("0.0.0.0:10256"))),
            metrics_addr: Some(Some(sa("127.0.0.1:10249"))),
            cluster_cidrs: Some(vec!["fd00:10:244::/56".parse().unwrap()]),
            nodeport_addresses: Some(NodePortAddresses::Primary),
            log_format: Some(LogFormat::Json),
            verbosity: Some(5),
            ..Settings::default()
        }
    );
}

#[test]
fn kube_proxy_ignored_fields_named_in_one_warning() {
    let p = parse(
        "kp.conf",
        &format!(
            "{KP_HEAD}mode: ipvs
featureGates: {{Foo: true}}
iptables:
  masqueradeAll: true
  syncPeriod: 30s
ipvs:
  scheduler: rr
conntrack:
  maxPerCore: 32768
  tcpEstablishedTimeout: 24h
clusterCIDR: 10.244.0.0/16
"
        ),
    );
    assert_eq!(
        p.warning.as_deref(),
        Some(
            "kp.conf: KubeProxyConfiguration fields that podlb ignores: mode, featureGates, \
             iptables.masqueradeAll, iptables.syncPeriod, ipvs.scheduler, conntrack.maxPerCore, \
             conntrack.tcpEstablishedTimeout (conntrack: not implemented yet)"
        )
    );
    assert_eq!(
        p.settings.cluster_cidrs,
        Some(vec!["10.244.0.0/16".parse().unwrap()])
    );
}

#[test]
fn kube_proxy_errors() {
    let err = |body: &str| parse_err("kp.conf", &format!("{KP_HEAD}{body}"));
    assert_eq!(
        err("modes: ipvs\n"),
        "kp.conf: unknown field `modes` (not in KubeProxyConfiguration \
         kubeproxy.config.k8s.io/v1alpha1)"
    );
    assert_eq!(
        err("iptables:\n  masqueradeAl: true\n"),
        "kp.conf: unknown field `iptables.masqueradeAl` (not in KubeProxyConfiguration \
         kubeproxy.config.k8s.io/v1alpha1)"
    );
    assert_eq!(
        err("logging:\n  options:\n    yaml: {}\n"),
        "kp.conf: unknown field `logging.options.yaml` (not in KubeProxyConfiguration \
         kubeproxy.config.k8s.io/v1alpha1)"
    );
    assert_eq!(
        err("conntrack: 5\n"),
        "kp.conf: conntrack: want a mapping of fields"
    );
    assert_eq!(
        err("clusterCIDR: 10.0.0.0/8,10.1.0.0/16\n"),
        "kp.conf: clusterCIDR: two IPv4 CIDRs (10.0.0.0/8 and 10.1.0.0/16); at most one per \
         family"
    );
    assert_eq!(
        err("healthzBindAddress: 0.0.0.0:http\n"),
        "kp.conf: healthzBindAddress: \"0.0.0.0:http\" is not an address (want IP, IP:PORT or \
         off)"
    );
    assert_eq!(
        err("metricsBindAddress: 7\n"),
        "kp.conf: metricsBindAddress: want a string"
    );
    assert_eq!(
        err("nodePortAddresses: 10.0.0.0/8\n"),
        "kp.conf: nodePortAddresses: want a list of strings"
    );
    assert_eq!(
        err("nodePortAddresses: [10.0.0.0/40]\n"),
        "kp.conf: nodePortAddresses: \"10.0.0.0/40\": the prefix length must be 0 to 32"
    );
    assert_eq!(
        err("logging:\n  format: xml\n"),
        "kp.conf: logging.format: unknown log format \"xml\" (want text or json)"
    );
    assert_eq!(
        err("logging:\n  verbosity: -1\n"),
        "kp.conf: logging.verbosity: want a number from 0"
    );
}
