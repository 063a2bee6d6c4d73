//! `podlb agent`'s flags: podlb's own and kube-proxy's names for the same settings, `--config`
//! and `--print-config`. A flag that is given overrides every file; one that is not leaves the
//! files' setting (or the default).
use std::path::PathBuf;

use anyhow::{anyhow, Result};

use super::values::{self, HEALTHZ_PORT, METRICS_PORT};
use super::{Settings, SourceSetting};

#[derive(clap::Args, Debug, Default)]
pub struct AgentArgs {
    /// Configuration file: podlb.io/v1alpha1 AgentConfiguration, or kube-proxy's
    /// kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration (repeatable: later files
    /// override earlier ones, flags override all files).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Validate the configuration, print it (merged, with defaults) as an AgentConfiguration
    /// on stdout, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Kubeconfig for the kubernetes source (default: in-cluster config).
    #[arg(long, conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// Read Services, EndpointSlices and Nodes from YAML files in DIR (live).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// This node's name (default: $NODE_NAME, then the hostname).
    #[arg(long, visible_alias = "hostname-override", value_name = "NAME")]
    pub node_name: Option<String>,
    /// External interface (repeatable).
    #[arg(long = "external-interface", value_name = "IFACE")]
    pub external_interfaces: Vec<String>,
    /// Glob for host-side pod interfaces, e.g. 'veth*' (repeatable).
    #[arg(long = "pod-interface", value_name = "GLOB")]
    pub pod_interfaces: Vec<String>,
    /// The pin directory on a bpffs [default: /sys/fs/bpf/podlb].
    #[arg(long, value_name = "DIR")]
    pub bpf_root: Option<PathBuf>,
    /// Serve /healthz and /livez here: IP:PORT, or IP for port 10256; "off" to disable
    /// [default: 0.0.0.0:10256].
    #[arg(long, visible_alias = "healthz-bind-address", value_name = "ADDR")]
    pub healthz_addr: Option<String>,
    /// Serve Prometheus /metrics here: IP:PORT, or IP for port 10249; "off" to disable
    /// [default: 127.0.0.1:10249].
    #[arg(long, visible_alias = "metrics-bind-address", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Re-read the maps, repair what changed behind the agent's back, and re-sync this often:
    /// seconds (fractions allowed) or a duration such as 10s, 500ms, 2m [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub resync_interval: Option<String>,
    /// The pods' address ranges, comma-separated, at most one per family: traffic to a
    /// ClusterIP from outside them is masqueraded.
    #[arg(long, value_name = "CIDRS")]
    pub cluster_cidr: Option<String>,
    /// Node addresses NodePorts are served on: "primary" (the node's primary address of each
    /// family), or comma-separated CIDRs (the node's addresses within them) [default: the Node
    /// object's InternalIP/ExternalIP addresses, else the external interfaces'].
    #[arg(long, value_name = "primary|CIDRS")]
    pub nodeport_addresses: Option<String>,
    /// Log verbosity: 0 to 2 info, 3 and 4 debug, 5 and up trace ($PODLB_LOG, when set, wins).
    #[arg(short = 'v', long = "v", value_name = "N")]
    pub verbosity: Option<u32>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl AgentArgs {
    /// What the flags set, validated; an error names the flag.
    pub fn settings(&self) -> Result<Settings> {
        let err = |flag: &str, e: String| anyhow!("{flag}: {e}");
        let source = match (&self.kubeconfig, &self.manifests) {
            (Some(k), _) => Some(SourceSetting::Kubeconfig(k.clone())),
            (None, Some(m)) => Some(SourceSetting::Manifests(m.clone())),
            (None, None) => None,
        };
        for i in &self.external_interfaces {
            values::interface_name(i).map_err(|e| err("--external-interface", e))?;
        }
        for g in &self.pod_interfaces {
            values::glob(g).map_err(|e| err("--pod-interface", e))?;
        }
        // "" turns a server off, as "off" does (as it always did).
        let addr = |flag: &str, v: &Option<String>, port: u16| {
            v.as_deref()
                .map(|s| match s {
                    "" => Ok(None),
                    s => values::listen_addr(s, port).map_err(|e| err(flag, e)),
                })
                .transpose()
        };
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Ok(Settings {
            source,
            node_name: self.node_name.clone().filter(|n| !n.is_empty()),
            external_interfaces: list(&self.external_interfaces),
            pod_interfaces: list(&self.pod_interfaces),
            bpf_root: self.bpf_root.clone(),
            healthz_addr: addr("--healthz-addr", &self.healthz_addr, HEALTHZ_PORT)?,
            metrics_addr: addr("--metrics-addr", &self.metrics_addr, METRICS_PORT)?,
            resync_interval: self
                .resync_interval
                .as_deref()
                .map(|s| values::resync_interval(s).map_err(|e| err("--resync-interval", e)))
                .transpose()?,
            cluster_cidrs: self
                .cluster_cidr
                .as_deref()
                .map(|s| values::cluster_cidrs(s).map_err(|e| err("--cluster-cidr", e)))
                .transpose()?,
            nodeport_addresses: self
                .nodeport_addresses
                .as_deref()
                .map(|s| {
                    let items: Vec<&str> = s.split(',').collect();
                    values::nodeport_addresses(&items).map_err(|e| err("--nodeport-addresses", e))
                })
                .transpose()?,
            log_format: self
                .log_format
                .as_deref()
                .map(|f| values::LogFormat::parse(f).map_err(|e| err("--log-format", e)))
                .transpose()?,
            verbosity: self.verbosity,
        })
    }
}
