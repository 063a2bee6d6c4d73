//! Runs a [`PodSpec`] with podman, as these machines need it (TOOLCHAIN.md): the runc
//! runtime, the cgroupfs manager, and a containers.conf without default ulimits. A
//! [`Container`] is removed (`podman rm -f`) on drop, with the ConfigMap files written for it.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{Host, PodSpec};
use crate::testbed::{unique_name, wait_until};

/// `podman` with the global options these machines need.
pub fn podman() -> Result<Command> {
    let conf = std::env::temp_dir().join("podlb-test/containers.conf");
    if !conf.exists() {
        fs::create_dir_all(conf.parent().expect("a parent"))?;
        // Raising RLIMIT_NPROC or RLIMIT_NOFILE is refused here: no default ulimits.
        let tmp = conf.with_extension(unique_name("tmp"));
        fs::write(&tmp, "[containers]\ndefault_ulimits = []\n")?;
        fs::rename(&tmp, &conf)?;
    }
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .env("CONTAINERS_CONF", conf);
    Ok(cmd)
}

/// Fails with a clear message when podman cannot run.
pub fn require_podman() -> Result<()> {
    let ok = Command::new("podman")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        bail!("podman is missing: install it with `cargo xtask setup` (podman buildah runc mmdebstrap)");
    }
    Ok(())
}

/// Runs `podman ARGS`; stdout, or an error with the status and stderr.
pub fn podman_out(args: &[&str]) -> Result<String> {
    let out = podman()?.args(args).output().context("running podman")?;
    if !out.status.success() {
        bail!(
            "podman {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A container started from a [`PodSpec`]; removed on drop.
pub struct Container {
    name: String,
    work: PathBuf,
}

impl Container {
    /// Writes the ConfigMap files under `host.configmaps`, then `podman run -d` of `spec`.
    pub fn start(spec: &PodSpec, host: &Host) -> Result<Container> {
        require_podman()?;
        let name = unique_name("podlb-ctr");
        let c = Container {
            name: name.clone(),
            work: host.configmaps.clone(),
        };
        write_configmaps(spec, &host.configmaps)?;
        let args = spec.podman_args(&name, host)?;
        let mut cmd = podman()?;
        cmd.arg("run").arg("--detach").args(&args);
        let out = cmd.output().context("running podman run")?;
        if !out.status.success() {
            bail!(
                "podman run {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(c)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the container wrote to stdout and stderr (across restarts).
    pub fn logs(&self) -> String {
        podman()
            .and_then(|mut c| Ok(c.args(["logs", &self.name]).output()?))
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s
            })
            .unwrap_or_else(|e| format!("(podman logs {}: {e:#})", self.name))
    }

    /// (status, exit code), e.g. ("running", 0) or ("exited", 1).
    pub fn state(&self) -> Result<(String, i32)> {
        let s = podman_out(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.name,
        ])?;
        let (status, code) = s
            .trim()
            .split_once(' ')
            .with_context(|| format!("podman inspect: {s:?}"))?;
        Ok((status.to_string(), code.parse().unwrap_or(-1)))
    }

    /// The exit code once the container has stopped, waiting up to `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        wait_until(timeout, Duration::from_millis(100), || {
            match self.state() {
                Ok((s, c)) if s == "exited" || s == "stopped" => code = Some(c),
                _ => {}
            }
            code.is_some()
        });
        code
    }

    /// `podman restart`: SIGTERM (then SIGKILL after the grace period), and the same
    /// container started again, as kubelet restarts a container.
    pub fn restart(&self) -> Result<()> {
        podman_out(&["restart", &self.name]).map(|_| ())
    }

    /// The container's main process id on the host, if it runs.
    pub fn pid(&self) -> Option<u32> {
        podman_out(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Ok(mut c) = podman() {
            let _ = c
                .args(["rm", "--force", "--time", "2", &self.name])
                .output();
        }
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// `podman run --rm` of `spec` in the foreground with `extra_args` after the spec's args;
/// its output (the ConfigMap files are written under `host.configmaps`, removed after).
pub fn run_once(spec: &PodSpec, host: &Host, extra_args: &[&str]) -> Result<Output> {
    require_podman()?;
    write_configmaps(spec, &host.configmaps)?;
    let name = unique_name("podlb-once");
    let mut cmd = podman()?;
    cmd.arg("run")
        .arg("--rm")
        .args(spec.podman_args(&name, host)?)
        .args(extra_args);
    let out = cmd.output().context("running podman run --rm");
    let _ = fs::remove_dir_all(&host.configmaps);
    out
}

fn write_configmaps(spec: &PodSpec, dir: &Path) -> Result<()> {
    for (rel, text) in spec.configmap_files() {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().expect("a volume directory"))?;
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
