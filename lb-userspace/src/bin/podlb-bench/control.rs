//! Section C: the agent's control plane through the `manifests` source.
//!
//! Per round a fresh agent (own bpf root, empty maps) runs on a node without pods. Its
//! manifests directory gets N Services × 10 endpoints, one file per Service (Service and
//! EndpointSlice): the files are written to a staging directory and renamed in, and the clock
//! runs from the first rename until every frontend in the pinned `lb_frontends` map holds its
//! 10 slots. Then single endpoint changes: one file is replaced (temp file and rename, after a
//! random pause so that the agent's 200 ms poll phase is sampled evenly), and the pinned maps
//! are polled until the changed Service's slots name the new endpoint. The agent's peak RSS
//! (VmHWM) is read at the end of the round.
//!
//! The endpoints come from a pool of 50,000 addresses (each Service's 10 are distinct): the
//! stock `lb_backends` map holds 65,536 backends, fewer than 100,000 distinct endpoints.
//!
//! Baselines measured in the same run, in a bare network namespace: loading the same Services
//! as kube-proxy-shaped rules from empty (`iptables-restore`, `nft -f`), and applying one
//! endpoint change the way kube-proxy's incremental syncs write it (nftables: one transaction
//! for the changed chains; iptables: `iptables-restore --noflush` of `KUBE-SERVICES` and the
//! changed chains). kube-proxy adds its own sync period (minimum 1 s) on top.
use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use lb_common::{addr4, FrontendKey, SlotKey, FAMILY_V4, PROTO_TCP};
use podlb::{
    datapath::Maps,
    testbed::{manifest, Agent, Netns, Node, NodeOptions, PodNetwork},
};
use serde_json::json;

use crate::{
    e2e::fillers,
    report::{median, quantile, Figure},
    rules::{self, SvcPort},
};

pub struct Opts {
    pub services: usize,
    pub rounds: usize,
    /// Endpoint changes per round.
    pub changes: usize,
}

const ENDPOINTS: usize = 10;

/// The YAML (Service + EndpointSlice) of the Service ports that share `service`.
fn service_yaml(ports: &[&SvcPort]) -> String {
    let name = ports[0]
        .service
        .split_once('/')
        .map_or(ports[0].service.as_str(), |(_, n)| n);
    let sports: Vec<(&str, u16, &str)> = ports
        .iter()
        .map(|p| {
            (
                p.port_name.as_str(),
                p.port,
                if p.proto == "udp" { "UDP" } else { "TCP" },
            )
        })
        .collect();
    let eports: Vec<(&str, u16, &str)> = ports
        .iter()
        .map(|p| {
            (
                p.port_name.as_str(),
                p.endpoints[0].1,
                if p.proto == "udp" { "UDP" } else { "TCP" },
            )
        })
        .collect();
    let eps: Vec<(Ipv4Addr, bool)> = ports[0].endpoints.iter().map(|e| (e.0, true)).collect();
    format!(
        "{}---\n{}",
        manifest::service(name, &ports[0].vip.to_string(), &sports),
        manifest::slice(name, &format!("{name}-1"), &eports, &eps)
    )
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

fn stage(dir: &Path, svcs: &[SvcPort], per_file: usize) -> Result<Vec<std::path::PathBuf>> {
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

fn publish(dir: &Path, staged: &[std::path::PathBuf]) -> Result<()> {
    for f in staged {
        fs::rename(f, dir.join(f.file_name().unwrap()))?;
    }
    if let Some(parent) = staged.first().and_then(|f| f.parent()) {
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}

/// Frontends in the pinned map whose count is `ENDPOINTS`.
fn programmed(maps: &Maps) -> usize {
    maps.frontends
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(_, f)| f.count as usize == ENDPOINTS)
        .count()
}

/// Whether the frontend `vip:80/TCP` has a slot naming `ip`.
fn has_backend(maps: &Maps, vip: Ipv4Addr, ip: Ipv4Addr) -> bool {
    let key = FrontendKey {
        addr: addr4(vip.octets()),
        port: 80,
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let Ok(fe) = maps.frontends.get(&key, 0) else {
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

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Service `k` with endpoint 0 replaced by the `c`-th new address.
fn changed(svc: &SvcPort, c: usize) -> SvcPort {
    let mut s = svc.clone();
    s.endpoints[0].0 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 246, 0, 0)) + 1 + c as u32);
    s
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
    let (mut prog, mut p50, mut p99, mut rss) = (vec![], vec![], vec![], vec![]);
    let mut all_lat = Vec::new();
    let mut rng = Lcg(0x5eed);
    let mut change_no = 0;
    for round in 0..opts.rounds {
        let mut agent = Agent::start(podlb, &node)?;
        let ready =
            podlb::testbed::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
                agent.log().contains("synced")
            });
        ensure!(ready, "the agent did not start:\n{}", agent.log());
        let maps = Maps::open(agent.bpf_root())?;
        let staged = stage(agent.manifests(), &svcs, 1)?;
        let t0 = Instant::now();
        publish(agent.manifests(), &staged)?;
        let ok =
            podlb::testbed::wait_until(Duration::from_secs(120), Duration::from_millis(5), || {
                programmed(&maps) == n
            });
        let elapsed = t0.elapsed().as_secs_f64();
        ensure!(
            ok,
            "{} of {n} frontends programmed after 120 s:\n{}",
            programmed(&maps),
            agent.log()
        );
        prog.push(elapsed * 1e3);
        eprintln!(
            "bench C: round {round}: {n} services programmed in {:.0} ms, {:.1?}",
            elapsed * 1e3,
            t.elapsed()
        );
        let mut lat = Vec::new();
        for _ in 0..opts.changes {
            let k = (rng.next() as usize) % n;
            let new = changed(&svcs[k], change_no);
            change_no += 1;
            thread::sleep(Duration::from_millis(rng.next() % 200));
            let file = format!("svc-{k:06}.yaml");
            let t0 = Instant::now();
            agent.write_manifest(&file, &service_yaml(&[&new]))?;
            let ok = podlb::testbed::wait_until(
                Duration::from_secs(10),
                Duration::from_micros(200),
                || has_backend(&maps, new.vip, new.endpoints[0].0),
            );
            ensure!(
                ok,
                "endpoint change of service {k} not in the maps after 10 s:\n{}",
                agent.log()
            );
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            svcs[k] = new;
        }
        p50.push(quantile(&lat, 0.5));
        p99.push(quantile(&lat, 0.99));
        all_lat.extend(lat);
        let pid = agent.process().context("agent gone")?.pid();
        rss.push(vm_hwm_kib(pid).context("VmHWM")? / 1024.0);
        drop(maps);
        drop(agent);
    }
    drop(node);
    // Baselines: the same Services as kube-proxy-shaped rule sets, in a bare namespace.
    let ns = Netns::new("bench-rules")?;
    let tmp = std::env::temp_dir().join(format!("podlb-bench-c-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let ipt = tmp.join("iptables.rules");
    let nft = tmp.join("nftables.rules");
    fs::write(&ipt, rules::iptables(&svcs))?;
    fs::write(&nft, rules::nftables(&svcs))?;
    let (mut ipt_load, mut nft_load, mut ipt_chg, mut nft_chg) = (vec![], vec![], vec![], vec![]);
    let time = |args: &[&str]| -> Result<f64> {
        let t0 = Instant::now();
        ns.exec(args)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    let changes = opts.changes.min(4);
    for _ in 0..opts.rounds {
        ns.exec(&["nft", "flush", "ruleset"])?;
        ipt_load.push(time(&["iptables-restore", ipt.to_str().unwrap()])?);
        let mut v = Vec::new();
        for _ in 0..changes {
            let k = (rng.next() as usize) % n;
            let new = changed(&svcs[k], change_no);
            change_no += 1;
            let f = tmp.join("iptables.change");
            let mut all = svcs.clone();
            all[k] = new.clone();
            fs::write(&f, rules::iptables_change(&all, &svcs[k], &new))?;
            v.push(time(&[
                "iptables-restore",
                "--noflush",
                f.to_str().unwrap(),
            ])?);
            svcs[k] = new;
        }
        ipt_chg.push(median(&v));
        ns.exec(&["nft", "flush", "ruleset"])?;
        fs::write(&nft, rules::nftables(&svcs))?;
        nft_load.push(time(&["nft", "-f", nft.to_str().unwrap()])?);
        let mut v = Vec::new();
        for _ in 0..changes {
            let k = (rng.next() as usize) % n;
            let new = changed(&svcs[k], change_no);
            change_no += 1;
            let f = tmp.join("nftables.change");
            fs::write(&f, rules::nft_change(&svcs[k], &new))?;
            v.push(time(&["nft", "-f", f.to_str().unwrap()])?);
            svcs[k] = new;
        }
        nft_chg.push(median(&v));
        fs::write(&ipt, rules::iptables(&svcs))?;
    }
    ns.exec(&["nft", "flush", "ruleset"])?;
    let _ = fs::remove_dir_all(&tmp);
    let scale = format!("{} svc × {ENDPOINTS}", crate::report::fmt_num(n as f64));
    let s = &scale;
    let figs = vec![
        Figure::new(
            format!("c/podlb/program/{n}"),
            "C",
            "podlb: program from empty (manifest write → all frontends in the maps)",
        )
        .scale(s)
        .unit("ms")
        .samples(prog)
        .vs("iptables-restore", format!("c/iptables/load/{n}"))
        .vs("nft -f", format!("c/nftables/load/{n}"))
        .vs("target 1 s", "c/target/program"),
        Figure::new(
            format!("c/iptables/load/{n}"),
            "C",
            "baseline: iptables-restore of the kube-proxy-shaped rules, from empty",
        )
        .scale(s)
        .unit("ms")
        .samples(ipt_load),
        Figure::new(
            format!("c/nftables/load/{n}"),
            "C",
            "baseline: nft -f of the kube-proxy-shaped rules, from empty",
        )
        .scale(s)
        .unit("ms")
        .samples(nft_load),
        Figure::new(
            format!("c/podlb/event-p50/{n}"),
            "C",
            "podlb: one endpoint change, manifest write → maps, p50",
        )
        .scale(s)
        .unit("ms")
        .samples(p50)
        .vs("nft change", format!("c/nftables/change/{n}"))
        .vs("iptables change", format!("c/iptables/change/{n}")),
        Figure::new(
            format!("c/podlb/event-p99/{n}"),
            "C",
            "podlb: one endpoint change, manifest write → maps, p99",
        )
        .scale(s)
        .unit("ms")
        .samples(p99)
        .vs("target 5 ms", "c/target/event")
        .extra(json!({"all_latencies_ms": all_lat})),
        Figure::new(
            format!("c/nftables/change/{n}"),
            "C",
            "baseline: nft -f of one endpoint change (kube-proxy nftables incremental sync)",
        )
        .scale(s)
        .unit("ms")
        .samples(nft_chg),
        Figure::new(
            format!("c/iptables/change/{n}"),
            "C",
            "baseline: iptables-restore --noflush of one endpoint change (kube-proxy partial sync)",
        )
        .scale(s)
        .unit("ms")
        .samples(ipt_chg),
        Figure::new(
            format!("c/podlb/rss/{n}"),
            "C",
            "podlb agent peak RSS (VmHWM)",
        )
        .scale(s)
        .unit("MiB")
        .samples(rss)
        .vs("target 64 MiB", "c/target/rss"),
        Figure::new(
            "c/target/program",
            "C",
            "target (issue 4): program from empty",
        )
        .unit("ms")
        .samples(vec![1000.0]),
        Figure::new("c/target/event", "C", "target (issue 4): event-to-map p99")
            .unit("ms")
            .samples(vec![5.0]),
        Figure::new("c/target/rss", "C", "target (issue 4): agent RSS")
            .unit("MiB")
            .samples(vec![64.0]),
    ];
    eprintln!("bench C: done in {:.1?}", t.elapsed());
    Ok(figs)
}
