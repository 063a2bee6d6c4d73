//! A rendered DaemonSet's container, read from the YAML (`kubectl kustomize deploy/base`) and
//! turned into a `podman run` command line that gives the container what kubelet would: the
//! image, command and args, env (the downward API's `spec.nodeName`), the securityContext
//! (capabilities, privileged, seccomp, no_new_privs, read-only root, user), the volumes
//! (hostPath, and ConfigMaps as files) with their mount propagation, and the host network.
//!
//! Nothing is restated: what the test runs is what the YAML says. A field this module does
//! not know how to give the container is an error naming it, so that a new field in
//! deploy/ cannot be silently left out of the proof. [`podman`] runs the result.
//!
//! The parse and the command line are pure ([`PodSpec::from_rendered`], [`PodSpec::podman_args`]);
//! only [`podman`] runs anything.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_yaml::Value;

pub mod podman;

#[cfg(test)]
mod tests;

/// An environment variable of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Env {
    Value(String, String),
    /// `valueFrom.fieldRef.fieldPath`.
    Field(String, String),
}

/// Where a volume's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A hostPath volume: the path on the node and its `type` ("" when not given).
    HostPath { path: String, kind: String },
    /// A ConfigMap volume: its name and its data (file name to content).
    ConfigMap {
        name: String,
        data: BTreeMap<String, String>,
    },
}

/// A volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub mount_path: String,
    pub read_only: bool,
    /// `mountPropagation`: None, HostToContainer or Bidirectional ("" when not given).
    pub propagation: String,
    pub source: Source,
}

/// An HTTP probe: path and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub path: String,
    pub port: u16,
}

/// The one container of a DaemonSet's pod template, with what the pod gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub daemonset: String,
    pub container: String,
    pub image: String,
    /// `command` (empty: the image's entrypoint).
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<Env>,
    pub host_network: bool,
    pub service_account: Option<String>,
    pub privileged: bool,
    pub allow_privilege_escalation: Option<bool>,
    pub read_only_root: bool,
    pub run_as_user: Option<u32>,
    /// `seccompProfile.type` of the container (else the pod's); None: not set.
    pub seccomp: Option<String>,
    /// Capability names as Kubernetes spells them (`NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub mounts: Vec<Mount>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub termination_grace_seconds: Option<u32>,
}

/// What stands for the node when the container runs: the network namespace that is its host
/// network, its name (`spec.nodeName`), where each hostPath is, the directory ConfigMap
/// volumes are written to, and what kubelet adds to every pod.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The network namespace of `hostNetwork: true` (`/run/netns/NAME`).
    pub netns: PathBuf,
    pub node_name: String,
    /// hostPath path on a real node → the directory that stands for it here.
    pub host_paths: BTreeMap<String, PathBuf>,
    /// ConfigMap volumes are written to `{configmaps}/{volume}/`.
    pub configmaps: PathBuf,
    /// The service-account directory kubelet mounts at
    /// /var/run/secrets/kubernetes.io/serviceaccount (token, ca.crt, namespace).
    pub service_account_dir: Option<PathBuf>,
    /// Environment kubelet injects (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT).
    pub kubelet_env: Vec<(String, String)>,
}

/// Where kubelet mounts the service account's token, CA and namespace.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The pod-template fields given to the container, and those that have no meaning for one
/// container on one node (scheduling, DNS, ports, resource requests): both are accepted.
const POD_FIELDS: &[&str] = &[
    "containers",
    "volumes",
    "hostNetwork",
    "serviceAccountName",
    "securityContext",
    "terminationGracePeriodSeconds",
    // Scheduling and DNS: nothing to give one container on one node.
    "dnsPolicy",
    "priorityClassName",
    "tolerations",
    "nodeSelector",
    "affinity",
];
const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "env",
    "securityContext",
    "volumeMounts",
    "livenessProbe",
    "readinessProbe",
    // Pulling, declared ports and requests: no effect on what the container can do.
    "imagePullPolicy",
    "ports",
    "resources",
    "terminationMessagePolicy",
];
const SECURITY_FIELDS: &[&str] = &[
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "runAsUser",
    "seccompProfile",
    "capabilities",
];

impl PodSpec {
    /// The container of DaemonSet `daemonset` in `rendered` (the multi-document YAML of
    /// `kubectl kustomize`), with its ConfigMap volumes' data from the same documents.
    pub fn from_rendered(rendered: &str, daemonset: &str) -> Result<PodSpec> {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(rendered)
            .map(Value::deserialize)
            .collect::<Result<_, _>>()
            .context("the rendered manifests are not YAML")?;
        let kind_named = |kind: &str, name: &str| {
            docs.iter().find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
        };
        let ds = kind_named("DaemonSet", daemonset)
            .ok_or_else(|| anyhow!("no DaemonSet {daemonset:?} in the rendered manifests"))?;
        let at = format!("DaemonSet {daemonset}");
        let pod = &ds["spec"]["template"]["spec"];
        only_known(pod, POD_FIELDS, &format!("{at}: spec.template.spec"))?;
        if let Some(ic) = pod.get("initContainers") {
            bail!("{at}: initContainers ({ic:?}) are not emulated");
        }
        let containers = pod["containers"]
            .as_sequence()
            .ok_or_else(|| anyhow!("{at}: spec.template.spec.containers is not a list"))?;
        let [c] = containers.as_slice() else {
            bail!(
                "{at}: want exactly one container, found {}",
                containers.len()
            );
        };
        let cname = str_field(c, "name", &at)?;
        let at = format!("{at}: container {cname}");
        only_known(c, CONTAINER_FIELDS, &at)?;
        let sc = &c["securityContext"];
        only_known(sc, SECURITY_FIELDS, &format!("{at}: securityContext"))?;
        if let Some(psc) = pod.get("securityContext") {
            only_known(
                psc,
                &["seccompProfile"],
                &format!("{at}: pod securityContext"),
            )?;
        }
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or_else(|| pod["securityContext"]["seccompProfile"]["type"].as_str())
            .map(str::to_string);

        let volumes = pod["volumes"].as_sequence().cloned().unwrap_or_default();
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_sequence().cloned().unwrap_or_default() {
            let vname = str_field(&m, "name", &at)?;
            let mat = format!("{at}: volumeMount {vname}");
            only_known(
                &m,
                &["name", "mountPath", "readOnly", "mountPropagation"],
                &mat,
            )?;
            let v = volumes
                .iter()
                .find(|v| v["name"].as_str() == Some(vname.as_str()))
                .ok_or_else(|| anyhow!("{mat}: no volume of that name"))?;
            let source = if let Some(hp) = v.get("hostPath") {
                Source::HostPath {
                    path: str_field(hp, "path", &mat)?,
                    kind: hp["type"].as_str().unwrap_or("").to_string(),
                }
            } else if let Some(cm) = v.get("configMap") {
                only_known(cm, &["name"], &format!("{mat}: configMap"))?;
                let name = str_field(cm, "name", &mat)?;
                let obj = kind_named("ConfigMap", &name)
                    .ok_or_else(|| anyhow!("{mat}: ConfigMap {name:?} is not in the manifests"))?;
                let data = serde_yaml::from_value(obj["data"].clone())
                    .with_context(|| format!("{mat}: ConfigMap {name} data"))?;
                Source::ConfigMap { name, data }
            } else {
                bail!("{mat}: only hostPath and configMap volumes are emulated, not {v:?}");
            };
            mounts.push(Mount {
                volume: vname,
                mount_path: str_field(&m, "mountPath", &mat)?,
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                propagation: m["mountPropagation"].as_str().unwrap_or("").to_string(),
                source,
            });
        }

        let mut env = Vec::new();
        for e in c["env"].as_sequence().cloned().unwrap_or_default() {
            let name = str_field(&e, "name", &at)?;
            if let Some(v) = e["value"].as_str() {
                env.push(Env::Value(name, v.to_string()));
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                env.push(Env::Field(name, path.to_string()));
            } else {
                bail!("{at}: env {name}: only value and valueFrom.fieldRef are emulated");
            }
        }

        let ports: BTreeMap<String, u16> = c["ports"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["containerPort"].as_u64()? as u16,
                ))
            })
            .collect();
        let probe = |field: &str| -> Result<Option<Probe>> {
            let p = &c[field];
            if p.is_null() {
                return Ok(None);
            }
            let get = &p["httpGet"];
            let path = str_field(get, "path", &format!("{at}: {field}.httpGet"))?;
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(name) => ports.get(name).copied(),
                _ => None,
            }
            .ok_or_else(|| anyhow!("{at}: {field}.httpGet.port {:?} is not a port", get["port"]))?;
            Ok(Some(Probe { path, port }))
        };

        Ok(PodSpec {
            daemonset: daemonset.to_string(),
            container: cname,
            image: str_field(c, "image", &at)?,
            command: strings(&c["command"], &format!("{at}: command"))?,
            args: strings(&c["args"], &format!("{at}: args"))?,
            env,
            host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
            service_account: pod["serviceAccountName"].as_str().map(str::to_string),
            privileged: sc["privileged"].as_bool().unwrap_or(false),
            allow_privilege_escalation: sc["allowPrivilegeEscalation"].as_bool(),
            read_only_root: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
            run_as_user: sc["runAsUser"].as_u64().map(|u| u as u32),
            seccomp,
            cap_add: strings(
                &sc["capabilities"]["add"],
                &format!("{at}: capabilities.add"),
            )?,
            cap_drop: strings(
                &sc["capabilities"]["drop"],
                &format!("{at}: capabilities.drop"),
            )?,
            mounts,
            liveness: probe("livenessProbe")?,
            readiness: probe("readinessProbe")?,
            termination_grace_seconds: pod["terminationGracePeriodSeconds"]
                .as_u64()
                .map(|s| s as u32),
        })
    }

    /// The ConfigMap volumes' files: (path under [`Host::configmaps`], content).
    pub fn configmap_files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for m in &self.mounts {
            if let Source::ConfigMap { data, .. } = &m.source {
                for (file, text) in data {
                    out.push((Path::new(&m.volume).join(file), text.clone()));
                }
            }
        }
        out
    }

    /// `podman run` arguments after `run` and before the image: the container `name`,
    /// detached, on `host`. The image and the args follow, see [`PodSpec::podman_args`].
    pub fn podman_options(&self, name: &str, host: &Host) -> Result<Vec<String>> {
        let at = format!("DaemonSet {}: container {}", self.daemonset, self.container);
        let mut o: Vec<String> = vec!["--name".into(), name.into(), "--pull=never".into()];
        if !self.host_network {
            bail!(
                "{at}: only hostNetwork pods are emulated (the node namespace is the host network)"
            );
        }
        o.push(format!("--network=ns:{}", host.netns.display()));
        if self.privileged {
            o.push("--privileged".into());
        }
        for c in &self.cap_drop {
            o.push(format!("--cap-drop={}", podman_cap(c)));
        }
        for c in &self.cap_add {
            o.push(format!("--cap-add={}", podman_cap(c)));
        }
        // kubelet runs a container unconfined unless a profile is asked for.
        match self.seccomp.as_deref() {
            None | Some("Unconfined") => o.push("--security-opt=seccomp=unconfined".into()),
            Some("RuntimeDefault") => {}
            Some(other) => bail!("{at}: seccompProfile type {other:?} is not emulated"),
        }
        if self.allow_privilege_escalation == Some(false) {
            o.push("--security-opt=no-new-privileges".into());
        }
        if self.read_only_root {
            // Kubernetes mounts no tmpfs on /tmp or /run of a read-only root; podman would.
            o.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if let Some(u) = self.run_as_user {
            o.push(format!("--user={u}"));
        }
        if let Some(s) = self.termination_grace_seconds {
            o.push(format!("--stop-timeout={s}"));
        }
        for e in &self.env {
            let (k, v) = match e {
                Env::Value(k, v) => (k, v.clone()),
                Env::Field(k, f) if f == "spec.nodeName" => (k, host.node_name.clone()),
                Env::Field(k, f) => bail!("{at}: env {k}: fieldRef {f} is not emulated"),
            };
            o.push(format!("--env={k}={v}"));
        }
        for (k, v) in &host.kubelet_env {
            o.push(format!("--env={k}={v}"));
        }
        for m in &self.mounts {
            let src = match &m.source {
                Source::HostPath { path, .. } => {
                    host.host_paths.get(path).cloned().ok_or_else(|| {
                        anyhow!(
                        "{at}: volume {}: the test bed has nothing standing for hostPath {path}",
                        m.volume
                    )
                    })?
                }
                Source::ConfigMap { .. } => host.configmaps.join(&m.volume),
            };
            let mut opts = vec![if m.read_only { "ro" } else { "rw" }];
            // A ConfigMap volume is always read-only in Kubernetes.
            if matches!(m.source, Source::ConfigMap { .. }) {
                opts[0] = "ro";
            }
            match m.propagation.as_str() {
                "" | "None" => opts.push("rprivate"),
                "HostToContainer" => opts.push("rslave"),
                "Bidirectional" => opts.push("rshared"),
                p => bail!("{at}: volumeMount {}: mountPropagation {p:?}", m.volume),
            }
            o.push(format!(
                "--volume={}:{}:{}",
                src.display(),
                m.mount_path,
                opts.join(",")
            ));
        }
        if self.service_account.is_some() {
            if let Some(dir) = &host.service_account_dir {
                o.push(format!(
                    "--volume={}:{SERVICE_ACCOUNT_PATH}:ro",
                    dir.display()
                ));
            }
        }
        if !self.command.is_empty() {
            let json = serde_json::to_string(&self.command).expect("strings serialize");
            o.push(format!("--entrypoint={json}"));
        }
        Ok(o)
    }

    /// The whole `podman run` argument list after `run`: options, image, args.
    pub fn podman_args(&self, name: &str, host: &Host) -> Result<Vec<String>> {
        let mut a = self.podman_options(name, host)?;
        a.push(self.image.clone());
        a.extend(self.args.iter().cloned());
        Ok(a)
    }

    /// This spec with capability `cap` (as Kubernetes spells it) taken out of `add`.
    pub fn without_capability(&self, cap: &str) -> Result<PodSpec> {
        let mut s = self.clone();
        let before = s.cap_add.len();
        s.cap_add.retain(|c| c != cap);
        if s.cap_add.len() == before {
            bail!(
                "capability {cap} is not in capabilities.add {:?}",
                self.cap_add
            );
        }
        Ok(s)
    }
}

/// podman's spelling of a Kubernetes capability name: `BPF` → `CAP_BPF`, `ALL` → `all`.
pub fn podman_cap(k8s: &str) -> String {
    if k8s.eq_ignore_ascii_case("all") {
        "all".into()
    } else if k8s.starts_with("CAP_") {
        k8s.to_string()
    } else {
        format!("CAP_{k8s}")
    }
}

fn only_known(v: &Value, known: &[&str], at: &str) -> Result<()> {
    let Some(map) = v.as_mapping() else {
        return Ok(());
    };
    for k in map.keys() {
        let k = k.as_str().unwrap_or("?");
        if !known.contains(&k) {
            bail!("{at}: field {k} is not emulated by testkit::podspec (add it there, or leave it out of deploy/)");
        }
    }
    Ok(())
}

fn str_field(v: &Value, field: &str, at: &str) -> Result<String> {
    v[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{at}: {field} is missing or not a string"))
}

fn strings(v: &Value, at: &str) -> Result<Vec<String>> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    serde_yaml::from_value(v.clone()).with_context(|| format!("{at}: not a list of strings"))
}
