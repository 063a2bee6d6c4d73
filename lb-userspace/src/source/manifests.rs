//! The `manifests` source: Kubernetes objects read from the YAML files of one directory
//! ([`ManifestDir`], [`parse_manifest`]), and [`ManifestSource`], the [`Source`] over it.
//!
//! File I/O and parsing only; `model` interprets the objects. A file is accepted or rejected
//! whole: a rejected version leaves the file's last good objects in effect.

use super::dirwatch::DirWatch;
use super::{ChangedKeys, Objects, Source, Update};
use crate::objects::{ServiceObj, SliceObj};
use crate::types::{parse_ip_of, Family, Proto};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// Identifies a file version without reading it: (mtime s, mtime ns, size, inode).
type Stamp = (i64, i64, u64, u64);

struct FileState {
    /// None when the file could not be stat'ed (it is then re-read on every scan).
    stamp: Option<Stamp>,
    /// Objects of the last version that was accepted (empty if none was).
    good: Objects,
    /// Why the current version was rejected.
    error: Option<String>,
}

pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<OsString, FileState>,
    objects: Objects,
}

pub struct ScanReport {
    /// The effective objects differ from those before the scan.
    pub changed: bool,
    /// The keys of the objects of the files that changed (before and after).
    pub keys: ChangedKeys,
    /// Newly rejected file versions, each "path: reason".
    pub errors: Vec<String>,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            objects: Objects::default(),
        }
    }

    /// Re-read files whose (mtime, size, inode) changed, drop removed files. Cheap when
    /// nothing changed. Err only if the directory itself cannot be read.
    pub fn rescan(&mut self) -> io::Result<ScanReport> {
        let names = fs::read_dir(&self.dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut old = std::mem::take(&mut self.files);
        let mut errors = Vec::new();
        let mut keys = ChangedKeys::default();
        for name in names.into_iter().filter(|n| is_manifest_name(n)) {
            let path = self.dir.join(&name);
            let meta = match fs::metadata(&path) {
                Ok(m) if !m.is_file() => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                meta => meta,
            };
            let stamp = meta
                .as_ref()
                .ok()
                .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()));
            let state = match old.remove(&name) {
                Some(prev) if stamp.is_some() && prev.stamp == stamp => prev,
                prev => {
                    let prev_good = prev.as_ref().map(|p| p.good.clone()).unwrap_or_default();
                    let parsed = meta
                        .and_then(|_| fs::read_to_string(&path))
                        .map_err(|e| e.to_string())
                        .and_then(|text| parse_manifest(&text));
                    let state = match parsed {
                        Ok(good) => FileState {
                            stamp,
                            good,
                            error: None,
                        },
                        Err(e) => {
                            let e = format!("{}: {e}", path.display());
                            let (good, prev_error) =
                                prev.map_or_else(Default::default, |p| (p.good, p.error));
                            // A new version is always reported; a lasting stat failure once.
                            if stamp.is_some() || prev_error.as_ref() != Some(&e) {
                                errors.push(e.clone());
                            }
                            FileState {
                                stamp,
                                good,
                                error: Some(e),
                            }
                        }
                    };
                    // Change detection per file: the keys of its objects before and after.
                    if state.good != prev_good {
                        prev_good.keys(&mut keys);
                        state.good.keys(&mut keys);
                    }
                    state
                }
            };
            self.files.insert(name, state);
        }
        for gone in old.values() {
            gone.good.keys(&mut keys);
        }
        let changed = !keys.is_empty();
        if changed {
            let mut objects = Objects::default();
            for state in self.files.values() {
                objects.append(&state.good);
            }
            self.objects = objects;
        }
        Ok(ScanReport {
            changed,
            keys,
            errors,
        })
    }

    /// The union of the last good objects of every file (sorted by file name).
    pub fn objects(&self) -> Objects {
        self.objects.clone()
    }

    /// [`ManifestDir::objects`] without the copy.
    pub fn current(&self) -> &Objects {
        &self.objects
    }
}

/// `*.yaml` / `*.yml`, not hidden.
pub(crate) fn is_manifest_name(name: &OsStr) -> bool {
    let ext = Path::new(name).extension().and_then(OsStr::to_str);
    !name.to_string_lossy().starts_with('.') && matches!(ext, Some("yaml" | "yml"))
}

/// Parses one file: multi-document YAML of Service, EndpointSlice, Node and List objects;
/// other kinds are ignored. Err (the reason, naming the object when known) rejects the file.
pub fn parse_manifest(text: &str) -> Result<Objects, String> {
    let mut objects = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(text) {
        add(
            &mut objects,
            Value::deserialize(doc).map_err(|e| e.to_string())?,
        )?;
    }
    Ok(objects)
}

fn add(objects: &mut Objects, mut value: Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let (api_version, kind) = (field("apiVersion").unwrap_or_default(), field("kind"));
    let Some(kind) = kind else {
        return Err("document has no kind".into());
    };
    match (api_version.as_str(), kind.as_str()) {
        (_, "List") => match value.get_mut("items").map(Value::take) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Array(items)) => items.into_iter().try_for_each(|item| add(objects, item)),
            Some(_) => Err("List items is not a sequence".into()),
        },
        ("v1", "Service") => {
            let (svc, id) = typed::<Service>(&kind, value, true, |s| &mut s.metadata)?;
            let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
            for p in ports {
                Proto::parse(p.protocol.as_deref())
                    .map_err(|e| format!("{id}: port {}: {e}", p.port))?;
            }
            objects.services.push(Arc::new(ServiceObj::new(&svc)));
            Ok(())
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let (slice, id) = typed::<EndpointSlice>(&kind, value, true, |s| &mut s.metadata)?;
            // IPv4 and IPv6 slices must hold addresses of their family; FQDN ones are kept
            // unchecked (the model ignores them).
            if let Some(family) = Family::parse(&slice.address_type) {
                for a in slice.endpoints.iter().flat_map(|e| &e.addresses) {
                    parse_ip_of(a, family).map_err(|e| format!("{id}: {e}"))?;
                }
            }
            objects.slices.push(Arc::new(SliceObj::new(&slice)));
            Ok(())
        }
        ("v1", "Node") => {
            objects.nodes.push(Arc::new(
                typed::<Node>(&kind, value, false, |n| &mut n.metadata)?.0,
            ));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Deserializes a known kind, requiring metadata.name and defaulting the namespace of
/// namespaced kinds to "default". Returns the object and its "Kind namespace/name".
fn typed<T: DeserializeOwned>(
    kind: &str,
    value: Value,
    namespaced: bool,
    meta: fn(&mut T) -> &mut ObjectMeta,
) -> Result<(T, String), String> {
    let raw = |field: &str| value["metadata"][field].as_str().filter(|s| !s.is_empty());
    let Some(name) = raw("name") else {
        return Err(format!("{kind} without metadata.name"));
    };
    let id = match namespaced {
        true => format!("{kind} {}/{name}", raw("namespace").unwrap_or("default")),
        false => format!("{kind} {name}"),
    };
    let mut obj: T = serde_json::from_value(value).map_err(|e| format!("{id}: {e}"))?;
    let ns = &mut meta(&mut obj).namespace;
    if namespaced && ns.as_deref().unwrap_or_default().is_empty() {
        *ns = Some("default".into());
    }
    Ok((obj, id))
}

/// The `manifests` source as a [`Source`]: rescans the directory on every poll and logs
/// rejected files and an unreadable directory (once per distinct error). The objects of a
/// file that changed count as changed. An inotify watch on the directory
/// ([`super::dirwatch`]) wakes the agent when a file is written, renamed, created or deleted;
/// the agent's periodic poll stays as the fallback.
pub struct ManifestSource {
    path: PathBuf,
    dir: ManifestDir,
    first: bool,
    dir_error: Option<String>,
    notify: Arc<Notify>,
    _watch: Option<DirWatch>,
}

impl ManifestSource {
    pub fn new(path: &Path) -> Self {
        let notify = Arc::new(Notify::new());
        let watch = DirWatch::start(path, is_manifest_name, notify.clone())
            .map_err(|e| tracing::warn!(dir = %path.display(), "no inotify, polling only: {e}"))
            .ok();
        ManifestSource {
            path: path.to_path_buf(),
            dir: ManifestDir::new(path),
            first: true,
            dir_error: None,
            notify,
            _watch: watch,
        }
    }
}

impl Source for ManifestSource {
    fn poll(&mut self) -> Option<Update> {
        let report = match self.dir.rescan() {
            Ok(r) => {
                self.dir_error = None;
                r
            }
            Err(e) => {
                let e = e.to_string();
                if self.dir_error.as_ref() != Some(&e) {
                    tracing::error!(dir = %self.path.display(), "cannot read manifests directory: {e}");
                    self.dir_error = Some(e);
                }
                return None;
            }
        };
        for e in &report.errors {
            tracing::error!("rejected manifest, keeping its last good state: {e}");
        }
        if !(report.changed || self.first) {
            return None;
        }
        let delta = match std::mem::take(&mut self.first) {
            true => None,
            false => Some(self.dir.current().select(&report.keys)),
        };
        Some(Update {
            events: vec![Instant::now()],
            delta,
        })
    }

    fn objects(&self) -> Objects {
        self.dir.objects()
    }

    fn notify(&self) -> Option<Arc<Notify>> {
        Some(self.notify.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("podlb-manifests-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Rewrites in place. Tests give every new version of a file a different size, since
        /// two same-size writes within one coarse mtime tick cannot be told apart.
        fn write(&self, name: &str, text: &str) {
            fs::write(self.0.join(name), text).unwrap();
        }

        fn remove(&self, name: &str) {
            fs::remove_file(self.0.join(name)).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn svc(name: &str, ip: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n")
    }

    fn names(o: &Objects) -> Vec<String> {
        let mut v: Vec<String> = o
            .services
            .iter()
            .map(|s| format!("svc {}", s.key()))
            .collect();
        v.extend(o.slices.iter().map(|s| format!("slice {}", s.key())));
        v.extend(
            o.nodes
                .iter()
                .map(|n| format!("node {}", n.metadata.name.as_deref().unwrap())),
        );
        v
    }

    /// The clusterIP of the `i`th Service (which has a spec).
    fn cluster_ip(m: &ManifestDir, i: usize) -> Option<String> {
        let spec = m.objects().services[i].spec.clone().unwrap();
        spec.cluster_ip
    }

    fn scan(m: &mut ManifestDir) -> (bool, Vec<String>) {
        let r = m.rescan().unwrap();
        (r.changed, r.errors)
    }

    #[test]
    fn parses_multi_doc_lists_and_ignores_other_kinds() {
        let o = parse_manifest(
            r#"
---
# only a comment
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, annotations: {a: b}}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80, protocol: UDP}], someFutureField: 1}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  endpoints: [{addresses: [10.0.0.1]}]
- apiVersion: v1
  kind: Node
  metadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
  data: {x: y}
---
apiVersion: example.com/v1
kind: Service
metadata: {name: not-core}
spec: 42
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
"#,
        )
        .unwrap();
        assert_eq!(
            names(&o),
            ["svc shop/web", "slice default/web-1", "node node-a"]
        );
        assert_eq!(o.slices[0].namespace, "default");
        assert_eq!(o.nodes[0].metadata.namespace, None);
        assert!(parse_manifest("").unwrap().services.is_empty());
    }

    #[test]
    fn rejects_malformed_documents() {
        let err = |text: &str| parse_manifest(text).unwrap_err();
        assert!(err("kind: Service\nmetadata: {name: [}\n").contains("line"));
        assert_eq!(err("just a string"), "document has no kind");
        assert_eq!(
            err("apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n"),
            "Service without metadata.name"
        );
        assert!(
            err("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: nope}\n")
                .starts_with("Service default/web: invalid type")
        );
        assert!(
            err("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: [1]\n")
                .starts_with("Node n: ")
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a}\nspec: {ports: [{port: 80, protocol: ICMP}]}\n"),
            r#"Service a/web: port 80: unknown protocol "ICMP""#
        );
        let slice = |family: &str, addr: &str| {
            format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s}}\naddressType: {family}\nendpoints: [{{addresses: [\"{addr}\"]}}]\n")
        };
        assert_eq!(
            err(&slice("IPv4", "fd00::1")),
            r#"EndpointSlice default/s: address "fd00::1" is not an IPv4 address"#
        );
        assert_eq!(
            parse_manifest(&slice("IPv6", "fd00::1"))
                .unwrap()
                .slices
                .len(),
            1
        );
        assert_eq!(
            err(&slice("IPv6", "10.0.0.1")),
            r#"EndpointSlice default/s: address "10.0.0.1" is not an IPv6 address"#
        );
        assert_eq!(
            err(&slice("IPv6", "fd00::zz")),
            r#"EndpointSlice default/s: address "fd00::zz" is not an IPv6 address"#
        );
        assert_eq!(
            parse_manifest(&slice("FQDN", "web.example.com"))
                .unwrap()
                .slices
                .len(),
            1
        );
        assert_eq!(
            err("apiVersion: v1\nkind: List\nitems: {a: b}\n"),
            "List items is not a sequence"
        );
        // One bad document rejects the whole file.
        assert!(parse_manifest(&format!(
            "{}---\nkind: Service\napiVersion: v1\n",
            svc("ok", "10.96.0.1")
        ))
        .is_err());
    }

    #[test]
    fn add_modify_remove_files() {
        let d = TempDir::new();
        let mut m = ManifestDir::new(&d.0);
        assert_eq!(scan(&mut m), (false, vec![]));

        d.write("b.yaml", &svc("b", "10.96.0.2"));
        d.write("a.yml", &svc("a", "10.96.0.1"));
        d.write("c.yaml.tmp", &svc("tmp", "10.96.0.3"));
        d.write(".hidden.yaml", &svc("hidden", "10.96.0.4"));
        d.write("notes.txt", &svc("txt", "10.96.0.5"));
        fs::create_dir(d.0.join("sub.yaml")).unwrap();
        fs::write(d.0.join("sub.yaml/x.yaml"), svc("sub", "10.96.0.6")).unwrap();
        assert_eq!(scan(&mut m), (true, vec![]));
        assert_eq!(names(&m.objects()), ["svc default/a", "svc default/b"]);
        assert_eq!(scan(&mut m), (false, vec![]));

        d.write(
            "b.yaml",
            &format!("{}---\n{}", svc("b", "10.96.0.2"), svc("b2", "10.96.0.22")),
        );
        assert_eq!(scan(&mut m), (true, vec![]));
        assert_eq!(
            names(&m.objects()),
            ["svc default/a", "svc default/b", "svc default/b2"]
        );

        // Rewritten with equal objects (a comment added): re-read, but nothing changed.
        d.write("a.yml", &format!("# same\n{}", svc("a", "10.96.0.1")));
        assert_eq!(scan(&mut m), (false, vec![]));

        d.remove("a.yml");
        assert_eq!(scan(&mut m), (true, vec![]));
        assert_eq!(names(&m.objects()), ["svc default/b", "svc default/b2"]);
    }

    #[test]
    fn bad_file_keeps_last_good_state_and_is_reported_once() {
        let d = TempDir::new();
        let mut m = ManifestDir::new(&d.0);
        d.write("a.yaml", &svc("a", "10.96.0.1"));
        d.write("web.yaml", &svc("web", "10.96.0.2"));
        assert_eq!(scan(&mut m), (true, vec![]));

        d.write("web.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, protocol: HTTP}]}\n");
        let path = d.0.join("web.yaml");
        let (changed, errors) = scan(&mut m);
        assert!(!changed);
        assert_eq!(
            errors,
            [format!(
                r#"{}: Service default/web: port 80: unknown protocol "HTTP""#,
                path.display()
            )]
        );
        assert_eq!(names(&m.objects()), ["svc default/a", "svc default/web"]);
        assert_eq!(cluster_ip(&m, 1).as_deref(), Some("10.96.0.2"));
        assert_eq!(scan(&mut m), (false, vec![]));

        // Another bad version is reported again.
        d.write("web.yaml", "kind: Service\nmetadata: [");
        let (changed, errors) = scan(&mut m);
        assert!(!changed);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with(&format!("{}: ", path.display())),
            "{errors:?}"
        );

        // Fixing it applies.
        d.write("web.yaml", &svc("web", "10.96.0.200"));
        assert_eq!(scan(&mut m), (true, vec![]));
        assert_eq!(cluster_ip(&m, 1).as_deref(), Some("10.96.0.200"));

        // A file that never parsed contributes nothing; removing it changes nothing.
        d.write("new.yaml", "{");
        let (changed, errors) = scan(&mut m);
        assert!(!changed);
        assert_eq!(errors.len(), 1);
        assert_eq!(names(&m.objects()), ["svc default/a", "svc default/web"]);
        d.remove("new.yaml");
        assert_eq!(scan(&mut m), (false, vec![]));

        // Removing a rejected file also drops its last good objects.
        d.write("web.yaml", "{");
        assert_eq!(scan(&mut m).1.len(), 1);
        d.remove("web.yaml");
        assert_eq!(scan(&mut m), (true, vec![]));
        assert_eq!(names(&m.objects()), ["svc default/a"]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let d = TempDir::new();
        let mut m = ManifestDir::new(d.0.join("absent"));
        assert!(m.rescan().is_err());
    }
}
