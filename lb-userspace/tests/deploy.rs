//! deploy/'s security properties and contracts, checked on what `kubectl kustomize` renders
//! for the base and every overlay (kubectl: `$PODLB_KUBECTL`, which `cargo xtask test` sets,
//! else `kubectl` on PATH; the test fails, never skips, without one).
//!
//! Per kustomization, [`check`] holds the rendered objects to [`Expect`]: exactly the five
//! objects; the ClusterRole's exact rules (get/list/watch on services, nodes and
//! discovery.k8s.io endpointslices, nothing more) and its binding to podlb's ServiceAccount;
//! each container's exact capability set, `privileged` only where expected; exactly the
//! hostPath volumes listed, mounted only by the containers listed; and the contracts the image
//! and the podman test rely on (args, NODE_NAME, /etc/podlb, the image name and version).
//! Every problem names the kustomization, the object and the reason; a test feeds [`check`]
//! broken renderings and wants exactly those messages.
use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_yaml::Value;

const IMAGE: &str = concat!("localhost/podlb:", env!("CARGO_PKG_VERSION"));
const BPF: &str = "/sys/fs/bpf";
const CGROUP: &str = "/sys/fs/cgroup";
const XTABLES_LOCK: &str = "/run/xtables.lock";

/// One container as a kustomization must render it.
struct ContainerExpect {
    name: &'static str,
    init: bool,
    /// The exact `capabilities.add` (with `drop: [ALL]`), or None: privileged, no list.
    caps: Option<&'static [&'static str]>,
    /// The hostPaths it mounts (and, for each, whether read-only).
    host_mounts: &'static [(&'static str, bool)],
    args: &'static [&'static str],
}

/// What one kustomization must render.
struct Expect {
    dir: &'static str,
    containers: &'static [ContainerExpect],
    /// The bpffs mount's propagation.
    bpf_propagation: &'static str,
}

const AGENT_ARGS: &[&str] = &["agent", "--config", "/etc/podlb/config.yaml"];
const MINIMAL: &[&str] = &["BPF", "NET_ADMIN", "PERFMON"];
const AGENT_MOUNTS: &[(&str, bool)] = &[(BPF, false), (CGROUP, true)];

const BASE: Expect = Expect {
    dir: "deploy/base",
    containers: &[ContainerExpect {
        name: "podlb",
        init: false,
        caps: Some(MINIMAL),
        host_mounts: AGENT_MOUNTS,
        args: AGENT_ARGS,
    }],
    bpf_propagation: "HostToContainer",
};

const PRIVILEGED: Expect = Expect {
    dir: "deploy/overlays/privileged",
    containers: &[ContainerExpect {
        name: "podlb",
        init: false,
        caps: None,
        host_mounts: AGENT_MOUNTS,
        args: AGENT_ARGS,
    }],
    bpf_propagation: "Bidirectional",
};

const REPLACE: Expect = Expect {
    dir: "deploy/overlays/replace-kube-proxy",
    containers: &[
        ContainerExpect {
            name: "cleanup-kube-proxy",
            init: true,
            // iptables-legacy needs NET_RAW for its raw socket; all backends NET_ADMIN.
            caps: Some(&["NET_ADMIN", "NET_RAW"]),
            host_mounts: &[(XTABLES_LOCK, false)],
            args: &["cleanup-kube-proxy"],
        },
        ContainerExpect {
            name: "podlb",
            init: false,
            caps: Some(MINIMAL),
            host_mounts: AGENT_MOUNTS,
            args: &[
                "agent",
                "--config",
                "/var/lib/kube-proxy/config.conf",
                "--config",
                "/etc/podlb/config.yaml",
            ],
        },
    ],
    bpf_propagation: "HostToContainer",
};

fn render(dir: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    testkit::kustomize::render(&root.join(dir)).unwrap_or_else(|e| panic!("{e}"))
}

/// The problems of the objects in `yaml` against `e`; empty when all is as expected.
fn check(e: &Expect, yaml: &str) -> Vec<String> {
    let mut p = Vec::new();
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        match Value::deserialize(doc) {
            Ok(v) => objects.push(v),
            Err(err) => return vec![format!("{}: not YAML: {err}", e.dir)],
        }
    }
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| {
            let name = text(&o["metadata"], "name");
            // The generated ConfigMap's name ends in the hash of its contents.
            let name = match name.strip_prefix("podlb-config-") {
                Some(_) => "podlb-config-<hash>".to_string(),
                None => name,
            };
            format!("{} {name}", text(o, "kind"))
        })
        .collect();
    kinds.sort();
    let want = [
        "ClusterRole podlb",
        "ClusterRoleBinding podlb",
        "ConfigMap podlb-config-<hash>",
        "DaemonSet podlb",
        "ServiceAccount podlb",
    ];
    if kinds != want {
        p.push(format!("{}: objects {kinds:?}, want {want:?}", e.dir));
    }
    for o in &objects {
        let ns = text(&o["metadata"], "namespace");
        let cluster_scoped = matches!(
            text(o, "kind").as_str(),
            "ClusterRole" | "ClusterRoleBinding"
        );
        if !cluster_scoped && ns != "kube-system" {
            p.push(format!(
                "{}: {} {}: namespace {ns:?}, want kube-system",
                e.dir,
                text(o, "kind"),
                text(&o["metadata"], "name")
            ));
        }
        let parse = |what: &str| format!("{}: {what} does not parse", e.dir);
        match text(o, "kind").as_str() {
            "ClusterRole" => match serde_yaml::from_value::<ClusterRole>(o.clone()) {
                Ok(r) => check_role(e, &r, &mut p),
                Err(err) => p.push(format!("{}: {err}", parse("ClusterRole"))),
            },
            "ClusterRoleBinding" => match serde_yaml::from_value::<ClusterRoleBinding>(o.clone()) {
                Ok(b) => check_binding(e, &b, &mut p),
                Err(err) => p.push(format!("{}: {err}", parse("ClusterRoleBinding"))),
            },
            "DaemonSet" => match serde_yaml::from_value::<DaemonSet>(o.clone()) {
                Ok(d) => check_daemonset(e, &d, &mut p),
                Err(err) => p.push(format!("{}: {err}", parse("DaemonSet"))),
            },
            _ => {}
        }
    }
    p
}

fn check_role(e: &Expect, r: &ClusterRole, p: &mut Vec<String>) {
    let who = format!(
        "{}: ClusterRole {}",
        e.dir,
        r.metadata.name.as_deref().unwrap_or("")
    );
    let mut granted = BTreeSet::new();
    for rule in r.rules.iter().flatten() {
        if rule.resource_names.is_some() || rule.non_resource_urls.is_some() {
            p.push(format!(
                "{who}: a rule with resourceNames or nonResourceURLs"
            ));
        }
        for g in rule.api_groups.iter().flatten() {
            for res in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    granted.insert(format!("{g}/{res} {v}"));
                }
            }
        }
    }
    let want: BTreeSet<String> = ["/services", "/nodes", "discovery.k8s.io/endpointslices"]
        .iter()
        .flat_map(|r| ["get", "list", "watch"].map(|v| format!("{r} {v}")))
        .collect();
    let extra: Vec<&String> = granted.difference(&want).collect();
    let missing: Vec<&String> = want.difference(&granted).collect();
    if !extra.is_empty() {
        p.push(format!("{who}: grants more than it may: {extra:?}"));
    }
    if !missing.is_empty() {
        p.push(format!("{who}: lacks {missing:?}"));
    }
    if r.aggregation_rule.is_some() {
        p.push(format!("{who}: has an aggregationRule"));
    }
}

fn check_binding(e: &Expect, b: &ClusterRoleBinding, p: &mut Vec<String>) {
    let who = format!(
        "{}: ClusterRoleBinding {}",
        e.dir,
        b.metadata.name.as_deref().unwrap_or("")
    );
    if (b.role_ref.kind.as_str(), b.role_ref.name.as_str()) != ("ClusterRole", "podlb") {
        p.push(format!(
            "{who}: roleRef {} {}, want ClusterRole podlb",
            b.role_ref.kind, b.role_ref.name
        ));
    }
    let subjects: Vec<String> = b
        .subjects
        .iter()
        .flatten()
        .map(|s| {
            format!(
                "{} {}/{}",
                s.kind,
                s.namespace.as_deref().unwrap_or(""),
                s.name
            )
        })
        .collect();
    if subjects != ["ServiceAccount kube-system/podlb"] {
        p.push(format!(
            "{who}: subjects {subjects:?}, want [\"ServiceAccount kube-system/podlb\"]"
        ));
    }
}

fn check_daemonset(e: &Expect, d: &DaemonSet, p: &mut Vec<String>) {
    let who = format!(
        "{}: DaemonSet {}/{}",
        e.dir,
        d.metadata.namespace.as_deref().unwrap_or(""),
        d.metadata.name.as_deref().unwrap_or("")
    );
    let Some(spec) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        p.push(format!("{who}: no pod spec"));
        return;
    };
    let mut flag = |ok: bool, what: &str| {
        if !ok {
            p.push(format!("{who}: {what}"));
        }
    };
    flag(spec.host_network == Some(true), "hostNetwork is not true");
    flag(
        spec.dns_policy.as_deref() == Some("Default"),
        "dnsPolicy is not Default: the cluster DNS is behind a ClusterIP that podlb serves",
    );
    flag(spec.host_pid != Some(true), "hostPID is true");
    flag(spec.host_ipc != Some(true), "hostIPC is true");
    flag(
        spec.service_account_name.as_deref() == Some("podlb"),
        "serviceAccountName is not podlb",
    );
    flag(
        spec.automount_service_account_token != Some(false),
        "automountServiceAccountToken is false: the agent reads the API with that token",
    );
    flag(
        spec.priority_class_name.as_deref() == Some("system-node-critical"),
        "priorityClassName is not system-node-critical",
    );
    flag(
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        }),
        "no toleration of every taint (operator: Exists)",
    );
    let strategy = d.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    flag(
        strategy.and_then(|s| s.type_.as_deref()) == Some("RollingUpdate"),
        "updateStrategy is not RollingUpdate",
    );

    // hostPath volumes: exactly those the expected containers mount.
    let host_paths: BTreeSet<(String, String)> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            v.host_path
                .as_ref()
                .map(|h| (v.name.clone(), h.path.clone()))
        })
        .collect();
    let mut got: Vec<&str> = host_paths.iter().map(|(_, path)| path.as_str()).collect();
    got.sort();
    let mut want: Vec<&str> = e
        .containers
        .iter()
        .flat_map(|c| c.host_mounts.iter().map(|(path, _)| *path))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    want.sort();
    if got != want {
        p.push(format!("{who}: hostPath volumes {got:?}, want {want:?}"));
    }
    let config_volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name.starts_with("podlb-config-"))
        })
        .map(|v| v.name.clone());

    let all: Vec<(bool, &Container)> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (true, c))
        .chain(spec.containers.iter().map(|c| (false, c)))
        .collect();
    let names: Vec<String> = all
        .iter()
        .map(|(i, c)| format!("{}{}", if *i { "init " } else { "" }, c.name))
        .collect();
    let want_names: Vec<String> = e
        .containers
        .iter()
        .map(|c| format!("{}{}", if c.init { "init " } else { "" }, c.name))
        .collect();
    if names != want_names {
        p.push(format!("{who}: containers {names:?}, want {want_names:?}"));
    }
    for ce in e.containers {
        let Some((_, c)) = all.iter().find(|(i, c)| *i == ce.init && c.name == ce.name) else {
            continue;
        };
        check_container(&who, e, ce, c, &host_paths, config_volume.as_deref(), p);
    }
}

fn check_container(
    who: &str,
    e: &Expect,
    ce: &ContainerExpect,
    c: &Container,
    host_paths: &BTreeSet<(String, String)>,
    config_volume: Option<&str>,
    p: &mut Vec<String>,
) {
    let who = format!("{who} container {}", c.name);
    let mut flag = |ok: bool, what: String| {
        if !ok {
            p.push(format!("{who}: {what}"));
        }
    };
    flag(
        c.image.as_deref() == Some(IMAGE),
        format!(
            "image {:?}, want {IMAGE:?}",
            c.image.as_deref().unwrap_or("")
        ),
    );
    let args: Vec<&str> = c.args.iter().flatten().map(String::as_str).collect();
    flag(
        args == ce.args,
        format!("args {args:?}, want {:?}", ce.args),
    );
    flag(
        c.command.is_none(),
        "sets command: the image's entrypoint is /usr/bin/podlb".into(),
    );
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged == Some(true);
    let want_privileged = ce.caps.is_none();
    flag(
        privileged == want_privileged,
        format!("privileged is {privileged}, want {want_privileged}"),
    );
    match ce.caps {
        Some(want) => {
            let caps = sc.capabilities.clone().unwrap_or_default();
            let mut add: Vec<String> = caps.add.unwrap_or_default();
            add.sort();
            flag(
                add == want,
                format!("capabilities add {add:?}, want {want:?}"),
            );
            let drop = caps.drop.unwrap_or_default();
            flag(
                drop == ["ALL"],
                format!("capabilities drop {drop:?}, want [\"ALL\"]"),
            );
            flag(
                sc.allow_privilege_escalation == Some(false),
                "allowPrivilegeEscalation is not false".into(),
            );
        }
        None => flag(
            sc.capabilities.is_none(),
            "lists capabilities, but it is privileged (it has them all)".into(),
        ),
    }
    flag(
        sc.read_only_root_filesystem == Some(true),
        "readOnlyRootFilesystem is not true".into(),
    );

    // Its hostPath mounts, exactly.
    let mut mounts: Vec<(String, bool)> = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if let Some((_, path)) = host_paths.iter().find(|(name, _)| *name == m.name) {
            flag(
                &m.mount_path == path,
                format!(
                    "mounts hostPath {path} at {}, want the same path",
                    m.mount_path
                ),
            );
            mounts.push((path.clone(), m.read_only == Some(true)));
            if path == BPF {
                let prop = m.mount_propagation.as_deref().unwrap_or("None");
                flag(
                    prop == e.bpf_propagation,
                    format!("bpffs mountPropagation {prop}, want {}", e.bpf_propagation),
                );
            }
        }
    }
    mounts.sort();
    let mut want: Vec<(String, bool)> = ce
        .host_mounts
        .iter()
        .map(|(p, ro)| (p.to_string(), *ro))
        .collect();
    want.sort();
    flag(
        mounts == want,
        format!("hostPath mounts (path, read-only) {mounts:?}, want {want:?}"),
    );

    if ce.init {
        return;
    }
    // The agent's contracts: NODE_NAME, the configuration at /etc/podlb, the probes.
    let node_name = c.env.iter().flatten().any(|v| {
        v.name == "NODE_NAME"
            && v.value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .is_some_and(|f| f.field_path == "spec.nodeName")
    });
    flag(node_name, "no env NODE_NAME from spec.nodeName".into());
    let config_mounted = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| Some(m.name.as_str()) == config_volume && m.mount_path == "/etc/podlb");
    flag(
        config_mounted,
        "the podlb-config ConfigMap is not mounted at /etc/podlb".into(),
    );
    let probe = |pr: &Option<k8s_openapi::api::core::v1::Probe>| {
        pr.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| (h.path.clone().unwrap_or_default(), format!("{:?}", h.port)))
    };
    let port = format!(
        "{:?}",
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(10256)
    );
    flag(
        probe(&c.liveness_probe) == Some(("/livez".into(), port.clone())),
        "livenessProbe is not GET /livez on 10256".into(),
    );
    flag(
        probe(&c.readiness_probe) == Some(("/healthz".into(), port)),
        "readinessProbe is not GET /healthz on 10256".into(),
    );
    flag(
        c.resources.as_ref().is_some_and(|r| r.requests.is_some()),
        "no resource requests".into(),
    );
}

fn assert_clean(e: &Expect) {
    let problems = check(e, &render(e.dir));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn deploy_base_is_minimal() {
    assert_clean(&BASE);
}

#[test]
fn deploy_privileged_overlay_is_privileged_and_nothing_more() {
    assert_clean(&PRIVILEGED);
}

#[test]
fn deploy_replace_kube_proxy_overlay() {
    assert_clean(&REPLACE);
}

/// The checks catch what they are for, and say which object and why.
#[test]
fn deploy_bad_manifests_are_named() {
    let good = render(BASE.dir);
    let once = |s: &str, from: &str, to: &str| {
        assert!(s.contains(from), "{from:?} not in the rendering");
        s.replacen(from, to, 1)
    };
    let bad = once(&good, "  - watch\n", "  - watch\n  - create\n");
    let bad = once(&bad, "privileged: false", "privileged: true");
    let bad = once(&bad, "path: /sys/fs/cgroup\n", "path: /\n");
    let bad = once(&bad, "    - BPF\n", "    - BPF\n            - SYS_ADMIN\n");
    let got: BTreeSet<String> = check(&BASE, &bad).into_iter().collect();
    let d = "deploy/base: DaemonSet kube-system/podlb";
    let want: BTreeSet<String> = [
        "deploy/base: ClusterRole podlb: grants more than it may: [\"/nodes create\", \"/services create\"]".to_string(),
        format!("{d}: hostPath volumes [\"/\", \"/sys/fs/bpf\"], want [\"/sys/fs/bpf\", \"/sys/fs/cgroup\"]"),
        format!("{d} container podlb: privileged is true, want false"),
        format!("{d} container podlb: capabilities add [\"BPF\", \"NET_ADMIN\", \"PERFMON\", \"SYS_ADMIN\"], want [\"BPF\", \"NET_ADMIN\", \"PERFMON\"]"),
        format!("{d} container podlb: hostPath mounts (path, read-only) [(\"/\", true), (\"/sys/fs/bpf\", false)], want [(\"/sys/fs/bpf\", false), (\"/sys/fs/cgroup\", true)]"),
        format!("{d} container podlb: mounts hostPath / at /sys/fs/cgroup, want the same path"),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);

    // The wrong overlay's expectations: the base is not privileged.
    let got = check(&PRIVILEGED, &good);
    assert!(
        got.contains(
            &"deploy/overlays/privileged: DaemonSet kube-system/podlb container podlb: privileged is false, want true".to_string()
        ),
        "{got:?}"
    );
}
