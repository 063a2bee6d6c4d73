//! Developer and CI entry points: `cargo xtask setup | build | test | lint | manifests | image |
//! demo | bench`.
//!
//! The build recipe is the one in TOOLCHAIN.md: the eBPF crate is compiled with Debian's
//! `rustc-web` (which ships a prebuilt BPF `core`) and linked by bpf-linker built against
//! LLVM 22; everything else uses the rustup toolchain.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod image;
mod layout;
mod manifests;

#[derive(Parser)]
#[command(about = "podlb developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, bpf-linker). Idempotent.
    Setup,
    /// Build the eBPF object (with BTF), then `podlb` with the object embedded, and the dev
    /// tools `podlb-bench` and `podlb-demo` (package podlb-devtools).
    Build,
    /// Setup, build, then run the unit tests and the privileged integration tests.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rustfmt --check, clippy with warnings as errors, and the layout rules (module docs,
    /// file sizes, no import cycles). Also run by `test`.
    Lint,
    /// Render deploy/'s kustomizations (`kubectl kustomize`) and validate the objects against
    /// the oldest and newest supported Kubernetes schemas. Also run by `test`.
    Manifests,
    /// Build the OCI image localhost/podlb:<version> (and :<version>-<git sha>) with buildah,
    /// from a Debian root filesystem made by mmdebstrap; no registry is needed.
    Image {
        /// Put this podlb binary in the image instead of setting up and building one.
        #[arg(long, value_name = "PATH")]
        podlb: Option<PathBuf>,
    },
    /// Build a small node from network namespaces, run the agent on it and send traffic.
    Demo {
        /// Keep the topology and the agent running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Setup, build, then benchmark the datapath, podlb against kube-proxy-shaped iptables and
    /// nftables rules, and the control plane. Prints a Markdown table, writes JSON.
    Bench {
        /// A reduced set, in well under a minute (also run by `cargo xtask test`).
        #[arg(long)]
        quick: bool,
        /// Sections to run: any of A (per packet), B (end to end), C (control plane).
        #[arg(long, default_value = "ABC")]
        sections: String,
    },
}

/// Debian packages: the build toolchain (TOOLCHAIN.md) and the tools tests and demo use.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "bpftool",
    "iproute2",
    "iptables",
    "nftables",
    "socat",
    "iperf3",
    "tcpdump",
    "conntrack",
    "netcat-openbsd",
    "iputils-ping",
    // The image (`cargo xtask image`) and the podman end-to-end test.
    "podman",
    "buildah",
    "runc",
    "mmdebstrap",
    "binutils",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Lint => lint(),
        Cmd::Manifests => {
            setup()?;
            manifests::manifests(&root())
        }
        Cmd::Build => {
            setup()?;
            build()
        }
        Cmd::Test { args } => {
            require_root("test", "the integration tests create network namespaces, load eBPF programs and mount bpffs")?;
            setup()?;
            build()?;
            lint()?;
            manifests::manifests(&root())?;
            test(&args)?;
            // The quick bench keeps the harness from rotting; it asserts no thresholds. Only
            // with the whole suite, not when a filter picks some tests.
            if args.is_empty() {
                bench(true, "ABC")?;
            }
            Ok(())
        }
        Cmd::Image { podlb } => {
            require_root("image", "buildah and podman use the system's image store")?;
            let podlb = match podlb {
                Some(p) => p,
                None => {
                    setup()?;
                    build()?;
                    image::default_binary(&root())
                }
            };
            image::build(&root(), &podlb, env!("CARGO_PKG_VERSION"))
        }
        Cmd::Bench { quick, sections } => {
            require_root(
                "bench",
                "it creates network namespaces, loads eBPF programs and iptables/nftables rules",
            )?;
            setup()?;
            build()?;
            bench(quick, &sections)
        }
        Cmd::Demo { keep } => {
            setup()?;
            build()?;
            let mut cmd = Command::new(root().join("target/release/podlb-demo"));
            cmd.arg("--podlb").arg(root().join("target/release/podlb"));
            cmd.arg("--bpftool").arg("bpftool");
            if keep {
                cmd.arg("--keep");
            }
            // Replace this process, so Ctrl-C and SIGTERM reach the demo, which tears down.
            let err = std::os::unix::process::CommandExt::exec(&mut cmd);
            Err(err).context("running podlb-demo")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn ebpf_object() -> PathBuf {
    root().join("target/ebpf/bpfel-unknown-none/release/lb-ebpf")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn setup() -> Result<()> {
    let t = Instant::now();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("setup: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if !linker_ok {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22)");
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX))?;
    }
    manifests::setup(&root())?;
    eprintln!("setup: done in {:.1?}", t.elapsed());
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn build() -> Result<()> {
    let t = Instant::now();
    // The eBPF crate: Debian's compiler, prebuilt BPF core, BTF for every map.
    run(Command::new("cargo")
        .current_dir(root().join("lb-ebpf"))
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", root().join("target/ebpf"))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .env_remove("RUSTFLAGS"))?;
    if !ebpf_object().exists() {
        bail!(
            "eBPF object missing after build: {}",
            ebpf_object().display()
        );
    }
    // Every binary of the workspace: podlb, and the dev tools podlb-bench and podlb-demo
    // (package podlb-devtools), all into target/release.
    run(userspace_cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    eprintln!("build: done in {:.1?}", t.elapsed());
    Ok(())
}

/// `cargo` for the user-space workspace, told where the eBPF object to embed is.
fn userspace_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()).env("PODLB_EBPF_OBJ", ebpf_object());
    cmd
}

fn require_root(task: &str, why: &str) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask {task} needs root: {why}. Run it as root.");
    }
    Ok(())
}

/// The house rules: rustfmt, clippy with every warning an error, and the layout rules of
/// [`layout`] (module docs, file sizes, no import cycles) over the product's sources.
fn lint() -> Result<()> {
    let t = Instant::now();
    let mut problems = Vec::new();
    for dir in LAYOUT_CHECKED {
        let files = layout::read_tree(&root().join(dir))?;
        problems.extend(
            layout::check(&files)
                .into_iter()
                .map(|p| format!("{dir}: {p}")),
        );
    }
    if !problems.is_empty() {
        bail!("layout rules broken:\n  {}", problems.join("\n  "));
    }
    run(Command::new("cargo")
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))
    .context("cargo fmt --check: run `cargo fmt --all`")?;
    run(userspace_cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("lint: done in {:.1?}", t.elapsed());
    Ok(())
}

/// The source trees [`layout::check`] holds to the rules.
const LAYOUT_CHECKED: &[&str] = &["lb-userspace/src", "lb-common/src", "lb-ebpf/src"];

fn test(args: &[String]) -> Result<()> {
    let t = Instant::now();
    // The deploy tests render deploy/ with the same kubectl as `manifests`.
    run(userspace_cargo()
        .args(["test", "--release", "--workspace"])
        .args(args)
        .env("PODLB_KUBECTL", manifests::kubectl(&root())?))?;
    eprintln!("test: done in {:.1?}", t.elapsed());
    Ok(())
}

fn bench(quick: bool, sections: &str) -> Result<()> {
    let t = Instant::now();
    let mut cmd = Command::new(root().join("target/release/podlb-bench"));
    cmd.current_dir(root())
        .arg("--podlb")
        .arg(root().join("target/release/podlb"))
        .arg("--out")
        .arg(root().join("target/bench"))
        .args(["--sections", sections]);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)?;
    eprintln!("bench: done in {:.1?}", t.elapsed());
    Ok(())
}
