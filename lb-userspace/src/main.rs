//! `podlb`: the agent and the operator CLI.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use podlb::{agent, cli};

const DEFAULT_BPF_ROOT: &str = "/sys/fs/bpf/podlb";

#[derive(Parser)]
#[command(
    name = "podlb",
    version,
    about = "In-kernel Kubernetes Service load balancer (kube-proxy replacement)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent: watch Services and EndpointSlices, program the datapath.
    Agent(AgentArgs),
    /// Inspect Services as programmed in the datapath (reads the pinned maps).
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// Show the datapath status: pins, attached interfaces, map fill.
    Status(ReadArgs),
    /// Detach and remove everything podlb pinned under the bpf root.
    Reset {
        #[arg(long, default_value = DEFAULT_BPF_ROOT)]
        bpf_root: PathBuf,
    },
    /// Remove the iptables chains and nftables tables kube-proxy left behind, and nothing else
    /// (run it once kube-proxy is stopped).
    CleanupKubeProxy {
        /// Print what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Kubeconfig for the kubernetes source (default: in-cluster config).
    #[arg(long, conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Read Services, EndpointSlices and Nodes from YAML files in DIR (live).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// This node's name (default: $NODE_NAME, then the hostname).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// External interface (repeatable).
    #[arg(long = "external-interface", value_name = "IFACE")]
    external_interfaces: Vec<String>,
    /// Glob for host-side pod interfaces, e.g. 'veth*' (repeatable).
    #[arg(long = "pod-interface", value_name = "GLOB")]
    pod_interfaces: Vec<String>,
    #[arg(long, default_value = DEFAULT_BPF_ROOT)]
    bpf_root: PathBuf,
    /// Serve /healthz and /livez here ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:10256", value_name = "ADDR")]
    healthz_addr: String,
    /// Serve Prometheus /metrics here ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:10249", value_name = "ADDR")]
    metrics_addr: String,
    /// Re-read the maps, repair what changed behind the agent's back, and re-sync this often
    /// (seconds; fractions allowed).
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    resync_interval: f64,
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// List frontends with their backends and counters.
    List(ReadArgs),
}

#[derive(clap::Args)]
struct ReadArgs {
    #[arg(long, default_value = DEFAULT_BPF_ROOT)]
    bpf_root: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODLB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Agent(a) => run_agent(a),
        Cmd::Service {
            cmd: ServiceCmd::List(r),
        } => cli::service_list(&r.bpf_root, matches!(r.output, Output::Json)),
        Cmd::Status(r) => cli::status(&r.bpf_root, matches!(r.output, Output::Json)),
        Cmd::Reset { bpf_root } => cli::reset(&bpf_root),
        Cmd::CleanupKubeProxy { dry_run } => cli::cleanup_kube_proxy(dry_run),
    }
}

fn run_agent(a: AgentArgs) -> Result<()> {
    tune_malloc();
    let source = match a.manifests {
        Some(dir) => agent::SourceConfig::Manifests(dir),
        None => agent::SourceConfig::Kubernetes(a.kubeconfig),
    };
    if !(a.resync_interval.is_finite() && a.resync_interval >= 0.1) {
        bail!("--resync-interval must be at least 0.1 seconds");
    }
    let node_name = match a.node_name {
        Some(n) => n,
        None => hostname()?,
    };
    let pod_interfaces = a
        .pod_interfaces
        .iter()
        .map(|g| {
            glob::Pattern::new(g)
                .map_err(|e| anyhow::anyhow!("bad --pod-interface glob {g:?}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = agent::AgentConfig {
        source,
        node_name,
        external_interfaces: a.external_interfaces,
        pod_interfaces,
        bpf_root: a.bpf_root,
        healthz_addr: listen_addr("--healthz-addr", &a.healthz_addr)?,
        metrics_addr: listen_addr("--metrics-addr", &a.metrics_addr)?,
        resync_interval: std::time::Duration::from_secs_f64(a.resync_interval),
        cluster_cidrs: Vec::new(),
        nodeport_addresses: Default::default(),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(agent::run(cfg))
}

/// The agent's heap: one malloc arena for all its threads (the watch thread's and the HTTP
/// servers' freed memory is reused by the agent loop instead of sitting in arenas of their
/// own), and blocks from 256 KiB up mapped on their own, so that the big short-lived buffers of
/// a full sync (list pages, the first plan) go back to the system when freed instead of
/// fragmenting the heap. Measured at 10,000 Services × 10 endpoints: see README, Performance.
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// "HOST:PORT", or "off" (or empty) for no server.
fn listen_addr(flag: &str, s: &str) -> Result<Option<std::net::SocketAddr>> {
    match s {
        "" | "off" => Ok(None),
        s => s
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("bad {flag} {s:?}: {e} (want HOST:PORT or off)")),
    }
}

fn hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}
