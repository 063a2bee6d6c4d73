//! `cargo xtask demo`: a node built from network namespaces, the podlb agent on it, real servers
//! in three backend pods, and real clients (a pod and an external host) sending traffic to a
//! dual-stack Service over IPv4 and IPv6. Prints how the requests spread over the backends, then tears everything
//! down (on success, on error and on Ctrl-C). `--keep` leaves it running until Ctrl-C.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use testkit::testbed::{
    tcp_request, udp_request, wait_for, Agent, Netns, Node, NodeOptions, PodNetwork, Reply,
    TcpServer, UdpServer,
};

#[derive(Parser)]
struct Args {
    /// The podlb binary to run as the agent.
    #[arg(long)]
    podlb: PathBuf,
    /// bpftool, for the map dump shown at the end.
    #[arg(long, default_value = "bpftool")]
    bpftool: String,
    /// Keep the node and the agent running until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Requests per client and protocol.
    #[arg(long, default_value_t = 30)]
    requests: usize,
}

const MANIFEST: &str = include_str!("../../demo/web.yaml");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
const TIMEOUT: Duration = Duration::from_secs(2);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let args = Args::parse();
    // Everything built in `run` is torn down by Drop guards when it returns.
    let r = run(&args);
    println!("\ntorn down: namespaces deleted, datapath reset, bpffs unmounted");
    if let Err(e) = r {
        eprintln!("demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    println!(
        "== building a node: 1 client pod, 3 backend pods (routed /32 veths), 1 external client"
    );
    let node = Node::new(NodeOptions {
        pods: 4,
        network: PodNetwork::Routed,
        external_client: true,
    })?;
    let backends = &node.pods()[1..];
    let _tcp: Vec<TcpServer> = backends
        .iter()
        .map(|p| TcpServer::start(p.ns(), 8080, p.name()))
        .collect();
    let _udp: Vec<UdpServer> = backends
        .iter()
        .map(|p| UdpServer::start(p.ns(), 5353, p.name()))
        .collect();
    for p in node.pods() {
        println!(
            "   {:<5} {:<12} host interface {}",
            p.name(),
            p.ip(),
            p.host_if()
        );
    }
    println!(
        "   ext   {:<12} via the node's ext0 ({})",
        node.ext_ip().unwrap(),
        node.node_ip().unwrap()
    );

    println!("\n== starting podlb agent (bpf root and manifests in temporary directories)");
    let agent = Agent::start(&args.podlb, &node)?;
    agent.write_manifest("web.yaml", MANIFEST)?;
    let client = node.pod(0);
    wait_for(Duration::from_secs(10), || {
        tcp_request(client.ns(), SocketAddrV4::new(VIP, 80), TIMEOUT)
    })
    .with_context(|| {
        format!(
            "the Service never became reachable; agent log:\n{}",
            agent.log()
        )
    })?;
    println!("{}", agent.cli(&["service", "list"])?);

    let n = args.requests;
    let http = SocketAddrV4::new(VIP, 80);
    let echo = SocketAddrV4::new(VIP, 53);
    report(
        "default/web:http  TCP 10.96.0.10:80, from pod0",
        n,
        client.ns(),
        |ns| tcp_request(ns, http, TIMEOUT),
        http,
        client.ip(),
    )?;
    report(
        "default/web:echo  UDP 10.96.0.10:53, from pod0",
        n,
        client.ns(),
        |ns| udp_request(ns, echo, TIMEOUT),
        echo,
        client.ip(),
    )?;
    let ext = node.ext().unwrap();
    report(
        "default/web:http  TCP 10.96.0.10:80, from the external client",
        n,
        ext,
        |ns| tcp_request(ns, http, TIMEOUT),
        http,
        node.ext_ip().unwrap(),
    )?;
    let node_ip = node.node_ip().unwrap();
    let nodeport = SocketAddrV4::new(node_ip, 30080);
    report(
        "default/web:http  NodePort 192.168.77.1:30080 (XDP on ext0), from the external client",
        n,
        ext,
        |ns| tcp_request(ns, nodeport, TIMEOUT),
        nodeport,
        node_ip,
    )?;
    let http6 = SocketAddrV6::new(VIP6, 80, 0, 0);
    report(
        "default/web:http  TCP [fd00:96::10]:80 (IPv6), from pod0",
        n,
        client.ns(),
        |ns| tcp_request(ns, http6, TIMEOUT),
        http6,
        client.ip6(),
    )?;
    let node_ip6 = node.node_ip6().unwrap();
    let nodeport6 = SocketAddrV6::new(node_ip6, 30080, 0, 0);
    report(
        "default/web:http  NodePort [fd00:77::1]:30080 (IPv6, XDP on ext0), from the external client",
        n,
        ext,
        |ns| tcp_request(ns, nodeport6, TIMEOUT),
        nodeport6,
        node_ip6,
    )?;

    println!("\n== podlb service list (read from the pinned maps)");
    println!("{}", agent.cli(&["service", "list"])?);
    let root = agent.bpf_root().display().to_string();
    println!("== bpftool map dump pinned {root}/lb_frontends");
    let out = Command::new(&args.bpftool)
        .args(["map", "dump", "pinned", &format!("{root}/lb_frontends")])
        .output()
        .context("running bpftool")?;
    println!("{}", String::from_utf8_lossy(&out.stdout));

    if args.keep {
        let podlb = args.podlb.display();
        println!("== kept running; press Ctrl-C to tear down. Try:");
        println!("   {podlb} service list --bpf-root {root}");
        println!("   {podlb} status --bpf-root {root}");
        println!("   bpftool map dump pinned {root}/lb_conntrack");
        println!(
            "   ip netns exec {} socat - TCP:10.96.0.10:80      # type a line",
            client.ns().name()
        );
        println!(
            "   ip netns exec {} socat - UDP:10.96.0.10:53",
            client.ns().name()
        );
        println!("   manifests (edit live): {}", agent.manifests().display());
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Sends `n` requests from `ns`, prints the spread over backends, and checks what each side
/// saw: every reply must come from `vip`, and the backend must have seen the client as `seen`
/// (its own address, or the node's when masqueraded).
fn report(
    title: &str,
    n: usize,
    ns: &Netns,
    req: impl Fn(&Netns) -> Result<Reply>,
    vip: impl Into<SocketAddr>,
    seen: impl Into<IpAddr>,
) -> Result<()> {
    let (vip, seen): (SocketAddr, IpAddr) = (vip.into(), seen.into());
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        check_stop()?;
        let r = req(ns)?;
        if r.peer != vip {
            bail!("reply came from {} instead of {vip}", r.peer);
        }
        if r.seen_client.ip() != seen {
            bail!("backend saw client {} instead of {seen}", r.seen_client);
        }
        *spread.entry(r.ident).or_default() += 1;
    }
    println!("\n== {title}: {n} requests");
    for (pod, c) in &spread {
        println!("   {pod:<5} {c:>3}  {}", "#".repeat(*c));
    }
    println!("   every reply came from {vip}; backends saw the client as {seen}");
    Ok(())
}
