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
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

/// The kinds served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

    fn of(kind: &str) -> Option<Kind> {
        match kind {
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "Node" => Some(Kind::Node),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn namespaced(self) -> bool {
        self != Kind::Node
    }

    /// (group prefix, plural) of its URL paths.
    fn path(self) -> (&'static str, &'static str) {
        match self {
            Kind::Service => ("/api/v1", "services"),
            Kind::EndpointSlice => ("/apis/discovery.k8s.io/v1", "endpointslices"),
            Kind::Node => ("/api/v1", "nodes"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

struct Change {
    rv: u64,
    kind: Kind,
    what: ChangeType,
    /// The version before the change (Modified).
    old: Option<Arc<Value>>,
    /// The version after the change; for Deleted, the last version (with the deletion's rv).
    new: Arc<Value>,
}

type Key = (Kind, String, String);

/// Every object of one kind as of one resourceVersion, in key order: what the later pages of
/// a paged list are served from.
type Snapshot = Arc<Vec<(String, Arc<Value>)>>;

/// Snapshots held at most (the oldest resourceVersion goes first); a continue token of one
/// that was dropped gets 410 Gone, as one of a compacted resourceVersion does.
const MAX_SNAPSHOTS: usize = 16;

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    /// Snapshots of paged lists, by (kind, resourceVersion).
    snapshots: BTreeMap<(u64, Kind), Snapshot>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Bumped by `expire_watches`: open watches end with 410 Gone.
    expire_epoch: u64,
}

#[derive(Default)]
struct Counters {
    /// List requests without `continue` (each starts a list).
    lists: [AtomicUsize; 3],
    /// List responses with items (first and continued pages).
    list_pages: [AtomicUsize; 3],
    /// The largest number of items in one list response.
    max_page_items: [AtomicUsize; 3],
    /// Continue tokens answered with 410 Gone.
    expired_continues: AtomicUsize,
    watches: [AtomicUsize; 3],
    gone: AtomicUsize,
    /// (labelSelector, fieldSelector) of every list and watch request, per kind.
    selectors: Mutex<[Vec<(String, String)>; 3]>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    /// Bumped by `drop_connections` and `stop`: connection threads of an older epoch close.
    conn_epoch: AtomicU64,
    /// Open connections by id (clones, to shut them down).
    conns: Mutex<BTreeMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    counters: Counters,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
        let compacted = self.compacted;
        self.snapshots.retain(|(rv, _), _| *rv >= compacted);
    }

    /// Every object of `kind` now, in key order (`namespace/name`, as etcd orders them).
    fn snapshot(&self, kind: Kind) -> Snapshot {
        if let Some(s) = self.snapshots.get(&(self.rv, kind)) {
            return s.clone();
        }
        let mut items: Vec<(String, Arc<Value>)> = self
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
            .map(|((_, ns, name), o)| (etcd_key(ns, name), o.clone()))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Arc::new(items)
    }

    /// Holds `snap` (of `kind` at `rv`) for the continued pages of a list.
    fn keep_snapshot(&mut self, kind: Kind, rv: u64, snap: Snapshot) {
        if rv < self.compacted {
            return;
        }
        self.snapshots.insert((rv, kind), snap);
        while self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.pop_first();
        }
    }
}

/// The key an object has in etcd below its kind's prefix: lists are in this order.
fn etcd_key(ns: &str, name: &str) -> String {
    match ns.is_empty() {
        true => name.to_string(),
        false => format!("{ns}/{name}"),
    }
}

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
}

const POLL: Duration = Duration::from_millis(100);
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

impl ApiServer {
    /// Starts listening on 127.0.0.1 (a free port) of the network namespace at `netns`
    /// (e.g. `/run/netns/NAME`).
    pub fn start(netns: &Path) -> Result<ApiServer> {
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
        let (inner, st) = (self.inner.clone(), stop.clone());
        let thread = thread::spawn(move || accept_loop(listener, inner, st));
        self.acceptor = Some(Acceptor { stop, thread });
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Writes a kubeconfig pointing at this server to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    \
             cluster: standin\n    user: tester\ncurrent-context: standin\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
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

/// A listener on 127.0.0.1:`port` created inside the network namespace at `netns`.
fn bind_in(netns: &Path, port: u16) -> Result<TcpListener> {
    let file = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    thread::scope(|s| {
        s.spawn(move || -> Result<TcpListener> {
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {}: {}", netns.display(), io::Error::last_os_error());
            }
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .map_err(|_| anyhow!("bind thread panicked"))?
    })
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let epoch = inner.conn_epoch.load(Ordering::SeqCst);
                let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = conn.try_clone() {
                    inner
                        .conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, c);
                }
                let inner = inner.clone();
                thread::spawn(move || {
                    let _ = serve_conn(&conn, &inner, epoch);
                    let _ = conn.shutdown(Shutdown::Both);
                    inner
                        .conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    /// `Connection: close`: the connection ends after the response.
    close: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut content_length = 0usize;
    let mut close = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    if content_length > 0 {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/");
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query,
        close,
    }))
}

/// URL query decoding: `%XX` and `+`.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (kind, namespace filter) of a request path.
fn route(path: &str) -> Option<(Kind, Option<String>)> {
    for kind in Kind::ALL {
        let (prefix, plural) = kind.path();
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{plural}") {
            return Some((kind, None));
        }
        if let Some(rest) = rest.strip_prefix("/namespaces/") {
            if let Some((ns, p)) = rest.split_once('/') {
                if p == plural && kind.namespaced() {
                    return Some((kind, Some(ns.to_string())));
                }
            }
        }
    }
    None
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn respond(conn: &mut TcpStream, code: u16, body: &Value) -> io::Result<()> {
    respond_text(conn, code, &body.to_string())
}

fn respond_text(conn: &mut TcpStream, code: u16, body: &str) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        _ => "Error",
    };
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn serve_conn(conn: &TcpStream, inner: &Inner, epoch: u64) -> io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn.try_clone()?);
    while let Some(req) = read_request(&mut reader)? {
        if inner.conn_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(());
        }
        if req.method != "GET" {
            respond(
                &mut writer,
                405,
                &status(405, "MethodNotAllowed", "read-only stand-in"),
            )?;
            continue;
        }
        let Some((kind, ns)) = route(&req.path) else {
            respond(
                &mut writer,
                404,
                &status(404, "NotFound", &format!("no such path {}", req.path)),
            )?;
            continue;
        };
        let filter = match Filter::parse(&req.query, ns) {
            Ok(f) => f,
            Err(e) => {
                respond(&mut writer, 400, &status(400, "BadRequest", &e))?;
                continue;
            }
        };
        let selector = |k: &str| req.query.get(k).cloned().unwrap_or_default();
        inner
            .counters
            .selectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())[kind as usize]
            .push((selector("labelSelector"), selector("fieldSelector")));
        let watch = matches!(
            req.query.get("watch").map(String::as_str),
            Some("true" | "1")
        );
        if watch {
            inner.counters.watches[kind as usize].fetch_add(1, Ordering::SeqCst);
            let from = req
                .query
                .get("resourceVersion")
                .cloned()
                .unwrap_or_default();
            let timeout = req
                .query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map(Duration::from_secs);
            let bookmarks = req
                .query
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true");
            if !serve_watch(
                &mut writer,
                inner,
                epoch,
                kind,
                &filter,
                &from,
                timeout,
                bookmarks,
            )? {
                return Ok(());
            }
        } else {
            let (code, body) = list_response(inner, kind, &filter, &req.query);
            respond_text(&mut writer, code, &body)?;
        }
        if req.close {
            return Ok(());
        }
    }
    Ok(())
}

/// The response (status, JSON body) to a list request: one page of `limit` items (all when
/// there is no limit) from the start, or from where a `continue` token left off, as of the
/// resourceVersion of the list's first page.
fn list_response(
    inner: &Inner,
    kind: Kind,
    filter: &Filter,
    query: &BTreeMap<String, String>,
) -> (u16, String) {
    let error =
        |code: u16, reason: &str, message: &str| (code, status(code, reason, message).to_string());
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None | Some(Ok(0)) => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(400, "BadRequest", "limit must be a non-negative integer"),
    };
    let counters = &inner.counters;
    let token = query.get("continue").filter(|t| !t.is_empty());
    let (rv, snap, start) = match token {
        Some(token) => {
            if query.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return error(
                    400,
                    "BadRequest",
                    "specifying resource version is not allowed when using continue",
                );
            }
            let Some((rv, start)) = decode_continue(token) else {
                return error(
                    400,
                    "BadRequest",
                    &format!("continue key is not valid: {token:?}"),
                );
            };
            let st = inner.lock();
            match st.snapshots.get(&(rv, kind)) {
                Some(snap) if rv >= st.compacted => (rv, snap.clone(), start),
                _ => {
                    drop(st);
                    counters.expired_continues.fetch_add(1, Ordering::SeqCst);
                    return error(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    );
                }
            }
        }
        None => {
            counters.lists[kind as usize].fetch_add(1, Ordering::SeqCst);
            let st = inner.lock();
            (st.rv, st.snapshot(kind), String::new())
        }
    };
    // etcd reads the keys from `start` on: the one after the previous page's last.
    let from = snap.partition_point(|(k, _)| k.as_str() < start.as_str());
    let mut rest = snap[from..].iter().filter(|(_, o)| filter.matches(o));
    let page: Vec<&(String, Arc<Value>)> = rest.by_ref().take(limit).collect();
    // Without selectors the server knows how many remain; with them it only knows whether.
    let exact = filter.labels.is_empty() && filter.fields.is_empty();
    let remaining = match exact {
        true => rest.count(),
        false => rest.next().is_some() as usize,
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        let last = &page.last().expect("a page before the remaining items").0;
        meta["continue"] = encode_continue(rv, &format!("{last}\0")).into();
        if exact {
            meta["remainingItemCount"] = remaining.into();
        }
        if token.is_none() {
            inner.lock().keep_snapshot(kind, rv, snap.clone());
        }
    }
    let mut body = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
        kind.name(),
        kind.api_version()
    );
    for (i, (_, o)) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&o.to_string());
    }
    body.push_str("]}");
    counters.list_pages[kind as usize].fetch_add(1, Ordering::SeqCst);
    counters.max_page_items[kind as usize].fetch_max(page.len(), Ordering::SeqCst);
    (200, body)
}

/// A continue token as the API server writes it: base64url of
/// `{"v":"meta.k8s.io/v1","rv":RV,"start":KEY}`.
fn encode_continue(rv: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64url(token.to_string().as_bytes())
}

/// (rv, start key) of a continue token.
fn decode_continue(token: &str) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(&unbase64url(token)?).ok()?;
    if v["v"] != "meta.k8s.io/v1" {
        return None;
    }
    Some((v["rv"].as_u64()?, v["start"].as_str()?.to_string()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (Go's `base64.RawURLEncoding`).
fn base64url(data: &[u8]) -> String {
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').as_bytes().chunks(4) {
        if c.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, b) in c.iter().enumerate() {
            let v = B64.iter().position(|x| x == b)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..c.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

fn chunk(conn: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    write!(conn, "{:x}\r\n", data.len())?;
    conn.write_all(data)?;
    conn.write_all(b"\r\n")
}

fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = json!({"type": kind, "object": object})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// Streams one watch. Ok(true): the response ended (timeout, or an ERROR event), the
/// connection may carry another request; Ok(false): it was dropped.
#[allow(clippy::too_many_arguments)]
fn serve_watch(
    conn: &mut TcpStream,
    inner: &Inner,
    epoch: u64,
    kind: Kind,
    filter: &Filter,
    from: &str,
    timeout: Option<Duration>,
    bookmarks: bool,
) -> io::Result<bool> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut st = inner.lock();
    let expire_epoch = st.expire_epoch;
    // "" and "0": start from now, with the current objects as ADDED events first.
    let (mut cursor, mut lines) = if from.is_empty() || from == "0" {
        let lines = st
            .objects
            .iter()
            .filter(|((k, _, _), o)| *k == kind && filter.matches(o))
            .map(|(_, o)| event_line("ADDED", o))
            .collect();
        (st.rv, lines)
    } else if let Ok(v) = from.parse::<u64>() {
        (v, Vec::new())
    } else {
        drop(st);
        let s = status(400, "BadRequest", &format!("bad resourceVersion {from:?}"));
        chunk(conn, &event_line("ERROR", &s))?;
        chunk(conn, b"")?;
        return Ok(true);
    };
    let mut last_sent = Instant::now();
    loop {
        if cursor < st.compacted || st.expire_epoch != expire_epoch {
            let gone = status(
                410,
                "Expired",
                &format!("too old resource version: {cursor} ({})", st.compacted),
            );
            drop(st);
            inner.counters.gone.fetch_add(1, Ordering::SeqCst);
            for l in &lines {
                chunk(conn, l)?;
            }
            chunk(conn, &event_line("ERROR", &gone))?;
            chunk(conn, b"")?;
            return Ok(true);
        }
        // The history is in resourceVersion order: skip what was sent without a scan.
        let from = st.history.partition_point(|c| c.rv <= cursor);
        for c in st.history[from..].iter().filter(|c| c.kind == kind) {
            let now = filter.matches(&c.new);
            let line = match c.what {
                ChangeType::Added if now => Some(("ADDED", &c.new)),
                ChangeType::Deleted if now => Some(("DELETED", &c.new)),
                ChangeType::Modified => {
                    match (c.old.as_ref().is_some_and(|o| filter.matches(o)), now) {
                        (true, true) => Some(("MODIFIED", &c.new)),
                        (false, true) => Some(("ADDED", &c.new)),
                        (true, false) => Some(("DELETED", &c.new)),
                        (false, false) => None,
                    }
                }
                _ => None,
            };
            if let Some((t, o)) = line {
                lines.push(event_line(t, o));
            }
        }
        cursor = st.rv;
        let now = Instant::now();
        if lines.is_empty() && bookmarks && now - last_sent >= BOOKMARK_EVERY {
            let bm = json!({
                "kind": kind.name(), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": cursor.to_string()},
            });
            lines.push(event_line("BOOKMARK", &bm));
        }
        if !lines.is_empty() {
            drop(st);
            for l in lines.drain(..) {
                chunk(conn, &l)?;
            }
            conn.flush()?;
            last_sent = now;
            st = inner.lock();
            continue;
        }
        if deadline.is_some_and(|d| now >= d) {
            drop(st);
            chunk(conn, b"")?;
            return Ok(true);
        }
        if inner.conn_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(false);
        }
        st = inner
            .changed
            .wait_timeout(st, POLL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if inner.conn_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(false);
        }
    }
}

/// The label and field selectors of a request.
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelTerm>,
    fields: Vec<(String, bool, String)>,
}

enum LabelTerm {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
}

impl Filter {
    fn parse(
        query: &BTreeMap<String, String>,
        namespace: Option<String>,
    ) -> Result<Filter, String> {
        let mut labels = Vec::new();
        for term in query
            .get("labelSelector")
            .map_or("", String::as_str)
            .split(',')
        {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            labels.push(if let Some((k, v)) = term.split_once("!=") {
                LabelTerm::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelTerm::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                LabelTerm::NotExists(k.trim().into())
            } else if term.contains(' ') || term.contains('(') {
                return Err(format!("unsupported label selector term {term:?}"));
            } else {
                LabelTerm::Exists(term.into())
            });
        }
        let mut fields = Vec::new();
        for term in query
            .get("fieldSelector")
            .map_or("", String::as_str)
            .split(',')
        {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector {term:?}"));
            };
            if !matches!(k, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {k}"));
            }
            fields.push((k.to_string(), eq, v.to_string()));
        }
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace {
            if meta["namespace"].as_str() != Some(ns) {
                return false;
            }
        }
        let label = |k: &str| meta["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|t| match t {
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::NotExists(k) => label(k).is_none(),
            LabelTerm::Equals(k, v) => label(k) == Some(v),
            LabelTerm::NotEquals(k, v) => label(k) != Some(v),
        });
        let fields_ok = self.fields.iter().all(|(k, eq, v)| {
            let actual = meta[k.trim_start_matches("metadata.")]
                .as_str()
                .unwrap_or("");
            (actual == v) == *eq
        });
        labels_ok && fields_ok
    }
}

/// Sends one HTTP GET to `addr` (e.g. the agent's health or metrics server) and returns
/// (status, body). For tests; the connection is made from the calling thread's namespace.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line: {head:?}"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let svc = |labels: Value| json!({"metadata": {"name": "a", "namespace": "default", "labels": labels}});
        let f = Filter::parse(
            &q(&[(
                "labelSelector",
                "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
            )]),
            None,
        )
        .unwrap();
        assert!(f.matches(&svc(json!({"app": "x"}))));
        assert!(f.matches(&svc(Value::Null)));
        assert!(!f.matches(&svc(json!({"service.kubernetes.io/headless": ""}))));
        assert!(!f.matches(&svc(
            json!({"service.kubernetes.io/service-proxy-name": "other"})
        )));
        let f = Filter::parse(&q(&[("fieldSelector", "metadata.name=a")]), None).unwrap();
        assert!(f.matches(&svc(Value::Null)));
        let f = Filter::parse(&q(&[("fieldSelector", "metadata.name=b")]), None).unwrap();
        assert!(!f.matches(&svc(Value::Null)));
        let f = Filter::parse(&q(&[("labelSelector", "app=x,tier!=db")]), None).unwrap();
        assert!(f.matches(&svc(json!({"app": "x"}))));
        assert!(!f.matches(&svc(json!({"app": "x", "tier": "db"}))));
        assert!(Filter::parse(&q(&[("fieldSelector", "spec.x=1")]), None).is_err());
    }

    /// GET `path` on `api` (in this process's network namespace): (status, JSON body).
    fn get(api: &ApiServer, path: &str) -> (u16, Value) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, api.port()));
        let (code, body) = http_get(addr, path, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
        (code, v)
    }

    /// "namespace/name" of a list's items, and its continue token.
    fn page(list: &Value) -> (Vec<String>, Option<String>) {
        let items = list["items"].as_array().expect("items").iter();
        let keys = items
            .map(|o| {
                let m = &o["metadata"];
                format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap(),
                    m["name"].as_str().unwrap()
                )
            })
            .collect();
        (
            keys,
            list["metadata"]["continue"].as_str().map(String::from),
        )
    }

    #[test]
    fn paged_lists() {
        testkit::testbed::require_root().unwrap_or_else(|e| {
            panic!("paged_lists needs root (the stand-in binds in a network namespace): {e:#}")
        });
        let api = ApiServer::start(Path::new("/proc/self/ns/net")).unwrap();
        let svc = |ns: &str, name: &str, ip: &str| {
            let app = if name.starts_with('s') { "web" } else { "db" };
            json!({"kind": "Service", "metadata": {"name": name, "namespace": ns,
                   "labels": {"app": app}}, "spec": {"clusterIP": ip}})
        };
        for (ns, name) in [
            ("a", "s1"),
            ("a", "s2"),
            ("a", "s3"),
            ("a-b", "x"),
            ("b", "y1"),
        ] {
            api.apply(svc(ns, name, "10.96.0.1")).unwrap();
        }
        api.apply(svc("b", "y2", "10.96.0.1")).unwrap();
        api.apply(json!({"kind": "Node", "metadata": {"name": "n1"}}))
            .unwrap();
        // etcd key order: "a-b/" sorts before "a/".
        let all = ["a-b/x", "a/s1", "a/s2", "a/s3", "b/y1", "b/y2"];
        let (code, whole) = get(&api, "/api/v1/services");
        assert_eq!(code, 200, "{whole}");
        assert_eq!(page(&whole), (all.map(String::from).to_vec(), None));
        let rv0 = whole["metadata"]["resourceVersion"].clone();
        assert_eq!(api.list_pages(Kind::Service), 1);

        // Pages of 2, with changes in between: every page is as of the first one's version.
        let (code, p1) = get(&api, "/api/v1/services?limit=2");
        assert_eq!(code, 200, "{p1}");
        let (keys, token) = page(&p1);
        assert_eq!(keys, ["a-b/x", "a/s1"]);
        assert_eq!(p1["metadata"]["resourceVersion"], rv0);
        assert_eq!(p1["metadata"]["remainingItemCount"], 4);
        api.apply(svc("a", "s2", "10.96.0.2")).unwrap();
        api.apply(svc("a", "s25", "10.96.0.2")).unwrap();
        assert!(api.delete(Kind::Service, "b", "y1"));
        let (code, p2) = get(
            &api,
            &format!("/api/v1/services?limit=2&continue={}", token.unwrap()),
        );
        assert_eq!(code, 200, "{p2}");
        let (keys, token) = page(&p2);
        assert_eq!(keys, ["a/s2", "a/s3"]);
        assert_eq!(p2["metadata"]["resourceVersion"], rv0);
        assert_eq!(p2["metadata"]["remainingItemCount"], 2);
        assert_eq!(
            p2["items"][0]["spec"]["clusterIP"], "10.96.0.1",
            "not the first page's version"
        );
        let (code, p3) = get(
            &api,
            &format!("/api/v1/services?limit=2&continue={}", token.unwrap()),
        );
        assert_eq!(code, 200, "{p3}");
        assert_eq!(page(&p3), (vec!["b/y1".into(), "b/y2".into()], None));
        assert_eq!(p3["metadata"]["resourceVersion"], rv0);
        assert!(p3["metadata"].get("remainingItemCount").is_none());
        let pages: Vec<Value> = [&p1, &p2, &p3]
            .iter()
            .flat_map(|p| p["items"].as_array().unwrap().clone())
            .collect();
        assert_eq!(
            Value::from(pages),
            whole["items"],
            "the pages differ from the whole list"
        );
        assert_eq!(api.lists(Kind::Service), 2);
        assert_eq!(api.list_pages(Kind::Service), 4);
        assert_eq!(api.max_page_items(Kind::Service), 6);

        // A new list sees the changes; a limit beyond the end gives no token.
        let (_, l) = get(&api, "/api/v1/services?limit=4");
        assert_eq!(page(&l).0, ["a-b/x", "a/s1", "a/s2", "a/s25"]);
        assert_eq!(l["items"][2]["spec"]["clusterIP"], "10.96.0.2");
        assert_ne!(l["metadata"]["resourceVersion"], rv0);
        let (_, l) = get(&api, "/api/v1/services?limit=6");
        assert_eq!(page(&l).1, None);

        // Selectors and namespaces: pages hold matching items only, no remainingItemCount.
        let mut keys = Vec::new();
        let mut path = "/api/v1/services?limit=1&labelSelector=app%3Dweb".to_string();
        loop {
            let (code, p) = get(&api, &path);
            assert_eq!(code, 200, "{p}");
            assert!(p["metadata"].get("remainingItemCount").is_none(), "{p}");
            let (k, token) = page(&p);
            keys.extend(k);
            let Some(token) = token else { break };
            path = format!(
                "/api/v1/services?limit=1&labelSelector=app%3Dweb&continue={}",
                token
            );
        }
        assert_eq!(keys, ["a/s1", "a/s2", "a/s25", "a/s3"]);
        let (_, p) = get(&api, "/api/v1/namespaces/b/services?limit=1");
        assert_eq!(page(&p).0, ["b/y2"]);
        assert_eq!(page(&p).1, None);

        // A token of a compacted version, of a version never listed: 410 Gone, Expired.
        let (_, p) = get(&api, "/api/v1/services?limit=2");
        let token = page(&p).1.unwrap();
        api.apply(svc("c", "z", "10.96.0.3")).unwrap();
        api.compact();
        for token in [token, encode_continue(12345, "a/\0")] {
            let (code, s) = get(
                &api,
                &format!("/api/v1/services?limit=2&continue={}", token),
            );
            assert_eq!(code, 410, "{s}");
            assert_eq!(
                (s["kind"].as_str(), s["code"].as_u64(), s["reason"].as_str()),
                (Some("Status"), Some(410), Some("Expired"))
            );
        }
        assert_eq!(api.expired_continues(), 2);
        // Malformed, or with a resourceVersion: 400.
        let (code, _) = get(&api, "/api/v1/services?limit=2&continue=bm90IGpzb24");
        assert_eq!(code, 400);
        let (_, p) = get(&api, "/api/v1/services?limit=2");
        let token = page(&p).1.unwrap();
        let (code, s) = get(
            &api,
            &format!(
                "/api/v1/services?limit=2&resourceVersion=1&continue={}",
                token
            ),
        );
        assert_eq!(code, 400, "{s}");
        let (code, _) = get(
            &api,
            &format!("/api/v1/services?limit=2&continue={}", token),
        );
        assert_eq!(code, 200);
    }

    #[test]
    fn continue_tokens() {
        assert_eq!(base64url(b"hello"), "aGVsbG8");
        assert_eq!(base64url(b"hell"), "aGVsbA");
        for data in [&b""[..], b"a", b"ab", b"abc", b"\xff\xfe\x00{}"] {
            assert_eq!(unbase64url(&base64url(data)).as_deref(), Some(data));
        }
        let t = encode_continue(42, "ns/name\0");
        assert_eq!(decode_continue(&t), Some((42, "ns/name\0".to_string())));
        assert_eq!(decode_continue("%%"), None);
        assert_eq!(
            decode_continue(&base64url(b"{\"v\":\"x\",\"rv\":1,\"start\":\"\"}")),
            None
        );
    }

    #[test]
    fn query_decoding_and_routes() {
        assert_eq!(decode("%21a%2Cb+c"), "!a,b c");
        assert_eq!(decode("50%"), "50%");
        assert_eq!(route("/api/v1/services"), Some((Kind::Service, None)));
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/namespaces/x/endpointslices"),
            Some((Kind::EndpointSlice, Some("x".into())))
        );
        assert_eq!(route("/api/v1/nodes"), Some((Kind::Node, None)));
        assert_eq!(route("/api/v1/namespaces/x/nodes"), None);
        assert_eq!(route("/api/v1/pods"), None);
    }
}
