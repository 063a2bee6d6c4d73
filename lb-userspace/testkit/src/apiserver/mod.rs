//! A stand-in for the Kubernetes API server, for tests: it speaks the real list/watch HTTP
//! protocol for Services, EndpointSlices and Nodes, so the `kubernetes` source (kube-rs) can be
//! driven through a kubeconfig that points at it. This is the one test double of the project.
//!
//! What it implements, as the API server does:
//! - `GET /api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`, `/api/v1/nodes`
//!   (cluster-wide lists, also `/api/v1/namespaces/NS/services` etc.), with
//!   `metadata.resourceVersion` on the list;
//! - paged lists: `limit=N` returns at most N items, in the order of their etcd keys
//!   (`namespace/name`), and `metadata.continue` when more remain (with
//!   `metadata.remainingItemCount` when the request has no selector); `continue=TOKEN` returns
//!   the next page *as of the first page's resourceVersion* (the `metadata.resourceVersion` of
//!   every page), from a snapshot of the kind taken by the first page. A token whose
//!   resourceVersion was compacted away (or whose snapshot is no longer held) gets 410 Gone,
//!   reason `Expired`; a token that cannot be decoded, or `continue` with `resourceVersion`,
//!   400 Bad Request;
//! - `?watch=true&resourceVersion=N`: a chunked stream of JSON lines `{"type": ADDED |
//!   MODIFIED | DELETED | BOOKMARK | ERROR, "object": ...}` with every change after N;
//!   bookmarks (with `allowWatchBookmarks=true`) every second while idle; `timeoutSeconds`;
//! - `labelSelector` (`k`, `!k`, `k=v`, `k==v`, `k!=v`, comma-joined) and `fieldSelector`
//!   (`metadata.name`, `metadata.namespace`, with `=`/`==`/`!=`); an object that stops or
//!   starts matching on a change is sent as DELETED or ADDED;
//! - 410 Gone: watching from a resourceVersion older than the last compaction gets one ERROR
//!   event with a `Status` of code 410, reason `Expired`, as a real watch does.
//!
//! Tests change objects with [`ApiServer::apply`] and [`ApiServer::delete`], and break things
//! with [`ApiServer::compact`], [`ApiServer::expire_watches`], [`ApiServer::drop_connections`],
//! [`ApiServer::stop`] and [`ApiServer::restart`] (same port, same objects, like an API server
//! restart backed by the same etcd). The listener lives in a network namespace (that of a test
//! node), bound to its 127.0.0.1.
//!
//! Two modes: [`ApiServer::start`] serves plain HTTP without authentication;
//! [`ApiServer::start_tls`] serves HTTPS only, with a CA and a server certificate made at start
//! (SANs: 127.0.0.1, `localhost` and the `kubernetes.default.svc` names), and answers 401
//! Unauthorized to a request without `Authorization: Bearer TOKEN` of its token. For a client
//! configured as in a pod, [`ApiServer::write_service_account`] writes `token`, `ca.crt` and
//! `namespace`, and [`ApiServer::host`] and [`ApiServer::port`] are `KUBERNETES_SERVICE_HOST`
//! and `KUBERNETES_SERVICE_PORT`. [`ApiServer::write_kubeconfig`] works in both modes.
//!
//! The modules: `store` holds the objects and their history, `serve` answers the requests
//! (lists in `list`, watches in `watch`, with the selectors of `filter`) over the HTTP of
//! `http`, and over TLS with `tls`.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Shutdown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

use anyhow::{anyhow, Context, Result};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

mod filter;
mod http;
mod list;
mod serve;
mod store;
#[cfg(test)]
mod tests;
mod tls;
mod watch;

pub use http::http_get;
pub use store::Kind;

use http::bind_in;
use serve::accept_loop;
use store::{Change, ChangeType, Counters, Inner, State};
use tls::Tls;

/// The address the stand-in listens on, in its network namespace.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The namespace `write_service_account` writes, as a pod of kube-system would have.
const SERVICE_ACCOUNT_NAMESPACE: &str = "kube-system";

struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The stand-in API server. Stops (closing every connection) on drop.
pub struct ApiServer {
    inner: Arc<Inner>,
    netns: PathBuf,
    port: u16,
    acceptor: Option<Acceptor>,
    tls: Option<Arc<Tls>>,
}

impl ApiServer {
    /// Starts listening on 127.0.0.1 (a free port) of the network namespace at `netns`
    /// (e.g. `/run/netns/NAME`).
    pub fn start(netns: &Path) -> Result<ApiServer> {
        Self::start_with(netns, None)
    }

    /// Like [`ApiServer::start`], but serving HTTPS only: a fresh self-signed CA and a server
    /// certificate for 127.0.0.1, `localhost` and `kubernetes.default.svc[.cluster.local]`;
    /// every request must carry `Authorization: Bearer` [`ApiServer::token`], or gets 401.
    pub fn start_tls(netns: &Path) -> Result<ApiServer> {
        let tls = Tls::new(HOST)?;
        Self::start_with(netns, Some(Arc::new(tls)))
    }

    fn start_with(netns: &Path, tls: Option<Arc<Tls>>) -> Result<ApiServer> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            conn_epoch: AtomicU64::new(0),
            conns: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let mut server = ApiServer {
            inner,
            netns: netns.to_path_buf(),
            port: 0,
            acceptor: None,
            tls,
        };
        server.listen()?;
        Ok(server)
    }

    fn listen(&mut self) -> Result<()> {
        let port = self.port;
        let listener = bind_in(&self.netns, port)
            .with_context(|| format!("api stand-in: bind 127.0.0.1:{port}"))?;
        self.port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let (inner, st, tls) = (self.inner.clone(), stop.clone(), self.tls.clone());
        let thread = thread::spawn(move || accept_loop(listener, inner, st, tls));
        self.acceptor = Some(Acceptor { stop, thread });
        Ok(())
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` when started with
    /// [`ApiServer::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host(), self.port)
    }

    /// The address it listens on in its namespace ("127.0.0.1"): `KUBERNETES_SERVICE_HOST`.
    pub fn host(&self) -> String {
        HOST.to_string()
    }

    /// The port it listens on: `KUBERNETES_SERVICE_PORT`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it serves HTTPS (started with [`ApiServer::start_tls`]).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The bearer token an HTTPS stand-in requires; None in plain-HTTP mode.
    pub fn token(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.token.as_str())
    }

    /// The PEM of the CA that signed an HTTPS stand-in's certificate; None in plain-HTTP mode.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Writes a kubeconfig pointing at this server to `path`. In HTTPS mode it carries the CA
    /// (`certificate-authority-data`) and the token.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        let (ca, user) = match &self.tls {
            None => (String::new(), "{}".to_string()),
            Some(t) => {
                let ca = base64::engine::general_purpose::STANDARD.encode(&t.ca_pem);
                (
                    format!("    certificate-authority-data: {ca}\n"),
                    format!("\n    token: {}", t.token),
                )
            }
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             {ca}users:\n- name: tester\n  user: {user}\ncontexts:\n- name: standin\n  context:\n    \
             cluster: standin\n    user: tester\ncurrent-context: standin\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes what kubelet mounts at `/var/run/secrets/kubernetes.io/serviceaccount` into
    /// `dir` (created if missing): `token`, `ca.crt` (the CA's PEM) and `namespace`
    /// (`kube-system`). Only for an HTTPS stand-in: a plain one has neither token nor CA.
    pub fn write_service_account(&self, dir: &Path) -> Result<()> {
        let tls = self.tls.as_ref().ok_or_else(|| {
            anyhow!(
                "write_service_account: the stand-in serves plain HTTP; start it with start_tls"
            )
        })?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, text) in [
            ("token", tls.token.as_str()),
            ("ca.crt", tls.ca_pem.as_str()),
            ("namespace", SERVICE_ACCOUNT_NAMESPACE),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Creates or replaces an object (a Service, EndpointSlice or Node as JSON); returns the
    /// new resourceVersion. Namespaced objects without a namespace go to "default".
    pub fn apply(&self, mut obj: Value) -> Result<u64> {
        let kind = obj["kind"]
            .as_str()
            .and_then(Kind::of)
            .ok_or_else(|| anyhow!("apply: unsupported kind in {obj}"))?;
        obj["apiVersion"] = kind.api_version().into();
        let name = obj["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("apply: no metadata.name in {obj}"))?
            .to_string();
        let ns = match kind.namespaced() {
            true => {
                let ns = obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                obj["metadata"]["namespace"] = ns.clone().into();
                ns
            }
            false => String::new(),
        };
        let mut st = self.inner.lock();
        st.rv += 1;
        let rv = st.rv;
        let key = (kind, ns, name);
        let old = st.objects.get(&key).cloned();
        let uid = old
            .as_ref()
            .map(|o| o["metadata"]["uid"].clone())
            .unwrap_or_else(|| format!("standin-{rv}").into());
        obj["metadata"]["uid"] = uid;
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        let obj = Arc::new(obj);
        st.objects.insert(key, obj.clone());
        let what = match old {
            Some(_) => ChangeType::Modified,
            None => ChangeType::Added,
        };
        st.history.push(Change {
            rv,
            kind,
            what,
            old,
            new: obj,
        });
        drop(st);
        self.inner.changed.notify_all();
        Ok(rv)
    }

    /// Applies every Service, EndpointSlice and Node of a (multi-document) YAML text.
    pub fn apply_yaml(&self, yaml: &str) -> Result<u64> {
        let mut rv = 0;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = Value::deserialize(doc)?;
            if !v.is_null() {
                rv = self.apply(v)?;
            }
        }
        Ok(rv)
    }

    /// Deletes an object; false when there was none. `ns` is ignored for Nodes.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let ns = if kind.namespaced() { ns } else { "" };
        let mut st = self.inner.lock();
        let Some(obj) = st.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        let mut obj = Arc::unwrap_or_clone(obj);
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        st.history.push(Change {
            rv,
            kind,
            what: ChangeType::Deleted,
            old: None,
            new: Arc::new(obj),
        });
        drop(st);
        self.inner.changed.notify_all();
        true
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Forgets the change history: a watch from an older resourceVersion gets 410 Gone, and so
    /// does a continue token of a list of an older resourceVersion.
    pub fn compact(&self) {
        self.inner.lock().compact();
    }

    /// Compacts and ends every open watch with a 410 Gone ERROR event.
    pub fn expire_watches(&self) {
        let mut st = self.inner.lock();
        st.compact();
        st.expire_epoch += 1;
        drop(st);
        self.inner.changed.notify_all();
    }

    /// Closes every open connection (as a network drop or a proxy restart would); the
    /// listener keeps accepting.
    pub fn drop_connections(&self) {
        self.inner.conn_epoch.fetch_add(1, Ordering::SeqCst);
        let conns =
            std::mem::take(&mut *self.inner.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for c in conns.values() {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.inner.changed.notify_all();
    }

    /// Stops listening and closes every connection: the API server is unreachable (connection
    /// refused) until [`ApiServer::restart`]. Objects and history stay.
    pub fn stop(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.stop.store(true, Ordering::SeqCst);
            let _ = a.thread.join();
        }
        self.drop_connections();
    }

    /// Listens again on the same port (after [`ApiServer::stop`], or stops first).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.listen()
    }

    /// Lists started so far for `kind` (list requests without `continue`).
    pub fn lists(&self, kind: Kind) -> usize {
        self.inner.counters.lists[kind as usize].load(Ordering::SeqCst)
    }

    /// List pages served so far for `kind`: first pages and continued ones. Equal to
    /// [`ApiServer::lists`] when no list was paged.
    pub fn list_pages(&self, kind: Kind) -> usize {
        self.inner.counters.list_pages[kind as usize].load(Ordering::SeqCst)
    }

    /// The most items one list response for `kind` held so far.
    pub fn max_page_items(&self, kind: Kind) -> usize {
        self.inner.counters.max_page_items[kind as usize].load(Ordering::SeqCst)
    }

    /// Continue tokens answered with 410 Gone so far.
    pub fn expired_continues(&self) -> usize {
        self.inner.counters.expired_continues.load(Ordering::SeqCst)
    }

    /// Watch requests served so far for `kind`.
    pub fn watches(&self, kind: Kind) -> usize {
        self.inner.counters.watches[kind as usize].load(Ordering::SeqCst)
    }

    /// The distinct (labelSelector, fieldSelector) pairs of the list and watch requests for
    /// `kind` so far.
    pub fn selectors(&self, kind: Kind) -> Vec<(String, String)> {
        let all = self
            .inner
            .counters
            .selectors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut v = all[kind as usize].clone();
        v.sort();
        v.dedup();
        v
    }

    /// Requests answered 401 Unauthorized so far (HTTPS mode: no or a wrong token).
    pub fn unauthorized(&self) -> usize {
        self.inner.counters.unauthorized.load(Ordering::SeqCst)
    }

    /// 410 Gone ERROR events sent so far.
    pub fn gone_sent(&self) -> usize {
        self.inner.counters.gone.load(Ordering::SeqCst)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `Status` object of a failed request, as the API server sends it.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}
