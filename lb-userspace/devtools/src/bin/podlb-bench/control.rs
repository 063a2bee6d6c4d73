//! Section C: the agent's control plane, through the `kubernetes` source (the primary rows)
//! and through the `manifests` source, against kube-proxy-shaped rule loads.
//!
//! **kubernetes source.** The API server stand-in (`podlb::apiserver`, listening on 127.0.0.1
//! of the node namespace, as in the kube_e2e tests) holds N Services × 10 endpoints (one
//! Service and one EndpointSlice each). Per round a fresh agent starts with `--kubeconfig` on
//! an empty bpf root and lists them (in pages of 500: kube-rs's default limit, which the
//! stand-in honours), and the clock runs from the agent's start until every frontend in the
//! pinned `lb_frontends` map holds its 10 slots. The agent's own first-sync duration comes from
//! its log line (`synced ... duration_us=`), and the time from its `datapath ready` line to
//! that line (connect, list, model, plan, writes) from the log timestamps. Then single
//! endpoint changes, one at a time, through `ApiServer::apply`, after a random pause each,
//! for `resync_spans` of the agent's resync intervals (`--resync-interval`), so that changes
//! land before, during and after resyncs: the latency from `apply` to the change visible in
//! the pinned maps (observed by the bench), and the agent's event-to-map latency of each change
//! (what `podlb_event_to_map_latency_seconds_sum` grew by; /metrics is scraped between changes,
//! before the pause, so the scrape does not overlap a change). p50, p99 and max per round.
//! The agent's peak RSS (VmHWM) is read at the end of the round (it includes the scrapes).
//!
//! **manifests source.** Per round a fresh agent (own bpf root, empty maps) runs on a node
//! without pods. Its manifests directory gets the same Services, one file per Service (Service
//! and EndpointSlice): the files are written to a staging directory and renamed in, and the
//! clock runs from the first rename until every frontend holds its 10 slots. Then single
//! endpoint changes: one file is replaced (temp file and rename, after a random pause), and the
//! pinned maps are polled until the changed Service's slots name the new endpoint. The agent
//! is woken by inotify; its 200 ms poll is the fallback.
//!
//! "Every frontend programmed" is checked frontend by frontend in Service order, each one once
//! it holds its 10 slots (one map lookup per poll while waiting), so polling does not compete
//! with the agent by walking the whole map.
//!
//! The endpoints come from a pool of 50,000 addresses (each Service's 10 are distinct), so that
//! they fit the stock backend map.
//!
//! Baselines measured in the same run, in a bare network namespace: loading the same Services
//! as kube-proxy-shaped rules from empty (`iptables-restore`, `nft -f`), and applying one
//! endpoint change the way kube-proxy's incremental syncs write it (nftables: one transaction
//! for the changed chains; iptables: `iptables-restore --noflush` of `KUBE-SERVICES` and the
//! changed chains). kube-proxy adds its own sync period (minimum 1 s) on top.
use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, ensure, Context, Result};
use lb_common::{addr4, FrontendKey, SlotKey, FAMILY_V4, PROTO_TCP};
use podlb::datapath::Maps;
use serde_json::{json, Value};
use testkit::apiserver::{http_get, ApiServer, Kind};
use testkit::testbed::{manifest, wait_until, Agent, Netns, Node, NodeOptions, PodNetwork};
use testkit::Rng;

use crate::{
    e2e::fillers,
    report::{fmt_num, median, quantile, Figure},
};
use testkit::rules::{self, SvcPort};

pub struct Opts {
    pub services: usize,
    pub rounds: usize,
    /// manifests source: endpoint changes per round.
    pub changes: usize,
    /// kubernetes source: the agent's `--resync-interval`.
    pub resync: Duration,
    /// kubernetes source: each round's endpoint changes go on for this many resync intervals.
    pub resync_spans: u32,
    /// kubernetes source: the mean pause before each endpoint change (uniform, 0 to twice it).
    pub mean_pause: Duration,
}

const ENDPOINTS: usize = 10;
/// The agent's metrics address (its default) in the node namespace.
const METRICS: &str = "127.0.0.1:10249";

/// The YAML (Service + EndpointSlice) of the Service ports that share `service`.
fn service_yaml(ports: &[&SvcPort]) -> String {
    let name = ports[0]
        .service
        .split_once('/')
        .map_or(ports[0].service.as_str(), |(_, n)| n);
    let sports: Vec<(&str, u16, &str)> = ports
        .iter()
        .map(|p| (p.port_name.as_str(), p.port, proto(p)))
        .collect();
    let eports: Vec<(&str, u16, &str)> = ports
        .iter()
        .map(|p| (p.port_name.as_str(), p.endpoints[0].1, proto(p)))
        .collect();
    let eps: Vec<(Ipv4Addr, bool)> = ports[0].endpoints.iter().map(|e| (e.0, true)).collect();
    format!(
        "{}---\n{}",
        manifest::service(name, &ports[0].vip.to_string(), &sports),
        manifest::slice(name, &format!("{name}-1"), &eports, &eps)
    )
}

fn proto(p: &SvcPort) -> &'static str {
    if p.proto == "udp" {
        "UDP"
    } else {
        "TCP"
    }
}

/// (namespace, name) of the Service of `p`.
fn ns_name(p: &SvcPort) -> (&str, &str) {
    p.service.split_once('/').unwrap_or(("default", &p.service))
}

/// The Service object (JSON) of the Service ports that share `service`, for the API stand-in.
fn service_json(ports: &[&SvcPort]) -> Value {
    let (ns, name) = ns_name(ports[0]);
    let sports: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({"name": p.port_name, "port": p.port, "protocol": proto(p),
                   "targetPort": p.endpoints[0].1})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": ports[0].vip.to_string(), "ports": sports},
    })
}

/// The EndpointSlice object (JSON) of the Service ports that share `service`.
fn slice_json(ports: &[&SvcPort]) -> Value {
    let (ns, name) = ns_name(ports[0]);
    let eports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": p.port_name, "port": p.endpoints[0].1, "protocol": proto(p)}))
        .collect();
    let eps: Vec<Value> = ports[0]
        .endpoints
        .iter()
        .map(|e| json!({"addresses": [e.0.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": eports, "endpoints": eps,
    })
}

fn group(svcs: &[SvcPort]) -> Vec<Vec<&SvcPort>> {
    let mut by: BTreeMap<&str, (usize, Vec<&SvcPort>)> = BTreeMap::new();
    for (i, s) in svcs.iter().enumerate() {
        by.entry(&s.service).or_insert((i, vec![])).1.push(s);
    }
    let mut v: Vec<(usize, Vec<&SvcPort>)> = by.into_values().collect();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, g)| g).collect()
}

/// Writes `svcs` into `dir`, `per_file` Services per file, through a staging directory (each
/// file appears whole, by rename). Files are named in Service order.
pub fn write_manifests(dir: &Path, svcs: &[SvcPort], per_file: usize) -> Result<()> {
    let staged = stage(dir, svcs, per_file)?;
    publish(dir, &staged)
}

fn stage(dir: &Path, svcs: &[SvcPort], per_file: usize) -> Result<Vec<PathBuf>> {
    let stage = dir.with_extension("staging");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let mut files = Vec::new();
    for (n, chunk) in group(svcs).chunks(per_file).enumerate() {
        let text: Vec<String> = chunk.iter().map(|g| service_yaml(g)).collect();
        let f = stage.join(format!("svc-{n:06}.yaml"));
        fs::write(&f, text.join("---\n"))?;
        files.push(f);
    }
    Ok(files)
}

fn publish(dir: &Path, staged: &[PathBuf]) -> Result<()> {
    for f in staged {
        fs::rename(f, dir.join(f.file_name().unwrap()))?;
    }
    if let Some(parent) = staged.first().and_then(|f| f.parent()) {
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}

fn frontend_key(vip: Ipv4Addr) -> FrontendKey {
    FrontendKey {
        addr: addr4(vip.octets()),
        port: 80,
        proto: PROTO_TCP,
        family: FAMILY_V4,
    }
}

/// Waits until the frontend of every Service in `svcs` holds its `ENDPOINTS` slots, checking
/// them in order, each until it does (a programmed frontend stays so): one lookup per poll.
fn wait_programmed(maps: &Maps, svcs: &[SvcPort], timeout: Duration) -> usize {
    let mut done = 0;
    wait_until(timeout, Duration::from_millis(1), || {
        while done < svcs.len() {
            match maps.frontends.get(&frontend_key(svcs[done].vip), 0) {
                Ok(f) if f.count as usize == ENDPOINTS => done += 1,
                _ => break,
            }
        }
        done == svcs.len()
    });
    done
}

/// Whether the frontend `vip:80/TCP` has a slot naming `ip`.
fn has_backend(maps: &Maps, vip: Ipv4Addr, ip: Ipv4Addr) -> bool {
    let Ok(fe) = maps.frontends.get(&frontend_key(vip), 0) else {
        return false;
    };
    (0..fe.count).any(|slot| {
        maps.slots
            .get(
                &SlotKey {
                    svc_id: fe.svc_id,
                    slot,
                },
                0,
            )
            .ok()
            .and_then(|s| maps.backends.get(&s.backend_id, 0).ok())
            .is_some_and(|b| b.addr[..4] == ip.octets())
    })
}

fn vm_hwm_kib(pid: u32) -> Option<f64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Service `k` with endpoint 0 replaced by the `c`-th new address.
fn changed(svc: &SvcPort, c: usize) -> SvcPort {
    let mut s = svc.clone();
    s.endpoints[0].0 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 246, 0, 0)) + 1 + c as u32);
    s
}

/// Seconds since midnight of a log line's RFC 3339 timestamp (`2026-01-01T12:34:56.789012Z`).
fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split_once('T')?.1;
    let t = t.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Milliseconds from the agent's `datapath ready` line (its first, after loading the eBPF
/// object) to its first lines about each list and the first sync.
fn timeline(log: &str) -> Value {
    let mut ready = log.lines().filter(|l| l.contains("datapath ready"));
    let Some(first) = ready.find_map(log_time) else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (keys, what) in [
        (&[" listed", "kind=\"services\""][..], "services_listed"),
        (
            &[" listed", "kind=\"endpointslices\""],
            "endpointslices_listed",
        ),
        (&[" listed", "kind=\"nodes\""], "nodes_listed"),
        (&["synced"], "first_sync_done"),
    ] {
        let mut lines = log.lines().filter(|l| keys.iter().all(|k| l.contains(k)));
        if let Some(t) = lines.find_map(log_time) {
            out.insert(what.into(), json!(((t - first + 86400.0) % 86400.0) * 1e3));
        }
    }
    Value::Object(out)
}

/// The value of `key=` in a log line.
fn log_field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// (count, sum) of `podlb_event_to_map_latency_seconds` from the agent's /metrics.
fn event_latency(node: &Node) -> Result<(f64, f64)> {
    let addr: SocketAddr = METRICS.parse()?;
    let (code, body) = node
        .ns()
        .run_in(|| http_get(addr, "/metrics", Duration::from_secs(10)))
        .context("scraping the agent's /metrics")?;
    ensure!(code == 200, "/metrics: status {code}: {body}");
    let value = |name: &str| -> Result<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /metrics"))
    };
    Ok((
        value("podlb_event_to_map_latency_seconds_count")?,
        value("podlb_event_to_map_latency_seconds_sum")?,
    ))
}

/// p50, p99 and max of `v`.
fn quantiles(v: &[f64]) -> [f64; 3] {
    [quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0)]
}

/// Per-round samples of the kubernetes-source rows.
#[derive(Default)]
struct KubeRounds {
    program_ms: Vec<f64>,
    first_sync_ms: Vec<f64>,
    ready_to_synced_ms: Vec<f64>,
    /// p50, p99, max per round.
    apply: [Vec<f64>; 3],
    event: [Vec<f64>; 3],
    rss_mib: Vec<f64>,
    all_apply_ms: Vec<f64>,
    all_event_ms: Vec<f64>,
    details: Vec<Value>,
}

fn kube_rounds(
    podlb: &Path,
    opts: &Opts,
    node: &Node,
    svcs: &mut [SvcPort],
    rng: &mut Rng,
    change_no: &mut usize,
) -> Result<KubeRounds> {
    let t = Instant::now();
    let n = svcs.len();
    let api = ApiServer::start(&node.ns().path()).context("starting the API stand-in")?;
    for g in group(svcs) {
        api.apply(service_json(&g))?;
        api.apply(slice_json(&g))?;
    }
    eprintln!(
        "bench C: API stand-in holds {n} Services and EndpointSlices, {:.1?}",
        t.elapsed()
    );
    let tmp = std::env::temp_dir().join(format!("podlb-bench-c-kube-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let kubeconfig = tmp.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let resync = format!("{}", opts.resync.as_secs_f64());
    let mut r = KubeRounds::default();
    for round in 0..opts.rounds {
        let (lists0, pages0) = (
            api.lists(Kind::EndpointSlice),
            api.list_pages(Kind::EndpointSlice),
        );
        let t0 = Instant::now();
        let mut agent =
            Agent::start_kube(podlb, node, &kubeconfig, &["--resync-interval", &resync])?;
        let mut maps = None;
        wait_until(Duration::from_secs(60), Duration::from_millis(2), || {
            maps = Maps::open(agent.bpf_root()).ok();
            maps.is_some()
        });
        let maps = maps.with_context(|| format!("the agent made no maps:\n{}", agent.log()))?;
        let done = wait_programmed(&maps, svcs, Duration::from_secs(300));
        let program = t0.elapsed();
        ensure!(
            done == n,
            "{done} of {n} frontends programmed after 300 s:\n{}",
            agent.log()
        );
        r.program_ms.push(program.as_secs_f64() * 1e3);
        // The agent's own account of its first sync.
        let mut log = String::new();
        wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            log = agent.log();
            log.contains("synced")
        });
        let synced = log
            .lines()
            .find(|l| l.contains("synced"))
            .with_context(|| format!("no synced line:\n{log}"))?;
        let ready = log
            .lines()
            .find(|l| l.contains("datapath ready"))
            .with_context(|| format!("no datapath ready line:\n{log}"))?;
        let first_sync_us = log_field(synced, "duration_us")
            .with_context(|| format!("no duration_us in {synced:?}"))?;
        r.first_sync_ms.push(first_sync_us / 1e3);
        let (t_ready, t_synced) = (log_time(ready), log_time(synced));
        let ready_to_synced = match (t_ready, t_synced) {
            (Some(a), Some(b)) => (b - a + 86400.0) % 86400.0,
            _ => anyhow::bail!("no timestamps in {ready:?} / {synced:?}"),
        };
        r.ready_to_synced_ms.push(ready_to_synced * 1e3);
        let pid = agent.process().context("agent gone")?.pid();
        let hwm_programmed = vm_hwm_kib(pid).context("VmHWM")? / 1024.0;
        eprintln!(
            "bench C: kube round {round}: {n} services programmed {:.0} ms after the agent's \
             start (first sync {:.0} ms, datapath ready to synced {:.0} ms), {:.1?}",
            program.as_secs_f64() * 1e3,
            first_sync_us / 1e3,
            ready_to_synced * 1e3,
            t.elapsed()
        );

        // Single endpoint changes through the API, across several resyncs.
        let span = opts.resync * opts.resync_spans;
        let phase = Instant::now();
        let phase_from_start = phase - t0;
        let (mut apply, mut event) = (Vec::new(), Vec::new());
        let mut scrapes = (0usize, Duration::ZERO);
        let mut scrape = || -> Result<(f64, f64)> {
            let t = Instant::now();
            let v = event_latency(node);
            scrapes = (scrapes.0 + 1, scrapes.1 + t.elapsed());
            v
        };
        let mut before = scrape()?;
        while phase.elapsed() < span {
            let k = rng.below(n as u64) as usize;
            let new = changed(&svcs[k], *change_no);
            *change_no += 1;
            thread::sleep(rng.pause(opts.mean_pause));
            let slice = slice_json(&[&new]);
            let t1 = Instant::now();
            api.apply(slice)?;
            let ok = wait_until(Duration::from_secs(10), Duration::from_micros(200), || {
                has_backend(&maps, new.vip, new.endpoints[0].0)
            });
            let seen = t1.elapsed();
            ensure!(
                ok,
                "endpoint change of service {k} not in the maps after 10 s:\n{}",
                agent.log()
            );
            apply.push(seen.as_secs_f64() * 1e3);
            svcs[k] = new;
            // The agent records the latency right after its writes: wait for it.
            let mut after = scrape()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while after.0 <= before.0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
                after = scrape()?;
            }
            ensure!(
                after.0 == before.0 + 1.0,
                "change {}: the agent counted {} events (one expected)",
                apply.len(),
                after.0 - before.0
            );
            event.push((after.1 - before.1) * 1e3);
            before = after;
        }
        let phase_len = phase.elapsed();
        // Resync ticks fall at every interval after the agent's start.
        let ticks = |d: Duration| (d.as_secs_f64() / opts.resync.as_secs_f64()).floor() as u64;
        let resyncs = ticks(phase_from_start + phase_len) - ticks(phase_from_start);
        let hwm = vm_hwm_kib(pid).context("VmHWM")? / 1024.0;
        let (qa, qe) = (quantiles(&apply), quantiles(&event));
        for i in 0..3 {
            r.apply[i].push(qa[i]);
            r.event[i].push(qe[i]);
        }
        r.rss_mib.push(hwm);
        eprintln!(
            "bench C: kube round {round}: {} endpoint changes over {:.1?} ({resyncs} resyncs of \
             {:?}): apply to maps p50 {:.2} p99 {:.2} max {:.2} ms; agent event-to-map p50 {:.2} \
             p99 {:.2} max {:.2} ms; VmHWM {hwm:.1} MiB ({hwm_programmed:.1} MiB when \
             programmed), {:.1?}",
            apply.len(),
            phase_len,
            opts.resync,
            qa[0],
            qa[1],
            qa[2],
            qe[0],
            qe[1],
            qe[2],
            t.elapsed()
        );
        r.details.push(json!({
            "round": round,
            "changes": apply.len(),
            "change_phase_s": phase_len.as_secs_f64(),
            "change_phase_from_agent_start_s": phase_from_start.as_secs_f64(),
            "resyncs_during_changes": resyncs,
            "endpointslice_lists": api.lists(Kind::EndpointSlice) - lists0,
            "endpointslice_list_pages": api.list_pages(Kind::EndpointSlice) - pages0,
            "first_sync_line": synced,
            "agent_log_ms_from_datapath_ready": timeline(&log),
            "metrics_scrapes": scrapes.0,
            "metrics_scrape_mean_ms": scrapes.1.as_secs_f64() * 1e3 / scrapes.0.max(1) as f64,
            "vmhwm_mib_when_programmed": hwm_programmed,
        }));
        r.all_apply_ms.extend(apply);
        r.all_event_ms.extend(event);
        drop(maps);
        drop(agent);
    }
    ensure!(
        api.max_page_items(Kind::EndpointSlice) <= 500,
        "the agent's lists were not paged (a page held {} items)",
        api.max_page_items(Kind::EndpointSlice)
    );
    let _ = fs::remove_dir_all(&tmp);
    Ok(r)
}

/// Per-round samples of the manifests-source rows.
#[derive(Default)]
struct ManifestRounds {
    program_ms: Vec<f64>,
    /// p50, p99, max per round.
    change: [Vec<f64>; 3],
    rss_mib: Vec<f64>,
    all_change_ms: Vec<f64>,
}

fn manifest_rounds(
    podlb: &Path,
    opts: &Opts,
    node: &Node,
    svcs: &mut [SvcPort],
    rng: &mut Rng,
    change_no: &mut usize,
) -> Result<ManifestRounds> {
    let t = Instant::now();
    let n = svcs.len();
    let mut r = ManifestRounds::default();
    for round in 0..opts.rounds {
        let mut agent = Agent::start(podlb, node)?;
        let ready = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            agent.log().contains("synced")
        });
        ensure!(ready, "the agent did not start:\n{}", agent.log());
        let maps = Maps::open(agent.bpf_root())?;
        let staged = stage(agent.manifests(), svcs, 1)?;
        let t0 = Instant::now();
        publish(agent.manifests(), &staged)?;
        let done = wait_programmed(&maps, svcs, Duration::from_secs(300));
        let elapsed = t0.elapsed().as_secs_f64();
        ensure!(
            done == n,
            "{done} of {n} frontends programmed after 300 s:\n{}",
            agent.log()
        );
        r.program_ms.push(elapsed * 1e3);
        eprintln!(
            "bench C: manifests round {round}: {n} services programmed in {:.0} ms, {:.1?}",
            elapsed * 1e3,
            t.elapsed()
        );
        let mut lat = Vec::new();
        for _ in 0..opts.changes {
            let k = rng.below(n as u64) as usize;
            let new = changed(&svcs[k], *change_no);
            *change_no += 1;
            thread::sleep(Duration::from_millis(rng.below(200)));
            let file = format!("svc-{k:06}.yaml");
            let t0 = Instant::now();
            agent.write_manifest(&file, &service_yaml(&[&new]))?;
            let ok = wait_until(Duration::from_secs(10), Duration::from_micros(200), || {
                has_backend(&maps, new.vip, new.endpoints[0].0)
            });
            ensure!(
                ok,
                "endpoint change of service {k} not in the maps after 10 s:\n{}",
                agent.log()
            );
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            svcs[k] = new;
        }
        let q = quantiles(&lat);
        for (samples, v) in r.change.iter_mut().zip(q) {
            samples.push(v);
        }
        r.all_change_ms.extend(lat);
        let pid = agent.process().context("agent gone")?.pid();
        r.rss_mib.push(vm_hwm_kib(pid).context("VmHWM")? / 1024.0);
        drop(maps);
        drop(agent);
    }
    Ok(r)
}

/// Per-round samples of the rule-set baselines.
struct Baselines {
    ipt_load: Vec<f64>,
    nft_load: Vec<f64>,
    ipt_change: Vec<f64>,
    nft_change: Vec<f64>,
}

fn baselines(
    opts: &Opts,
    svcs: &mut [SvcPort],
    rng: &mut Rng,
    change_no: &mut usize,
) -> Result<Baselines> {
    let n = svcs.len();
    let ns = Netns::new("bench-rules")?;
    let tmp = std::env::temp_dir().join(format!("podlb-bench-c-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let ipt = tmp.join("iptables.rules");
    let nft = tmp.join("nftables.rules");
    fs::write(&ipt, rules::iptables(svcs))?;
    fs::write(&nft, rules::nftables(svcs))?;
    let mut b = Baselines {
        ipt_load: vec![],
        nft_load: vec![],
        ipt_change: vec![],
        nft_change: vec![],
    };
    let time = |args: &[&str]| -> Result<f64> {
        let t0 = Instant::now();
        ns.exec(args)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    let changes = opts.changes.min(4);
    for _ in 0..opts.rounds {
        ns.exec(&["nft", "flush", "ruleset"])?;
        b.ipt_load
            .push(time(&["iptables-restore", ipt.to_str().unwrap()])?);
        let mut v = Vec::new();
        for _ in 0..changes {
            let k = rng.below(n as u64) as usize;
            let new = changed(&svcs[k], *change_no);
            *change_no += 1;
            let f = tmp.join("iptables.change");
            let mut all = svcs.to_vec();
            all[k] = new.clone();
            fs::write(&f, rules::iptables_change(&all, &svcs[k], &new))?;
            v.push(time(&[
                "iptables-restore",
                "--noflush",
                f.to_str().unwrap(),
            ])?);
            svcs[k] = new;
        }
        b.ipt_change.push(median(&v));
        ns.exec(&["nft", "flush", "ruleset"])?;
        fs::write(&nft, rules::nftables(svcs))?;
        b.nft_load
            .push(time(&["nft", "-f", nft.to_str().unwrap()])?);
        let mut v = Vec::new();
        for _ in 0..changes {
            let k = rng.below(n as u64) as usize;
            let new = changed(&svcs[k], *change_no);
            *change_no += 1;
            let f = tmp.join("nftables.change");
            fs::write(&f, rules::nft_change(&svcs[k], &new))?;
            v.push(time(&["nft", "-f", f.to_str().unwrap()])?);
            svcs[k] = new;
        }
        b.nft_change.push(median(&v));
        fs::write(&ipt, rules::iptables(svcs))?;
    }
    ns.exec(&["nft", "flush", "ruleset"])?;
    let _ = fs::remove_dir_all(&tmp);
    Ok(b)
}

pub fn run(podlb: &Path, opts: &Opts) -> Result<Vec<Figure>> {
    let t = Instant::now();
    let n = opts.services;
    let mut svcs = fillers(n, ENDPOINTS);
    let node = Node::new(NodeOptions {
        pods: 0,
        network: PodNetwork::Routed,
        external_client: false,
    })?;
    let mut rng = Rng::new(0x5eed);
    let mut change_no = 0;
    let kube = kube_rounds(podlb, opts, &node, &mut svcs, &mut rng, &mut change_no)?;
    let man = manifest_rounds(podlb, opts, &node, &mut svcs, &mut rng, &mut change_no)?;
    drop(node);
    let base = baselines(opts, &mut svcs, &mut rng, &mut change_no)?;

    let scale = format!("{} svc × {ENDPOINTS}", fmt_num(n as f64));
    let s = &scale;
    let resync = format!("{s}, resync {} s", fmt_num(opts.resync.as_secs_f64()));
    let [kube_apply_p50, kube_apply_p99, kube_apply_max] = kube.apply;
    let [kube_event_p50, kube_event_p99, kube_event_max] = kube.event;
    let [man_p50, man_p99, man_max] = man.change;
    let ms = |id: String, name: &str, scale: &str, samples: Vec<f64>| {
        Figure::new(id, "C", name)
            .scale(scale)
            .unit("ms")
            .samples(samples)
    };
    let figs = vec![
        // kubernetes source (the API stand-in).
        ms(
            format!("c/kube/program/{n}"),
            "kubernetes: program from empty (agent start → all frontends in the maps)",
            s,
            kube.program_ms,
        )
        .vs("target 1 s", "c/target/program")
        .vs("iptables-restore", format!("c/iptables/load/{n}"))
        .vs("nft -f", format!("c/nftables/load/{n}"))
        .extra(json!({"rounds": kube.details})),
        ms(
            format!("c/kube/first-sync/{n}"),
            "kubernetes: the agent's first sync (model, plan, writes; its log)",
            s,
            kube.first_sync_ms,
        )
        .vs("target 1 s", "c/target/program"),
        ms(
            format!("c/kube/ready-to-synced/{n}"),
            "kubernetes: agent log, datapath ready → first sync done (paged lists, sync)",
            s,
            kube.ready_to_synced_ms,
        )
        .vs("target 1 s", "c/target/program"),
        ms(
            format!("c/kube/apply-p50/{n}"),
            "kubernetes: one endpoint change, API apply → maps (bench), p50",
            &resync,
            kube_apply_p50,
        )
        .vs("nft change", format!("c/nftables/change/{n}"))
        .vs("iptables change", format!("c/iptables/change/{n}")),
        ms(
            format!("c/kube/apply-p99/{n}"),
            "kubernetes: one endpoint change, API apply → maps (bench), p99",
            &resync,
            kube_apply_p99,
        )
        .vs("target 5 ms", "c/target/event")
        .extra(json!({"all_latencies_ms": kube.all_apply_ms})),
        ms(
            format!("c/kube/apply-max/{n}"),
            "kubernetes: one endpoint change, API apply → maps (bench), max",
            &resync,
            kube_apply_max,
        )
        .vs("target 5 ms", "c/target/event"),
        ms(
            format!("c/kube/event-p50/{n}"),
            "kubernetes: one endpoint change, agent's event-to-map, p50",
            &resync,
            kube_event_p50,
        ),
        ms(
            format!("c/kube/event-p99/{n}"),
            "kubernetes: one endpoint change, agent's event-to-map, p99",
            &resync,
            kube_event_p99,
        )
        .vs("target 5 ms", "c/target/event")
        .extra(json!({"all_latencies_ms": kube.all_event_ms})),
        ms(
            format!("c/kube/event-max/{n}"),
            "kubernetes: one endpoint change, agent's event-to-map, max",
            &resync,
            kube_event_max,
        )
        .vs("target 5 ms", "c/target/event"),
        Figure::new(
            format!("c/kube/rss/{n}"),
            "C",
            "kubernetes: agent peak RSS (VmHWM)",
        )
        .scale(s)
        .unit("MiB")
        .samples(kube.rss_mib)
        .vs("target 64 MiB", "c/target/rss"),
        // manifests source.
        ms(
            format!("c/manifests/program/{n}"),
            "manifests: program from empty (manifest write → all frontends in the maps)",
            s,
            man.program_ms,
        )
        .vs("target 1 s", "c/target/program")
        .vs("iptables-restore", format!("c/iptables/load/{n}"))
        .vs("nft -f", format!("c/nftables/load/{n}")),
        ms(
            format!("c/manifests/event-p50/{n}"),
            "manifests: one endpoint change, manifest write → maps, p50",
            s,
            man_p50,
        )
        .vs("nft change", format!("c/nftables/change/{n}"))
        .vs("iptables change", format!("c/iptables/change/{n}")),
        ms(
            format!("c/manifests/event-p99/{n}"),
            "manifests: one endpoint change, manifest write → maps, p99",
            s,
            man_p99,
        )
        .vs("target 5 ms", "c/target/event")
        .extra(json!({"all_latencies_ms": man.all_change_ms})),
        ms(
            format!("c/manifests/event-max/{n}"),
            "manifests: one endpoint change, manifest write → maps, max",
            s,
            man_max,
        ),
        Figure::new(
            format!("c/manifests/rss/{n}"),
            "C",
            "manifests: agent peak RSS (VmHWM)",
        )
        .scale(s)
        .unit("MiB")
        .samples(man.rss_mib)
        .vs("target 64 MiB", "c/target/rss"),
        // Baselines and targets.
        ms(
            format!("c/iptables/load/{n}"),
            "baseline: iptables-restore of the kube-proxy-shaped rules, from empty",
            s,
            base.ipt_load,
        ),
        ms(
            format!("c/nftables/load/{n}"),
            "baseline: nft -f of the kube-proxy-shaped rules, from empty",
            s,
            base.nft_load,
        ),
        ms(
            format!("c/nftables/change/{n}"),
            "baseline: nft -f of one endpoint change (kube-proxy nftables incremental sync)",
            s,
            base.nft_change,
        ),
        ms(
            format!("c/iptables/change/{n}"),
            "baseline: iptables-restore --noflush of one endpoint change (kube-proxy partial sync)",
            s,
            base.ipt_change,
        ),
        ms(
            "c/target/program".into(),
            "target (issue 4): program from empty",
            "",
            vec![1000.0],
        ),
        ms(
            "c/target/event".into(),
            "target (issue 4): event-to-map p99",
            "",
            vec![5.0],
        ),
        Figure::new("c/target/rss", "C", "target (issue 4): agent RSS")
            .unit("MiB")
            .samples(vec![64.0]),
    ];
    eprintln!("bench C: done in {:.1?}", t.elapsed());
    Ok(figs)
}
