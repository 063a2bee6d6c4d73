//! Unit tests of the DaemonSet reading and the podman command line (no root, no podman).
use super::*;

const RENDERED: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: agent
---
apiVersion: v1
data:
  config.yaml: |
    kind: AgentConfiguration
kind: ConfigMap
metadata:
  name: agent-config-abc
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  template:
    spec:
      serviceAccountName: agent
      hostNetwork: true
      tolerations:
        - operator: Exists
      terminationGracePeriodSeconds: 30
      containers:
        - name: main
          image: localhost/agent:1.0
          args: ["run", "--config", "/etc/agent/config.yaml"]
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: MODE
              value: fast
          ports:
            - name: healthz
              containerPort: 10256
          livenessProbe:
            httpGet:
              path: /livez
              port: healthz
          readinessProbe:
            httpGet:
              path: /healthz
              port: 10256
          securityContext:
            privileged: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsUser: 0
            seccompProfile:
              type: Unconfined
            capabilities:
              drop: ["ALL"]
              add: ["BPF", "NET_ADMIN"]
          volumeMounts:
            - name: bpf
              mountPath: /sys/fs/bpf
              mountPropagation: HostToContainer
            - name: config
              mountPath: /etc/agent
              readOnly: true
      volumes:
        - name: bpf
          hostPath:
            path: /sys/fs/bpf
            type: Directory
        - name: config
          configMap:
            name: agent-config-abc
"#;

fn host() -> Host {
    Host {
        netns: "/run/netns/t-node".into(),
        node_name: "node-0".into(),
        host_paths: [("/sys/fs/bpf".to_string(), PathBuf::from("/run/t/bpf"))].into(),
        configmaps: "/tmp/t/cm".into(),
        service_account_dir: Some("/tmp/t/sa".into()),
        kubelet_env: vec![("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into())],
    }
}

#[test]
fn reads_the_container_as_written() {
    let s = PodSpec::from_rendered(RENDERED, "agent").unwrap();
    assert_eq!(s.image, "localhost/agent:1.0");
    assert_eq!(s.args, ["run", "--config", "/etc/agent/config.yaml"]);
    assert!(s.command.is_empty());
    assert_eq!(
        s.env,
        [
            Env::Field("NODE_NAME".into(), "spec.nodeName".into()),
            Env::Value("MODE".into(), "fast".into())
        ]
    );
    assert_eq!(s.cap_add, ["BPF", "NET_ADMIN"]);
    assert_eq!(s.cap_drop, ["ALL"]);
    assert!(s.host_network && s.read_only_root && !s.privileged);
    assert_eq!(
        s.liveness,
        Some(Probe {
            path: "/livez".into(),
            port: 10256
        })
    );
    assert_eq!(
        s.readiness,
        Some(Probe {
            path: "/healthz".into(),
            port: 10256
        })
    );
    assert_eq!(
        s.configmap_files(),
        [(
            PathBuf::from("config/config.yaml"),
            "kind: AgentConfiguration\n".to_string()
        )]
    );
}

#[test]
fn the_podman_command_line_gives_what_the_spec_says() {
    let s = PodSpec::from_rendered(RENDERED, "agent").unwrap();
    let a = s.podman_args("c1", &host()).unwrap();
    let want = [
        "--name",
        "c1",
        "--pull=never",
        "--network=ns:/run/netns/t-node",
        "--cap-drop=all",
        "--cap-add=CAP_BPF",
        "--cap-add=CAP_NET_ADMIN",
        "--security-opt=seccomp=unconfined",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--read-only-tmpfs=false",
        "--user=0",
        "--stop-timeout=30",
        "--env=NODE_NAME=node-0",
        "--env=MODE=fast",
        "--env=KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--volume=/run/t/bpf:/sys/fs/bpf:rw,rslave",
        "--volume=/tmp/t/cm/config:/etc/agent:ro,rprivate",
        "--volume=/tmp/t/sa:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        "localhost/agent:1.0",
        "run",
        "--config",
        "/etc/agent/config.yaml",
    ];
    assert_eq!(a, want);
}

#[test]
fn a_capability_is_taken_out_of_add() {
    let s = PodSpec::from_rendered(RENDERED, "agent").unwrap();
    let w = s.without_capability("BPF").unwrap();
    assert_eq!(w.cap_add, ["NET_ADMIN"]);
    let err = s.without_capability("SYS_ADMIN").unwrap_err().to_string();
    assert_eq!(
        err,
        r#"capability SYS_ADMIN is not in capabilities.add ["BPF", "NET_ADMIN"]"#
    );
}

#[test]
fn what_is_not_emulated_is_an_error_naming_it() {
    let with = |from: &str, to: &str| {
        let y = RENDERED.replace(from, to);
        assert_ne!(y, RENDERED, "{from}");
        PodSpec::from_rendered(&y, "agent").unwrap_err().to_string()
    };
    assert_eq!(
        with(
            "          ports:",
            "          startupProbe: {}\n          ports:"
        ),
        "DaemonSet agent: container main: field startupProbe is not emulated by testkit::podspec \
         (add it there, or leave it out of deploy/)"
    );
    assert!(
        with("            runAsUser: 0", "            runAsGroup: 0")
            .contains("securityContext: field runAsGroup is not emulated"),
    );
    assert!(with(
        "          configMap:\n            name: agent-config-abc",
        "          emptyDir: {}"
    )
    .contains("only hostPath and configMap volumes are emulated"));
    assert!(with("name: agent-config-abc\n---", "name: other\n---")
        .contains("ConfigMap \"agent-config-abc\" is not in the manifests"));
    let s = PodSpec::from_rendered(RENDERED, "agent").unwrap();
    let mut h = host();
    h.host_paths.clear();
    assert_eq!(
        s.podman_args("c", &h).unwrap_err().to_string(),
        "DaemonSet agent: container main: volume bpf: the test bed has nothing standing for \
         hostPath /sys/fs/bpf"
    );
    assert_eq!(
        PodSpec::from_rendered(RENDERED, "other")
            .unwrap_err()
            .to_string(),
        "no DaemonSet \"other\" in the rendered manifests"
    );
}

#[test]
fn capability_names_in_podman_spelling() {
    assert_eq!(podman_cap("BPF"), "CAP_BPF");
    assert_eq!(podman_cap("CAP_BPF"), "CAP_BPF");
    assert_eq!(podman_cap("ALL"), "all");
}
