//! The agent's configuration, in kube-proxy's terms: `podlb agent`'s flags ([`AgentArgs`]) and
//! any number of configuration files (`--config FILE`, repeatable), each either podlb's own
//! `AgentConfiguration` or kube-proxy's `KubeProxyConfiguration`.
//!
//! Every source is read into a [`Settings`] layer, which holds only what that source sets; the
//! layers are stacked in order (the files as given, then the flags on top: a later layer's
//! setting replaces an earlier one's), and the defaults fill in what no layer set. Every value
//! is validated as its layer is read, so an error names the flag, or the file and the field,
//! and the reason; nothing is started before the whole configuration is good.
//!
//! The parts: `values` parses (and writes back) the values; `file` reads a file (and writes the
//! effective configuration as an `AgentConfiguration`); `kubeproxy` reads a
//! `KubeProxyConfiguration`; `flags` holds the flags. This module stacks the layers and resolves
//! the result into the [`AgentConfig`] the agent runs with. All of it is pure but
//! [`load`], which reads the files, the environment and the hostname.
mod file;
mod flags;
mod kubeproxy;
#[cfg(test)]
mod tests;
pub mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_yaml::Value;

use crate::agent::{AgentConfig, SourceConfig};
use crate::types::{Cidr, NodePortAddresses};
pub use file::{effective_yaml, AgentConfiguration};
pub use flags::AgentArgs;
pub use values::LogFormat;

/// The defaults of what no layer sets.
pub const DEFAULT_BPF_ROOT: &str = "/sys/fs/bpf/podlb";
pub const DEFAULT_HEALTHZ: &str = "0.0.0.0:10256";
pub const DEFAULT_METRICS: &str = "127.0.0.1:10249";
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(10);

/// Where the objects come from, as one layer sets it (no layer: the in-cluster config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSetting {
    Kubeconfig(PathBuf),
    Manifests(PathBuf),
}

/// What one source (a file, or the flags) sets; None: this source leaves it as it was.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub source: Option<SourceSetting>,
    pub node_name: Option<String>,
    pub external_interfaces: Option<Vec<String>>,
    /// Globs, validated.
    pub pod_interfaces: Option<Vec<String>>,
    pub bpf_root: Option<PathBuf>,
    /// Some(None): no health server.
    pub healthz_addr: Option<Option<SocketAddr>>,
    /// Some(None): no metrics server.
    pub metrics_addr: Option<Option<SocketAddr>>,
    pub resync_interval: Option<Duration>,
    pub cluster_cidrs: Option<Vec<Cidr>>,
    pub nodeport_addresses: Option<NodePortAddresses>,
    pub log_format: Option<LogFormat>,
    pub verbosity: Option<u32>,
}

impl Settings {
    /// `over` stacked on `self`: what `over` sets replaces what `self` set.
    pub fn overlay(self, over: Settings) -> Settings {
        Settings {
            source: over.source.or(self.source),
            node_name: over.node_name.or(self.node_name),
            external_interfaces: over.external_interfaces.or(self.external_interfaces),
            pod_interfaces: over.pod_interfaces.or(self.pod_interfaces),
            bpf_root: over.bpf_root.or(self.bpf_root),
            healthz_addr: over.healthz_addr.or(self.healthz_addr),
            metrics_addr: over.metrics_addr.or(self.metrics_addr),
            resync_interval: over.resync_interval.or(self.resync_interval),
            cluster_cidrs: over.cluster_cidrs.or(self.cluster_cidrs),
            nodeport_addresses: over.nodeport_addresses.or(self.nodeport_addresses),
            log_format: over.log_format.or(self.log_format),
            verbosity: over.verbosity.or(self.verbosity),
        }
    }
}

/// What one file sets, and the warning to log about it (a kube-proxy file's fields that podlb
/// ignores).
#[derive(Debug)]
pub struct Parsed {
    pub settings: Settings,
    pub warning: Option<String>,
}

/// Reads the configuration file `name` (for messages) with contents `text`, of the kind its
/// `apiVersion` and `kind` say.
pub fn parse_file(name: &str, text: &str) -> Result<Parsed> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| anyhow!("{name}: not a YAML document: {e}"))?;
    let Value::Mapping(map) = &doc else {
        bail!("{name}: not a configuration (want a mapping with apiVersion and kind)");
    };
    let field = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("");
    match (field("apiVersion"), field("kind")) {
        (file::API_VERSION, file::KIND) => Ok(Parsed {
            settings: file::parse(name, text)?,
            warning: None,
        }),
        (kubeproxy::API_VERSION, kubeproxy::KIND) => kubeproxy::parse(name, map),
        (api_version, kind) => bail!(
            "{name}: unknown configuration apiVersion {api_version:?}, kind {kind:?} (want \
             {} {}, or {} {})",
            file::API_VERSION,
            file::KIND,
            kubeproxy::API_VERSION,
            kubeproxy::KIND
        ),
    }
}

/// How the agent logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logging {
    pub format: LogFormat,
    /// klog's verbosity (`-v`); see [`values::verbosity_filter`].
    pub verbosity: u32,
}

/// The configuration the agent runs with, and what to say about it once logging is set up.
pub struct Loaded {
    pub agent: AgentConfig,
    pub logging: Logging,
    /// One line per file with fields podlb reads but does not implement (a kube-proxy file's).
    pub warnings: Vec<String>,
}

/// Reads the files of `--config` in order, stacks the flags on them, and resolves the result;
/// the node name defaults to `$NODE_NAME`, then the hostname.
pub fn load(args: &AgentArgs) -> Result<Loaded> {
    let mut layers = Vec::new();
    let mut warnings = Vec::new();
    for path in &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("--config {}: cannot read it: {e}", path.display()))?;
        let parsed = parse_file(&path.display().to_string(), &text)?;
        warnings.extend(parsed.warning);
        layers.push(parsed.settings);
    }
    layers.push(args.settings()?);
    let env_node_name = std::env::var("NODE_NAME").ok();
    let (agent, logging) = resolve(layers, env_node_name, hostname)?;
    Ok(Loaded {
        agent,
        logging,
        warnings,
    })
}

/// Stacks `layers` (first the lowest) and fills in the defaults: the node name from
/// `env_node_name` (unless empty), else `hostname()`.
pub fn resolve(
    layers: Vec<Settings>,
    env_node_name: Option<String>,
    hostname: impl FnOnce() -> Result<String>,
) -> Result<(AgentConfig, Logging)> {
    let s = layers
        .into_iter()
        .fold(Settings::default(), Settings::overlay);
    let node_name = match s.node_name {
        Some(n) => n,
        None => match env_node_name.filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => hostname()?,
        },
    };
    let source = match s.source {
        None => SourceConfig::Kubernetes(None),
        Some(SourceSetting::Kubeconfig(p)) => SourceConfig::Kubernetes(Some(p)),
        Some(SourceSetting::Manifests(p)) => SourceConfig::Manifests(p),
    };
    let pod_interfaces = s
        .pod_interfaces
        .unwrap_or_default()
        .iter()
        .map(|g| values::glob(g).map_err(|e| anyhow!("pod interface: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let default_addr = |s: &str| s.parse::<SocketAddr>().ok();
    let agent = AgentConfig {
        source,
        node_name,
        external_interfaces: s.external_interfaces.unwrap_or_default(),
        pod_interfaces,
        bpf_root: s
            .bpf_root
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BPF_ROOT)),
        healthz_addr: s
            .healthz_addr
            .unwrap_or_else(|| default_addr(DEFAULT_HEALTHZ)),
        metrics_addr: s
            .metrics_addr
            .unwrap_or_else(|| default_addr(DEFAULT_METRICS)),
        resync_interval: s.resync_interval.unwrap_or(DEFAULT_RESYNC),
        cluster_cidrs: s.cluster_cidrs.unwrap_or_default(),
        nodeport_addresses: s.nodeport_addresses.unwrap_or_default(),
    };
    let logging = Logging {
        format: s.log_format.unwrap_or_default(),
        verbosity: s.verbosity.unwrap_or(0),
    };
    Ok((agent, logging))
}

fn hostname() -> Result<String> {
    let path = Path::new("/proc/sys/kernel/hostname");
    let name = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("no --node-name, no $NODE_NAME, and {}: {e}", path.display()))?;
    Ok(name.trim().to_string())
}
