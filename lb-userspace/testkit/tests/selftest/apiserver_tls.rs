//! Self tests of the API server stand-in's HTTPS mode (`ApiServer::start_tls`), driven by
//! kube-rs configured as in a pod: the service account files the stand-in writes, the CA they
//! hold, and the bearer token. The stand-in listens in this process's network namespace
//! (setns into it needs root).
use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use testkit::apiserver::{ApiServer, Kind};
use testkit::testbed::{require_root, TempDir};

const T: Duration = Duration::from_secs(10);

fn start_tls() -> ApiServer {
    require_root().expect("the stand-in's HTTPS self tests must run as root (setns)");
    ApiServer::start_tls(Path::new("/proc/self/ns/net")).expect("starting the HTTPS stand-in")
}

fn service(name: &str, ns: &str, ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": ip,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
}

/// A kube-rs configuration built the way `Config::incluster_env` builds it, from
/// `KUBERNETES_SERVICE_HOST`/`PORT` (here: the stand-in's host and port) and the service
/// account files in `sa` instead of /var/run/secrets/kubernetes.io/serviceaccount.
fn incluster_config(host: &str, port: u16, sa: &Path) -> Config {
    let url = format!("https://{host}:{port}").parse().unwrap();
    let mut config = Config::new(url);
    config.default_namespace = std::fs::read_to_string(sa.join("namespace")).unwrap();
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(sa.join("ca.crt"))
        .unwrap()
        .map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(certs.len(), 1, "ca.crt holds one certificate");
    config.root_cert = Some(certs);
    config.auth_info.token_file = Some(sa.join("token").display().to_string());
    config.connect_timeout = Some(T);
    config
}

fn names(list: &[Service]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or("")
            )
        })
        .collect();
    v.sort();
    v
}

fn api_status(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

// The service account files and an in-cluster-style client: lists (all namespaces, and the
// default namespace taken from the `namespace` file) and a watch that streams a new Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incluster_client_lists_and_watches_over_tls() {
    let mut api = start_tls();
    assert!(api.is_tls());
    assert_eq!(api.host(), "127.0.0.1");
    assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());
    api.apply(service("web", "default", "10.96.0.10")).unwrap();
    api.apply(service("dns", "kube-system", "10.96.0.53"))
        .unwrap();
    let sa = TempDir::new("serviceaccount");
    api.write_service_account(sa.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(sa.path().join("namespace")).unwrap(),
        "kube-system"
    );
    assert_eq!(
        std::fs::read_to_string(sa.path().join("token")).unwrap(),
        api.token().unwrap()
    );
    assert!(std::fs::read_to_string(sa.path().join("ca.crt"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    let config = incluster_config(&api.host(), api.port(), sa.path());
    let client = Client::try_from(config).unwrap();
    let all: Api<Service> = Api::all(client.clone());
    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["default/web", "kube-system/dns"]);
    let own: Api<Service> = Api::default_namespaced(client);
    let list = own.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["kube-system/dns"]);
    assert_eq!(api.lists(Kind::Service), 2);
    assert_eq!(api.unauthorized(), 0);

    // A watch from the list's resourceVersion streams a Service created after it.
    let rv = list.metadata.resource_version.unwrap();
    let mut events = all
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.apply(service("late", "default", "10.96.0.11")).unwrap();
    let ev = tokio::time::timeout(T, events.try_next())
        .await
        .expect("no watch event over TLS")
        .unwrap()
        .expect("the watch ended");
    match ev {
        WatchEvent::Added(s) => assert_eq!(s.metadata.name.as_deref(), Some("late")),
        other => panic!("expected ADDED late, got {other:?}"),
    }
    // And the next change too: every event is flushed, not held back in a TLS buffer.
    api.apply(service("late", "default", "10.96.0.12")).unwrap();
    let ev = tokio::time::timeout(T, events.try_next())
        .await
        .expect("no second watch event over TLS")
        .unwrap()
        .expect("the watch ended");
    match ev {
        WatchEvent::Modified(s) => {
            let ip = s.spec.and_then(|s| s.cluster_ip);
            assert_eq!(ip.as_deref(), Some("10.96.0.12"))
        }
        other => panic!("expected MODIFIED late, got {other:?}"),
    }

    // drop_connections closes the TLS watch: the stream ends (or fails), it does not hang.
    api.drop_connections();
    let end = tokio::time::timeout(T, events.next())
        .await
        .expect("drop_connections left the TLS watch open");
    assert!(
        !matches!(end, Some(Ok(_))),
        "an event after drop_connections: {end:?}"
    );

    // After stop and restart (same port), the same CA and token still work: the client's
    // configuration holds.
    api.stop();
    let e = all.list(&ListParams::default()).await.unwrap_err();
    assert!(
        api_status(&e).is_none(),
        "a stopped stand-in answered: {e:#}"
    );
    api.restart().unwrap();
    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        names(&list.items),
        ["default/late", "default/web", "kube-system/dns"]
    );
}

// The kubeconfig of an HTTPS stand-in (CA data and token) is what `podlb agent --kubeconfig`
// reads: kube-rs lists through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_kubeconfig_carries_ca_and_token() {
    let api = start_tls();
    api.apply(service("web", "default", "10.96.0.10")).unwrap();
    let dir = TempDir::new("kubeconfig");
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("certificate-authority-data: "), "{text}");
    assert!(
        text.contains(&format!("token: {}", api.token().unwrap())),
        "{text}"
    );
    let kc = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", api.url()));
    let all: Api<Service> = Api::all(Client::try_from(config).unwrap());
    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["default/web"]);
}

// A wrong token, and no token at all, get 401 Unauthorized with a Status of reason
// "Unauthorized"; nothing is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_gets_401() {
    let api = start_tls();
    api.apply(service("web", "default", "10.96.0.10")).unwrap();
    let sa = TempDir::new("serviceaccount");
    api.write_service_account(sa.path()).unwrap();

    std::fs::write(sa.path().join("token"), "not-the-token").unwrap();
    let config = incluster_config(&api.host(), api.port(), sa.path());
    let all: Api<Service> = Api::all(Client::try_from(config.clone()).unwrap());
    let e = all.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(
        api_status(&e),
        Some((401, "Unauthorized".to_string())),
        "{e:#}"
    );

    let mut config = config;
    config.auth_info.token_file = None;
    let all: Api<Service> = Api::all(Client::try_from(config).unwrap());
    let e = all.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(
        api_status(&e),
        Some((401, "Unauthorized".to_string())),
        "{e:#}"
    );
    assert_eq!(api.unauthorized(), 2);
    assert_eq!(api.lists(Kind::Service), 0);
}

// A client that trusts another CA (that of a second stand-in) refuses the certificate: the
// request fails with a certificate error and never reaches the stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_the_ca_fails() {
    let api = start_tls();
    let other = start_tls();
    assert_ne!(api.ca_pem(), other.ca_pem());
    let sa = TempDir::new("serviceaccount");
    other.write_service_account(sa.path()).unwrap();
    std::fs::write(sa.path().join("token"), api.token().unwrap()).unwrap();
    let config = incluster_config(&api.host(), api.port(), sa.path());
    let all: Api<Service> = Api::all(Client::try_from(config).unwrap());
    let e = all.list(&ListParams::default()).await.unwrap_err();
    let text = format!("{e:?}");
    assert!(
        text.contains("InvalidCertificate(UnknownIssuer)"),
        "not a certificate error: {text}"
    );
    assert_eq!(api.lists(Kind::Service), 0);
    assert_eq!(api.unauthorized(), 0);
}

// A plain-HTTP stand-in has no service account to write, and says so.
#[test]
fn plain_standin_has_no_service_account() {
    require_root().expect("the stand-in's self tests must run as root (setns)");
    let api = ApiServer::start(Path::new("/proc/self/ns/net")).unwrap();
    assert!(!api.is_tls());
    assert!(api.url().starts_with("http://127.0.0.1:"));
    assert_eq!(api.token(), None);
    let sa = TempDir::new("serviceaccount");
    let e = api.write_service_account(sa.path()).unwrap_err();
    assert!(format!("{e:#}").contains("start_tls"), "{e:#}");
}
