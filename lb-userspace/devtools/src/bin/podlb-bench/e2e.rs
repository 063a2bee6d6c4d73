//! Section B: real traffic in the namespace test bed, through three data planes one after
//! another on the same node, backends and client:
//! 1. podlb (the agent, manifests source);
//! 2. iptables rules in kube-proxy's iptables-mode shape (`rules::iptables`);
//! 3. nftables rules in kube-proxy's nftables-mode shape (`rules::nftables`).
//!
//! The node is `testbed::Node` (routed pods): pod0 is the client, pods 1-3 are the backends of
//! the measured Service `default/echo` (ClusterIP 10.96.0.10: TCP 80 → 8080 request/response,
//! UDP 53 → 5353 request/response, TCP 5001 → 5001 bulk sink). At 10,000 Services, 9,999
//! filler Services (10 endpoints each, never sent to) come first, so the measured Service is
//! the last one in rule order.
//!
//! Per plane and round: TCP connection rate (connect, send a line, read the reply until the
//! server closes, close; 2 client threads), UDP request/response rate (2 threads, one
//! connected socket each), TCP throughput of one established connection, and the latency of
//! `connect()` (SYN to SYN/ACK through the NAT, sequential connections) as p50 and p99.
//!
//! At up to 1,000 Services, where bringing a plane up takes about a second, the rounds
//! alternate between the planes (in a rotating order), each plane brought up and torn down
//! for every round, so that load from elsewhere on the machine does not favour one plane. At
//! 10,000 Services (loading the nftables rules alone takes minutes on this kernel) each plane
//! runs all its rounds in one go.
//!
//! Each plane is checked to be the one that served: before the netfilter planes no BPF
//! program may be attached in the node namespace (`bpftool net show`), and the netfilter
//! planes must have NATed the traffic (iptables rule counters of the Service, conntrack
//! entries for the VIP); before podlb the node's ruleset must be empty, and podlb's counters
//! of the measured Service must grow. Each plane is torn down (agent stopped and `podlb reset`,
//! tables flushed, conntrack flushed) before the next one.
use std::{
    fs::{self, File},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use testkit::testbed::{wait_for, Agent, Netns, Node, NodeOptions, PodNetwork};

use crate::{
    control::write_manifests,
    report::{quantile, Figure},
};
use testkit::rules::{self, SvcPort};

pub struct Opts {
    pub scales: Vec<usize>,
    pub rounds: usize,
    /// Seconds per rate or throughput sample.
    pub secs: f64,
    /// Sequential connections per latency sample.
    pub latency_conns: usize,
    /// Endpoints of each filler Service.
    pub filler_endpoints: usize,
    /// Alternate the planes round by round at scales up to this (else all rounds of a plane
    /// in one go).
    pub interleave_upto: usize,
}

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT_THREADS: usize = 2;
const BACKENDS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The measured Service's three ports, backed by pods 1..=3.
pub fn bench_service(node: &Node) -> Vec<SvcPort> {
    let eps = |port| {
        (1..=BACKENDS)
            .map(|i| (node.pod(i).ip(), port))
            .collect::<Vec<_>>()
    };
    vec![
        SvcPort {
            service: "default/echo".into(),
            port_name: "http".into(),
            vip: VIP,
            port: 80,
            proto: "tcp",
            endpoints: eps(8080),
        },
        SvcPort {
            service: "default/echo".into(),
            port_name: "dns".into(),
            vip: VIP,
            port: 53,
            proto: "udp",
            endpoints: eps(5353),
        },
        SvcPort {
            service: "default/echo".into(),
            port_name: "bulk".into(),
            vip: VIP,
            port: 5001,
            proto: "tcp",
            endpoints: eps(5001),
        },
    ]
}

/// `n` filler Services (one TCP port each, `eps` endpoints from a pool of 50,000 addresses:
/// the stock `lb_backends` map holds 65,536 backends).
pub fn fillers(n: usize, eps: usize) -> Vec<SvcPort> {
    (0..n)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + 1 + i as u32);
            let endpoints = (0..eps)
                .map(|j| {
                    let p = ((i * eps + j) % 50_000) as u32;
                    (
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 245, 0, 0)) + 1 + p),
                        8080,
                    )
                })
                .collect();
            SvcPort {
                service: format!("default/filler-{i}"),
                port_name: "http".into(),
                vip,
                port: 80,
                proto: "tcp",
                endpoints,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Servers in the backend pods.

struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn readable(fd: &impl AsRawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn start_servers(node: &Node) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 1..=BACKENDS {
        let ns = node.pod(i).ns();
        let (echo, sink, udp) = ns.run_in(|| {
            (
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)).expect("bind 8080"),
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, 5001)).expect("bind 5001"),
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)).expect("bind 5353"),
            )
        });
        // Request/response: one connection at a time, the server closes first (so that the
        // client's ports are free again at once, as with HTTP/1.0).
        let s = stop.clone();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if !readable(&echo, 100) {
                    continue;
                }
                let Ok((mut c, _)) = echo.accept() else {
                    continue;
                };
                let _ = c.set_read_timeout(Some(TIMEOUT));
                let mut got = 0;
                while got == 0 || buf[got - 1] != b'\n' {
                    match c.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    if got == buf.len() {
                        break;
                    }
                }
                let _ = c.write_all(b"ok\n");
            }
        }));
        let s = stop.clone();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 512];
            let _ = udp.set_read_timeout(Some(Duration::from_millis(100)));
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], peer);
                }
            }
        }));
        let s = stop.clone();
        threads.push(thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !s.load(Ordering::Relaxed) {
                if !readable(&sink, 100) {
                    continue;
                }
                let Ok((mut c, _)) = sink.accept() else {
                    continue;
                };
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                while !s.load(Ordering::Relaxed) {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    Servers { stop, threads }
}

// ---------------------------------------------------------------------------------------------
// Clients (threads that enter the client pod's namespace).

fn enter(ns: &Path) -> Result<()> {
    let f = File::open(ns)?;
    ensure!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
        "setns: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn crr_once(dst: SocketAddrV4) -> Result<()> {
    let mut c = TcpStream::connect_timeout(&dst.into(), TIMEOUT)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    c.write_all(b"x\n")?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        match c.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    ensure!(&buf[..got] == b"ok\n", "bad reply {:?}", &buf[..got]);
    Ok(())
}

/// (operations per second, errors) over `secs` with `threads` threads running `op` in a loop.
fn rate(
    ns: &Path,
    threads: usize,
    secs: f64,
    op: fn(&mut Option<UdpSocket>) -> Result<()>,
) -> Result<(f64, u64)> {
    let results: Vec<Result<(u64, u64)>> = thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || -> Result<(u64, u64)> {
                    enter(ns)?;
                    let mut state = None;
                    let end = Instant::now() + Duration::from_secs_f64(secs);
                    let (mut ok, mut err) = (0u64, 0u64);
                    while Instant::now() < end {
                        match op(&mut state) {
                            Ok(()) => ok += 1,
                            Err(_) => {
                                err += 1;
                                state = None;
                            }
                        }
                    }
                    Ok((ok, err))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut ok, mut err) = (0, 0);
    for r in results {
        let (o, e) = r?;
        ok += o;
        err += e;
    }
    Ok((ok as f64 / secs, err))
}

fn op_crr(_: &mut Option<UdpSocket>) -> Result<()> {
    crr_once(SocketAddrV4::new(VIP, 80))
}

fn op_udp(state: &mut Option<UdpSocket>) -> Result<()> {
    if state.is_none() {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.connect(SocketAddrV4::new(VIP, 53))?;
        *state = Some(s);
    }
    let s = state.as_ref().unwrap();
    s.send(b"x")?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf)?;
    ensure!(&buf[..n] == b"x", "bad UDP reply");
    Ok(())
}

/// Gbit/s of one connection writing for `secs`.
fn throughput(ns: &Path, secs: f64) -> Result<f64> {
    thread::scope(|s| {
        s.spawn(|| -> Result<f64> {
            enter(ns)?;
            let mut c = TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 5001).into(), TIMEOUT)?;
            c.set_write_timeout(Some(TIMEOUT))?;
            let buf = vec![0x5au8; 128 * 1024];
            let t = Instant::now();
            let end = t + Duration::from_secs_f64(secs);
            let mut bytes = 0u64;
            while Instant::now() < end {
                c.write_all(&buf)?;
                bytes += buf.len() as u64;
            }
            Ok(bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9)
        })
        .join()
        .unwrap()
    })
}

/// `connect()` times (µs) of `n` sequential connections (each then completes a request).
fn connect_latency(ns: &Path, n: usize) -> Result<Vec<f64>> {
    thread::scope(|s| {
        s.spawn(|| -> Result<Vec<f64>> {
            enter(ns)?;
            let dst = SocketAddrV4::new(VIP, 80);
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let mut c = TcpStream::connect_timeout(&dst.into(), TIMEOUT)?;
                v.push(t.elapsed().as_secs_f64() * 1e6);
                c.set_read_timeout(Some(TIMEOUT))?;
                c.write_all(b"x\n")?;
                let mut buf = [0u8; 64];
                while c.read(&mut buf)? > 0 {}
            }
            Ok(v)
        })
        .join()
        .unwrap()
    })
}

// ---------------------------------------------------------------------------------------------
// Planes.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Plane {
    Podlb,
    Iptables,
    Nftables,
}

impl Plane {
    fn id(self) -> &'static str {
        match self {
            Plane::Podlb => "podlb",
            Plane::Iptables => "iptables",
            Plane::Nftables => "nftables",
        }
    }
}

fn sh(ns: &Netns, args: &[&str]) -> Result<String> {
    ns.exec(args)
}

/// No BPF program attached to any interface of the node namespace.
fn assert_no_bpf(node: &Node) -> Result<()> {
    let out = sh(node.ns(), &["bpftool", "net", "show", "-j"])?;
    let v: Value = serde_json::from_str(&out).context("bpftool net show -j")?;
    let attached: usize = v
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o.as_object().into_iter().flatten())
        .map(|(_, l)| l.as_array().map_or(0, |a| a.len()))
        .sum();
    ensure!(
        attached == 0,
        "BPF programs still attached in the node namespace: {out}"
    );
    Ok(())
}

fn assert_no_netfilter(node: &Node) -> Result<()> {
    let out = sh(node.ns(), &["nft", "list", "ruleset"])?;
    ensure!(
        out.trim().is_empty(),
        "netfilter rules present in the node namespace:\n{out}"
    );
    Ok(())
}

/// Conntrack entries of netfilter for the VIP (0 when netfilter did not see the traffic).
fn conntrack_entries(node: &Node) -> usize {
    sh(node.ns(), &["conntrack", "-L", "-d", &VIP.to_string()])
        .map(|o| o.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

fn flush_netfilter(node: &Node) -> Result<()> {
    sh(node.ns(), &["nft", "flush", "ruleset"])?;
    let _ = sh(node.ns(), &["conntrack", "-F"]);
    assert_no_netfilter(node)
}

/// Packets podlb counted for the measured Service's frontends.
fn podlb_packets(agent: &Agent) -> Result<u64> {
    let out = agent.cli(&["service", "list", "-o", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["service"]
                .as_str()
                .is_some_and(|s| s.starts_with("default/echo:"))
        })
        .map(|r| r["packets"].as_u64().unwrap_or(0))
        .sum())
}

/// Packet counters of the `KUBE-SERVICES` rules of the measured Service.
fn iptables_packets(node: &Node, svc: &[SvcPort]) -> Result<u64> {
    let out = sh(node.ns(), &["iptables-save", "-c", "-t", "nat"])?;
    let chains: Vec<String> = svc.iter().map(|s| s.svc_chain()).collect();
    Ok(out
        .lines()
        .filter(|l| {
            l.contains("-A KUBE-SERVICES") && chains.iter().any(|c| l.ends_with(&format!("-j {c}")))
        })
        .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum())
}

fn wait_served(client: &Netns) -> Result<()> {
    let path = client.path();
    wait_for(Duration::from_secs(60), || {
        thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                enter(&path)?;
                crr_once(SocketAddrV4::new(VIP, 80))?;
                let mut st = None;
                op_udp(&mut st)
            })
            .join()
            .unwrap()
        })
    })
    .context("the Service never answered")
}

struct Samples {
    crr: Vec<f64>,
    udp: Vec<f64>,
    tput: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
}

impl Samples {
    fn new() -> Self {
        Samples {
            crr: vec![],
            udp: vec![],
            tput: vec![],
            p50: vec![],
            p99: vec![],
            errors: 0,
        }
    }
}

/// `rounds` rounds of every metric, appended to `s`.
fn measure(client: &Netns, opts: &Opts, rounds: usize, s: &mut Samples) -> Result<()> {
    let ns = client.path();
    for _ in 0..rounds {
        let (r, e) = rate(&ns, CLIENT_THREADS, opts.secs, op_crr)?;
        s.crr.push(r);
        s.errors += e;
        let (r, e) = rate(&ns, CLIENT_THREADS, opts.secs, op_udp)?;
        s.udp.push(r);
        s.errors += e;
        s.tput.push(throughput(&ns, opts.secs)?);
        let l = connect_latency(&ns, opts.latency_conns)?;
        s.p50.push(quantile(&l, 0.5));
        s.p99.push(quantile(&l, 0.99));
    }
    Ok(())
}

/// One data plane brought up on the node.
struct Up {
    plane: Plane,
    agent: Option<Agent>,
    before: u64,
}

/// Brings `plane` up (after checking that no other plane is active) and waits until the
/// measured Service answers. Records the setup time in `details`.
fn up(
    plane: Plane,
    node: &Node,
    podlb: &Path,
    all: &[SvcPort],
    bench: &[SvcPort],
    tmp: &Path,
    details: &mut Value,
) -> Result<Up> {
    let client = node.pod(0).ns();
    let t0 = Instant::now();
    let key = match plane {
        Plane::Podlb => "program_s",
        _ => "load_s",
    };
    let mut agent = None;
    match plane {
        Plane::Podlb => {
            assert_no_netfilter(node)?;
            assert_no_bpf(node)?;
            let a = Agent::start(podlb, node)?;
            write_manifests(a.manifests(), all, 500)?;
            wait_served(client).map_err(|e| e.context(a.log()))?;
            agent = Some(a);
        }
        Plane::Iptables => {
            assert_no_bpf(node)?;
            assert_no_netfilter(node)?;
            let file = tmp.join("iptables.rules");
            if !file.exists() {
                fs::write(&file, rules::iptables(all))?;
            }
            sh(node.ns(), &["iptables-restore", file.to_str().unwrap()])?;
            details["rules_bytes"] = json!(fs::metadata(&file)?.len());
        }
        Plane::Nftables => {
            assert_no_bpf(node)?;
            assert_no_netfilter(node)?;
            let file = tmp.join("nftables.rules");
            if !file.exists() {
                fs::write(&file, rules::nftables(all))?;
            }
            sh(node.ns(), &["nft", "-f", file.to_str().unwrap()])?;
            details["rules_bytes"] = json!(fs::metadata(&file)?.len());
        }
    }
    let setup = t0.elapsed().as_secs_f64();
    if plane != Plane::Podlb {
        wait_served(client)?;
        let _ = sh(node.ns(), &["conntrack", "-F"]);
    }
    details[key]
        .as_array_mut()
        .map(|v| v.push(json!(setup)))
        .unwrap_or_else(|| details[key] = json!([setup]));
    let before = match plane {
        Plane::Podlb => podlb_packets(agent.as_ref().unwrap())?,
        Plane::Iptables => iptables_packets(node, bench)?,
        Plane::Nftables => 0,
    };
    Ok(Up {
        plane,
        agent,
        before,
    })
}

/// Checks that the plane served the traffic measured since `up`, then tears it down.
fn down(u: Up, node: &Node, bench: &[SvcPort], details: &mut Value) -> Result<()> {
    let (served, what) = match u.plane {
        Plane::Podlb => {
            let agent = u.agent.unwrap();
            let n = podlb_packets(&agent)? - u.before;
            ensure!(
                conntrack_entries(node) == 0,
                "netfilter conntrack saw the podlb traffic"
            );
            drop(agent); // stops the agent; `podlb reset` detaches and unpins everything
            assert_no_bpf(node)?;
            (n, "podlb_packets")
        }
        Plane::Iptables => {
            let n = iptables_packets(node, bench)? - u.before;
            ensure!(
                conntrack_entries(node) > 0,
                "no netfilter conntrack entries for the VIP"
            );
            assert_no_bpf(node)?;
            flush_netfilter(node)?;
            (n, "iptables_packets")
        }
        Plane::Nftables => {
            let n = conntrack_entries(node) as u64;
            assert_no_bpf(node)?;
            flush_netfilter(node)?;
            (n, "conntrack_entries")
        }
    };
    ensure!(
        served > 0,
        "{}: {what} did not grow: this plane did not serve the traffic",
        u.plane.id()
    );
    details[what]
        .as_array_mut()
        .map(|v| v.push(json!(served)))
        .unwrap_or_else(|| details[what] = json!([served]));
    Ok(())
}

pub fn run(podlb: &Path, opts: &Opts) -> Result<Vec<Figure>> {
    let t = Instant::now();
    let mut figs = Vec::new();
    let planes = [Plane::Podlb, Plane::Iptables, Plane::Nftables];
    for &scale in &opts.scales {
        let node = Node::new(NodeOptions {
            pods: 1 + BACKENDS,
            network: PodNetwork::Routed,
            external_client: false,
        })?;
        let client = node.pod(0).ns();
        client.sysctl(&[("net.ipv4.ip_local_port_range", "1024 65535")])?;
        let _servers = start_servers(&node);
        let bench = bench_service(&node);
        let mut all = fillers(scale.saturating_sub(1), opts.filler_endpoints);
        all.extend(bench.iter().cloned());
        let tmp = std::env::temp_dir().join(format!("podlb-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        let mut samples: Vec<Samples> = planes.iter().map(|_| Samples::new()).collect();
        let mut details: Vec<Value> = planes.iter().map(|_| json!({})).collect();
        // Where bringing a plane up is cheap, the rounds alternate between the planes (in a
        // rotating order), so that load from elsewhere on the machine does not favour one.
        let interleave = scale <= opts.interleave_upto;
        let (outer, inner) = if interleave {
            (opts.rounds, 1)
        } else {
            (1, opts.rounds)
        };
        for r in 0..outer {
            for i in 0..planes.len() {
                let p = if interleave {
                    (r + i) % planes.len()
                } else {
                    i
                };
                eprintln!(
                    "bench B: {scale} services, {}, round {}, {:.1?}",
                    planes[p].id(),
                    if interleave {
                        r.to_string()
                    } else {
                        "all".into()
                    },
                    t.elapsed()
                );
                let u = up(planes[p], &node, podlb, &all, &bench, &tmp, &mut details[p])?;
                measure(client, opts, inner, &mut samples[p])?;
                down(u, &node, &bench, &mut details[p])?;
            }
        }
        let _ = fs::remove_dir_all(&tmp);
        for (p, plane) in planes.iter().enumerate() {
            let s = &samples[p];
            let mut d = details[p].clone();
            d["errors"] = json!(s.errors);
            d["interleaved"] = json!(interleave);
            if s.errors > 0 {
                eprintln!(
                    "bench B: {} at {scale} services: {} failed operations",
                    plane.id(),
                    s.errors
                );
            }
            let label = format!("{} svc", crate::report::fmt_num(scale as f64));
            let id = plane.id();
            let mk = |metric: &str, name: &str, unit: &'static str, v: &Vec<f64>| {
                let mut f = Figure::new(format!("b/{id}/{metric}/{scale}"), "B", name)
                    .scale(label.clone())
                    .unit(unit)
                    .samples(v.clone())
                    .extra(d.clone());
                if *plane == Plane::Podlb {
                    f = f
                        .vs("iptables", format!("b/iptables/{metric}/{scale}"))
                        .vs("nftables", format!("b/nftables/{metric}/{scale}"));
                } else {
                    f = f.vs("podlb", format!("b/podlb/{metric}/{scale}"));
                }
                f
            };
            figs.push(mk(
                "crr",
                "TCP connections (connect, request, response, close)",
                "/s",
                &s.crr,
            ));
            figs.push(mk("udp", "UDP request/response", "/s", &s.udp));
            figs.push(mk(
                "tput",
                "TCP throughput, 1 connection",
                "Gbit/s",
                &s.tput,
            ));
            figs.push(mk("p50", "new connection latency p50", "µs", &s.p50));
            figs.push(mk("p99", "new connection latency p99", "µs", &s.p99));
        }
    }
    if figs.is_empty() {
        bail!("no scales");
    }
    eprintln!("bench B: done in {:.1?}", t.elapsed());
    Ok(figs)
}
