//! [`Agent`]: a `podlb agent` process on a test-bed [`Node`], with its own manifests
//! directory and bpf root, restarted or killed at will, cleaned up (`podlb reset`) on drop.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::host::{run, unique_name};
use super::node::Node;
use super::process::{spawn_in_netns_path, BpfRoot, Process};

/// A `podlb agent` on a [`Node`], with its own manifests directory and bpf root. It runs as
/// `--node-name node-{k}` ([`Node::name`]) and attaches to the pod interfaces (`lxc*`) and to
/// the node's [`Node::external_interfaces`] (`ext0` of a standalone node with an external
/// client, `eth0` of a cluster node). Drop stops it, removes everything it pinned
/// (`podlb reset`) and unmounts the bpf root.
pub struct Agent {
    binary: PathBuf,
    node_ns: PathBuf,
    args: Vec<String>,
    manifests: PathBuf,
    root: BpfRoot,
    proc: Option<Process>,
    /// Logs of earlier runs of this agent (before restarts).
    old_logs: String,
}

impl Agent {
    /// Starts the agent. `binary` is the `podlb` executable.
    pub fn start(binary: &Path, node: &Node) -> Result<Agent> {
        Self::start_with(binary, node, &[])
    }

    /// Like [`Agent::start`], with `extra_args` appended to the `podlb agent` command line
    /// (also on every [`Agent::restart`]).
    pub fn start_with(binary: &Path, node: &Node, extra_args: &[&str]) -> Result<Agent> {
        Self::start_source(binary, node, None, extra_args)
    }

    /// Like [`Agent::start_with`], with the kubernetes source (`--kubeconfig kubeconfig`)
    /// instead of the manifests directory.
    pub fn start_kube(
        binary: &Path,
        node: &Node,
        kubeconfig: &Path,
        extra_args: &[&str],
    ) -> Result<Agent> {
        Self::start_source(binary, node, Some(kubeconfig), extra_args)
    }

    fn start_source(
        binary: &Path,
        node: &Node,
        kubeconfig: Option<&Path>,
        extra_args: &[&str],
    ) -> Result<Agent> {
        let root = BpfRoot::new()?;
        let manifests = std::env::temp_dir()
            .join("podlb-test")
            .join(unique_name("manifests"));
        fs::create_dir_all(&manifests)?;
        let source = match kubeconfig {
            Some(k) => ["--kubeconfig".to_string(), k.display().to_string()],
            None => ["--manifests".to_string(), manifests.display().to_string()],
        };
        let mut args: Vec<String> = vec![
            "agent".into(),
            source[0].clone(),
            source[1].clone(),
            "--node-name".into(),
            node.name(),
            "--pod-interface".into(),
            "lxc*".into(),
            "--bpf-root".into(),
            root.path().display().to_string(),
        ];
        for iface in node.external_interfaces() {
            args.extend(["--external-interface".into(), iface]);
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut agent = Agent {
            binary: binary.to_path_buf(),
            node_ns: node.ns().path(),
            args,
            manifests,
            root,
            proc: None,
            old_logs: String::new(),
        };
        agent.restart()?;
        Ok(agent)
    }

    /// Starts the agent process (again).
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
            self.old_logs.push_str(&p.log());
        }
        let mut cmd = Command::new(&self.binary);
        // PODLB_AGENT_LOG (e.g. "info,podlb::agent=debug") sets the agent's log filter.
        let filter = std::env::var("PODLB_AGENT_LOG").unwrap_or_else(|_| "info".into());
        cmd.args(&self.args).env("PODLB_LOG", filter);
        self.proc = Some(spawn_in_netns_path(&self.node_ns, cmd).context("spawning podlb agent")?);
        Ok(())
    }

    /// `kill -9` the agent: the datapath stays pinned and keeps forwarding.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
            self.old_logs.push_str(&p.log());
        }
    }

    /// The running process, if any.
    pub fn process(&mut self) -> Option<&mut Process> {
        self.proc.as_mut()
    }

    pub fn bpf_root(&self) -> &Path {
        self.root.path()
    }

    pub fn manifests(&self) -> &Path {
        &self.manifests
    }

    /// All log output of this agent so far, across restarts.
    pub fn log(&self) -> String {
        let mut s = self.old_logs.clone();
        if let Some(p) = &self.proc {
            s.push_str(&p.log());
        }
        s
    }

    /// Writes a manifest file atomically (temp file, then rename), as a ConfigMap update would.
    pub fn write_manifest(&self, file: &str, yaml: &str) -> Result<()> {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        fs::write(&tmp, yaml)?;
        fs::rename(&tmp, self.manifests.join(file))?;
        Ok(())
    }

    pub fn remove_manifest(&self, file: &str) -> Result<()> {
        Ok(fs::remove_file(self.manifests.join(file))?)
    }

    /// Runs a `podlb` CLI subcommand against this agent's bpf root; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args).arg("--bpf-root").arg(self.root.path());
        run(&mut cmd, None)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        let _ = Command::new(&self.binary)
            .args(["reset", "--bpf-root"])
            .arg(self.root.path())
            .output();
        let _ = fs::remove_dir_all(&self.manifests);
    }
}
