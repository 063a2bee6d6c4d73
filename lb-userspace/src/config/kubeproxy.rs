//! kube-proxy's configuration file (`kubeproxy.config.k8s.io/v1alpha1`,
//! `KubeProxyConfiguration`), as kubeadm writes it to `/var/lib/kube-proxy/config.conf`.
//!
//! Read as kube-proxy reads it: strictly (a field that is not in the schema is an error), with
//! Go's zero values ("", 0, false, null, [], "0s") meaning "not set" (kube-proxy defaults
//! them). The fields that carry over are `healthzBindAddress`, `metricsBindAddress`
//! (each "IP:PORT" or a bare IP for the default port), `clusterCIDR`, `nodePortAddresses`,
//! `hostnameOverride`, `clientConnection.kubeconfig`, `logging.format` and
//! `logging.verbosity`; every other field that is set is named in one warning (`conntrack.*`
//! among them: read, not implemented yet).
use anyhow::{anyhow, bail, Result};
use serde_yaml::{Mapping, Value};

use super::values::{self, HEALTHZ_PORT, METRICS_PORT};
use super::{Parsed, Settings, SourceSetting};

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// A field of the schema: a value (of any type), or a struct of named fields.
enum Field {
    Value,
    Struct(&'static [(&'static str, Field)]),
}
use Field::{Struct, Value as V};

const CLIENT_CONNECTION: &[(&str, Field)] = &[
    ("kubeconfig", V),
    ("acceptContentTypes", V),
    ("contentType", V),
    ("qps", V),
    ("burst", V),
];
const LOG_STREAM: &[(&str, Field)] = &[("splitStream", V), ("infoBufferSize", V)];
const LOG_OPTIONS: &[(&str, Field)] = &[("json", Struct(LOG_STREAM)), ("text", Struct(LOG_STREAM))];
const LOGGING: &[(&str, Field)] = &[
    ("format", V),
    ("flushFrequency", V),
    ("verbosity", V),
    ("vmodule", V),
    ("options", Struct(LOG_OPTIONS)),
];
const IPTABLES: &[(&str, Field)] = &[
    ("masqueradeBit", V),
    ("masqueradeAll", V),
    ("localhostNodePorts", V),
    ("syncPeriod", V),
    ("minSyncPeriod", V),
];
const IPVS: &[(&str, Field)] = &[
    ("syncPeriod", V),
    ("minSyncPeriod", V),
    ("scheduler", V),
    ("excludeCIDRs", V),
    ("strictARP", V),
    ("tcpTimeout", V),
    ("tcpFinTimeout", V),
    ("udpTimeout", V),
];
const NFTABLES: &[(&str, Field)] = &[
    ("masqueradeBit", V),
    ("masqueradeAll", V),
    ("syncPeriod", V),
    ("minSyncPeriod", V),
];
const WINKERNEL: &[(&str, Field)] = &[
    ("networkName", V),
    ("sourceVip", V),
    ("enableDSR", V),
    ("rootHnsEndpointName", V),
    ("forwardHealthCheckVip", V),
];
const DETECT_LOCAL: &[(&str, Field)] = &[("bridgeInterface", V), ("interfaceNamePrefix", V)];
const CONNTRACK: &[(&str, Field)] = &[
    ("maxPerCore", V),
    ("min", V),
    ("tcpEstablishedTimeout", V),
    ("tcpCloseWaitTimeout", V),
    ("tcpBeLiberal", V),
    ("udpTimeout", V),
    ("udpStreamTimeout", V),
];
/// KubeProxyConfiguration v1alpha1 (Kubernetes 1.29 to 1.34).
const SCHEMA: &[(&str, Field)] = &[
    ("apiVersion", V),
    ("kind", V),
    ("featureGates", V),
    ("clientConnection", Struct(CLIENT_CONNECTION)),
    ("logging", Struct(LOGGING)),
    ("hostnameOverride", V),
    ("bindAddress", V),
    ("healthzBindAddress", V),
    ("metricsBindAddress", V),
    ("bindAddressHardFail", V),
    ("enableProfiling", V),
    ("showHiddenMetricsForVersion", V),
    ("serviceProxyName", V),
    ("mode", V),
    ("iptables", Struct(IPTABLES)),
    ("ipvs", Struct(IPVS)),
    ("nftables", Struct(NFTABLES)),
    ("winkernel", Struct(WINKERNEL)),
    ("detectLocalMode", V),
    ("detectLocal", Struct(DETECT_LOCAL)),
    ("clusterCIDR", V),
    ("nodePortAddresses", V),
    ("oomScoreAdj", V),
    ("conntrack", Struct(CONNTRACK)),
    ("configSyncPeriod", V),
    ("portRange", V),
    ("windowsRunAsService", V),
];

/// The fields podlb takes over.
const USED: &[&str] = &[
    "healthzBindAddress",
    "metricsBindAddress",
    "clusterCIDR",
    "nodePortAddresses",
    "hostnameOverride",
    "clientConnection.kubeconfig",
    "logging.format",
    "logging.verbosity",
];

/// Collects the values of `map` by dotted path, checking every key against `schema`.
fn walk<'a>(
    name: &str,
    prefix: &str,
    map: &'a Mapping,
    schema: &[(&str, Field)],
    out: &mut Vec<(String, &'a Value)>,
) -> Result<()> {
    for (k, v) in map {
        let key = k.as_str().unwrap_or("");
        let path = match prefix {
            "" => key.to_string(),
            p => format!("{p}.{key}"),
        };
        let Some((_, field)) = schema.iter().find(|(n, _)| *n == key) else {
            bail!("{name}: unknown field `{path}` (not in {KIND} {API_VERSION})");
        };
        match (field, v) {
            (V, v) => out.push((path, v)),
            (Struct(_), Value::Null) => {}
            (Struct(inner), Value::Mapping(m)) => walk(name, &path, m, inner, out)?,
            (Struct(_), _) => bail!("{name}: {path}: want a mapping of fields"),
        }
    }
    Ok(())
}

/// Go's zero value: kube-proxy's "not set".
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => matches!(s.as_str(), "" | "0" | "0s"),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        Value::Tagged(_) => false,
    }
}

fn string<'a>(name: &str, path: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| anyhow!("{name}: {path}: want a string"))
}

/// Reads a `KubeProxyConfiguration` document (`map`) of the file `name`.
pub(super) fn parse(name: &str, map: &Mapping) -> Result<Parsed> {
    let mut fields = Vec::new();
    walk(name, "", map, SCHEMA, &mut fields)?;
    let mut s = Settings::default();
    let mut ignored = Vec::new();
    for (path, v) in fields {
        if path == "apiVersion" || path == "kind" || is_zero(v) {
            continue;
        }
        if !USED.contains(&path.as_str()) {
            ignored.push(path);
            continue;
        }
        let err = |e: String| anyhow!("{name}: {path}: {e}");
        match path.as_str() {
            "healthzBindAddress" => {
                let a = string(name, &path, v)?;
                s.healthz_addr = Some(values::listen_addr(a, HEALTHZ_PORT).map_err(err)?);
            }
            "metricsBindAddress" => {
                let a = string(name, &path, v)?;
                s.metrics_addr = Some(values::listen_addr(a, METRICS_PORT).map_err(err)?);
            }
            "clusterCIDR" => {
                let c = string(name, &path, v)?;
                s.cluster_cidrs = Some(values::cluster_cidrs(c).map_err(err)?);
            }
            "nodePortAddresses" => {
                let list: Vec<String> = serde_yaml::from_value(v.clone())
                    .map_err(|_| anyhow!("{name}: {path}: want a list of strings"))?;
                s.nodeport_addresses = Some(values::nodeport_addresses(&list).map_err(err)?);
            }
            "hostnameOverride" => s.node_name = Some(string(name, &path, v)?.to_string()),
            "clientConnection.kubeconfig" => {
                let k = string(name, &path, v)?;
                s.source = Some(SourceSetting::Kubeconfig(k.into()));
            }
            "logging.format" => {
                let f = string(name, &path, v)?;
                s.log_format = Some(values::LogFormat::parse(f).map_err(err)?);
            }
            "logging.verbosity" => {
                let n = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| anyhow!("{name}: {path}: want a number from 0"))?;
                s.verbosity = Some(n);
            }
            _ => unreachable!("every used field is read"),
        }
    }
    let warning = (!ignored.is_empty()).then(|| {
        let conntrack = match ignored.iter().any(|f| f.starts_with("conntrack.")) {
            true => " (conntrack: not implemented yet)",
            false => "",
        };
        format!(
            "{name}: {KIND} fields that podlb ignores: {}{conntrack}",
            ignored.join(", ")
        )
    });
    Ok(Parsed {
        settings: s,
        warning,
    })
}
