//! podlb's own configuration file, `AgentConfiguration` (read strictly: an unknown field is an
//! error), and the effective configuration written back as one (`podlb agent --print-config`).
//!
//! In every file, a field that is absent, null or empty ("" or []) leaves the setting as the
//! layers below it (earlier files, the defaults) have it; `off` turns a server off.
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::values::{self, HEALTHZ_PORT, METRICS_PORT};
use super::{Loaded, Settings, SourceSetting};
use crate::agent::SourceConfig;

pub const API_VERSION: &str = "podlb.io/v1alpha1";
pub const KIND: &str = "AgentConfiguration";

/// podlb's configuration file, field by field as `podlb agent`'s flags (deploy/base/config.yaml
/// shows them all).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AgentConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<String>,
    pub node_name: Option<String>,
    pub external_interfaces: Option<Vec<String>>,
    pub pod_interfaces: Option<Vec<String>>,
    pub bpf_root: Option<String>,
    pub healthz_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    /// A duration ("10s", "500ms", "2m") or a number of seconds.
    pub resync_interval: Option<Value>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    pub node_port_addresses: Option<Vec<String>>,
    pub logging: Option<LoggingConfiguration>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoggingConfiguration {
    /// text or json.
    pub format: Option<String>,
    pub verbosity: Option<u32>,
}

/// Some(value) unless absent or empty.
fn set(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn set_list(v: Option<Vec<String>>) -> Option<Vec<String>> {
    v.filter(|l| !l.is_empty())
}

/// Reads an `AgentConfiguration` file `name` (for messages) with contents `text`.
pub(super) fn parse(name: &str, text: &str) -> Result<Settings> {
    let c: AgentConfiguration = serde_yaml::from_str(text).map_err(|e| anyhow!("{name}: {e}"))?;
    let err = |field: &str, e: String| anyhow!("{name}: {field}: {e}");
    let source = match (set(c.kubeconfig), set(c.manifests)) {
        (Some(_), Some(_)) => bail!("{name}: kubeconfig and manifests exclude each other"),
        (Some(k), None) => Some(SourceSetting::Kubeconfig(k.into())),
        (None, Some(m)) => Some(SourceSetting::Manifests(m.into())),
        (None, None) => None,
    };
    let external_interfaces = set_list(c.external_interfaces);
    for i in external_interfaces.iter().flatten() {
        values::interface_name(i).map_err(|e| err("externalInterfaces", e))?;
    }
    let pod_interfaces = set_list(c.pod_interfaces);
    for g in pod_interfaces.iter().flatten() {
        values::glob(g).map_err(|e| err("podInterfaces", e))?;
    }
    let addr = |field: &str, v: Option<String>, port: u16| {
        set(v)
            .map(|s| values::listen_addr(&s, port).map_err(|e| err(field, e)))
            .transpose()
    };
    let resync_interval = match c.resync_interval {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            Some(values::resync_interval(&s).map_err(|e| err("resyncInterval", e))?)
        }
        Some(Value::Number(n)) => {
            Some(values::resync_interval(&n.to_string()).map_err(|e| err("resyncInterval", e))?)
        }
        Some(other) => bail!(
            "{name}: resyncInterval: {} is not a duration (want e.g. 10s, 500ms, 2m, or seconds)",
            serde_yaml::to_string(&other).unwrap_or_default().trim()
        ),
    };
    let logging = c.logging.unwrap_or_default();
    Ok(Settings {
        source,
        node_name: set(c.node_name),
        external_interfaces,
        pod_interfaces,
        bpf_root: set(c.bpf_root).map(PathBuf::from),
        healthz_addr: addr("healthzBindAddress", c.healthz_bind_address, HEALTHZ_PORT)?,
        metrics_addr: addr("metricsBindAddress", c.metrics_bind_address, METRICS_PORT)?,
        resync_interval,
        cluster_cidrs: set(c.cluster_cidr)
            .map(|s| values::cluster_cidrs(&s).map_err(|e| err("clusterCIDR", e)))
            .transpose()?,
        nodeport_addresses: set_list(c.node_port_addresses)
            .map(|l| values::nodeport_addresses(&l).map_err(|e| err("nodePortAddresses", e)))
            .transpose()?,
        log_format: set(logging.format)
            .map(|f| values::LogFormat::parse(&f).map_err(|e| err("logging.format", e)))
            .transpose()?,
        verbosity: logging.verbosity,
    })
}

/// The effective configuration as an `AgentConfiguration` file: every setting, defaults
/// included, so that `--config` of it alone configures the same agent.
pub fn effective(loaded: &Loaded) -> AgentConfiguration {
    let a = &loaded.agent;
    let (kubeconfig, manifests) = match &a.source {
        SourceConfig::Kubernetes(k) => (k.as_ref().map(|p| p.display().to_string()), None),
        SourceConfig::Manifests(m) => (None, Some(m.display().to_string())),
    };
    AgentConfiguration {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        kubeconfig,
        manifests,
        node_name: Some(a.node_name.clone()),
        external_interfaces: Some(a.external_interfaces.clone()),
        pod_interfaces: Some(
            a.pod_interfaces
                .iter()
                .map(|g| g.as_str().to_string())
                .collect(),
        ),
        bpf_root: Some(a.bpf_root.display().to_string()),
        healthz_bind_address: Some(values::listen_addr_string(a.healthz_addr)),
        metrics_bind_address: Some(values::listen_addr_string(a.metrics_addr)),
        resync_interval: Some(Value::String(values::duration_string(a.resync_interval))),
        cluster_cidr: Some(values::cluster_cidrs_string(&a.cluster_cidrs)),
        node_port_addresses: Some(values::nodeport_addresses_list(&a.nodeport_addresses)),
        logging: Some(LoggingConfiguration {
            format: Some(loaded.logging.format.name().into()),
            verbosity: Some(loaded.logging.verbosity),
        }),
    }
}

/// [`effective`] as YAML.
pub fn effective_yaml(loaded: &Loaded) -> Result<String> {
    Ok(serde_yaml::to_string(&effective(loaded))?)
}
