//! `kubectl kustomize` for the tests that read deploy/: the kubectl `cargo xtask test` found or
//! installed (`$PODLB_KUBECTL`), else `kubectl` on PATH.
use std::path::Path;
use std::process::Command;

/// The kubectl to run: `$PODLB_KUBECTL`, else `kubectl`.
pub fn kubectl() -> String {
    std::env::var("PODLB_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// `kubectl kustomize DIR`, as YAML text; the error says which kubectl and why.
pub fn render(dir: &Path) -> Result<String, String> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}): set PODLB_KUBECTL, or run cargo xtask setup",
                kubectl()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| "kubectl printed no UTF-8".to_string())
}
