//! `podlb-bench`: the numbers behind `cargo xtask bench`.
//!
//! - A. per-packet cost of the XDP and TC programs (BPF_PROG_TEST_RUN) against empty programs;
//! - B. real traffic in the namespace test bed through podlb, then through kube-proxy-shaped
//!   iptables rules, then through kube-proxy-shaped nftables rules;
//! - C. the agent's control plane through the `kubernetes` source (against the in-process API
//!   server stand-in) and through the `manifests` source.
//!
//! Every figure is the median, and min–max, of 5 rounds (2 for section C with `--quick`), and
//! is also given as a ratio to a baseline or target measured or set in the same run. Prints a Markdown table and writes the same figures
//! as JSON. Needs root. Asserts no thresholds: it fails only when a measurement cannot be made
//! or a check of what was measured fails (wrong verdict, wrong bytes, wrong data plane).
mod control;
mod datapath;
mod e2e;
mod report;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use report::{Figure, Report};

#[derive(Parser)]
#[command(
    about = "podlb benchmarks: datapath, end to end against iptables and nftables, control plane"
)]
struct Args {
    /// The `podlb` binary (agent and CLI).
    #[arg(long)]
    podlb: PathBuf,
    /// A reduced set that runs in well under a minute (CI: keeps the harness from rotting).
    #[arg(long)]
    quick: bool,
    /// Sections to run, any of A, B, C.
    #[arg(long, default_value = "ABC")]
    sections: String,
    /// Directory for the JSON file.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    testkit::testbed::require_root()
        .context("podlb-bench needs root (namespaces, eBPF, netfilter)")?;
    let t = Instant::now();
    let sections = args.sections.to_uppercase();
    let mut figures: Vec<Figure> = Vec::new();
    let rounds = 5;
    if sections.contains('A') {
        let opts = if args.quick {
            datapath::Opts {
                scales: vec![1, 1000],
                ct_fill: 0,
                rounds,
                runs: 300,
                repeat: 100_000,
            }
        } else {
            datapath::Opts {
                scales: vec![1, 1000, 10_000, 100_000],
                ct_fill: 1_000_000,
                rounds,
                runs: 3000,
                repeat: 1_000_000,
            }
        };
        figures.extend(datapath::run(&opts)?);
    }
    if sections.contains('B') {
        let opts = if args.quick {
            e2e::Opts {
                scales: vec![1],
                rounds,
                secs: 0.2,
                latency_conns: 50,
                filler_endpoints: 10,
                interleave_upto: 0,
            }
        } else {
            e2e::Opts {
                scales: vec![1, 10_000],
                rounds,
                secs: 2.0,
                latency_conns: 1000,
                filler_endpoints: 10,
                interleave_upto: 1000,
            }
        };
        figures.extend(e2e::run(&args.podlb, &opts)?);
    }
    if sections.contains('C') {
        // The kubernetes source's endpoint changes span 3 of the agent's resync intervals per
        // round: 2 s with --quick, the default 10 s otherwise.
        let opts = if args.quick {
            control::Opts {
                services: 1000,
                rounds: 2,
                changes: 3,
                resync: Duration::from_secs(2),
                resync_spans: 3,
                mean_pause: Duration::from_millis(200),
            }
        } else {
            control::Opts {
                services: 10_000,
                rounds,
                changes: 20,
                resync: Duration::from_secs(10),
                resync_spans: 3,
                mean_pause: Duration::from_millis(250),
            }
        };
        figures.extend(control::run(&args.podlb, &opts)?);
    }
    let report = Report { figures };
    let md = report.markdown();
    let meta = machine(args.quick, t.elapsed().as_secs_f64());
    println!("{}", meta_markdown(&meta));
    println!("{md}");
    let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    fs::create_dir_all(&args.out)?;
    let path = args.out.join(format!(
        "bench-{secs}{}.json",
        if args.quick { "-quick" } else { "" }
    ));
    fs::write(&path, serde_json::to_string_pretty(&report.json(meta))?)?;
    println!("JSON: {}", path.display());
    Ok(())
}

fn first_line_with(path: &str, key: &str) -> String {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn machine(quick: bool, secs: f64) -> serde_json::Value {
    let uname = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "date": date,
        "kernel": uname,
        "cpu": first_line_with("/proc/cpuinfo", "model name"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": first_line_with("/proc/meminfo", "MemTotal"),
        "quick": quick,
        "duration_s": secs,
        "bench_map_sizes": datapath::MAP_SIZES.iter().map(|(n, s)| json!({"map": n, "max_entries": s})).collect::<Vec<_>>(),
    })
}

fn meta_markdown(m: &serde_json::Value) -> String {
    format!(
        "podlb bench{} — {}, {} CPUs ({}), kernel {}, {} (took {:.0} s)",
        if m["quick"].as_bool() == Some(true) {
            " --quick"
        } else {
            ""
        },
        m["date"].as_str().unwrap_or(""),
        m["cpus"],
        m["cpu"].as_str().unwrap_or(""),
        m["kernel"].as_str().unwrap_or(""),
        m["memory"].as_str().unwrap_or(""),
        m["duration_s"].as_f64().unwrap_or(0.0),
    )
}
