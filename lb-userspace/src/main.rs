//! `podlb`: the agent and the operator CLI.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use podlb::config::{self, AgentArgs, LogFormat, Logging, DEFAULT_BPF_ROOT};
use podlb::{agent, cli};

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
    Agent(Box<AgentArgs>),
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
    let cmd = Cli::parse().cmd;
    // The agent sets up logging once its configuration is read.
    if !matches!(cmd, Cmd::Agent(_)) {
        init_logging(Logging::default());
    }
    match cmd {
        Cmd::Agent(a) => run_agent(*a),
        Cmd::Service {
            cmd: ServiceCmd::List(r),
        } => cli::service_list(&r.bpf_root, matches!(r.output, Output::Json)),
        Cmd::Status(r) => cli::status(&r.bpf_root, matches!(r.output, Output::Json)),
        Cmd::Reset { bpf_root } => cli::reset(&bpf_root),
        Cmd::CleanupKubeProxy { dry_run } => cli::cleanup_kube_proxy(dry_run),
    }
}

/// Logs to stderr, filtered by `$PODLB_LOG` when set, else by the verbosity.
fn init_logging(logging: Logging) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODLB_LOG")
        .unwrap_or_else(|_| config::values::verbosity_filter(logging.verbosity).into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads the configuration (refusing a bad one before anything is touched), then runs the
/// agent, or prints the configuration (`--print-config`).
fn run_agent(a: AgentArgs) -> Result<()> {
    let loaded = config::load(&a)?;
    init_logging(loaded.logging);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        "configuration: {}",
        serde_json::to_string(&config::effective(&loaded))?
    );
    if a.print_config {
        print!("{}", config::effective_yaml(&loaded)?);
        return Ok(());
    }
    tune_malloc();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(agent::run(loaded.agent))
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
