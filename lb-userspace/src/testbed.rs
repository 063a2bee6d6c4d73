//! Test bed: builds a Kubernetes node out of network namespaces, with real servers and clients.
//!
//! Used by the integration tests and by the demo binary. It only needs std, libc and the `ip`
//! command, and must run as root. Every object is a guard that cleans up on `Drop` (also while a
//! test panics), and every name is unique per process and per call, so tests may run in parallel
//! threads and in parallel processes.
//!
//! Topology built by [`Node::new`]:
//!
//! ```text
//!  [ext ns] eth0 192.168.77.2 ──veth── ext0 192.168.77.1 [node ns, ip_forward=1]
//!                                       lxc0 ──veth── eth0 10.244.0.10 [pod0 ns]
//!                                       lxc1 ──veth── eth0 10.244.0.11 [pod1 ns]
//! ```
//!
//! With [`PodNetwork::Routed`] (Calico style) every pod has a /32 and a default route via the
//! link-local gateway 169.254.1.1, and the node has one /32 route per pod. With
//! [`PodNetwork::Bridge`] (bridge CNI style) the `lxc` interfaces are ports of the bridge `cbr0`
//! (10.244.0.1/24), the pods' gateway.
//!
//! [`Node::with_index`] builds node `k` of a cluster: its pods are 10.244.k.(10+i) and its
//! bridge is 10.244.k.1/24. Index 0 is exactly what [`Node::new`] builds.
//!
//! Topology built by [`Cluster::new`] (flannel host-gw style underlay):
//!
//! ```text
//!  [bridge ns] br0 ─┬─ n0 ──veth── eth0 192.168.50.10 [node-0 ns] lxc* ── pods 10.244.0.(10+i)
//!                   ├─ n1 ──veth── eth0 192.168.50.11 [node-1 ns] lxc* ── pods 10.244.1.(10+i)
//!                   ├─ c0 ──veth── eth0 192.168.50.2  [client0 ns]  (external_client)
//!                   └─ c1 ──veth── eth0 192.168.50.3  [client1 ns]  (Cluster::add_client)
//! ```
//!
//! Every node routes each other node's pod CIDR 10.244.j.0/24 via 192.168.50.(10+j); the
//! clients route 10.244.0.0/16 via node 0 and reach the node IPs (NodePorts) directly.
//!
//! ## IPv6 (dual stack)
//!
//! Every network also carries IPv6, with the same plan. Groups are written so that they read
//! like the IPv4 numbers (`fd00:10:244:1::11` is the twin of 10.244.1.11; the digits are hex):
//!
//! | IPv4 | IPv6 |
//! |---|---|
//! | pod `i` of node `k`: 10.244.k.(10+i) | fd00:10:244:k::(10+i), /128 routed, /64 bridge ([`pod_ip6_on`]) |
//! | bridge `cbr0` 10.244.k.1/24 | fd00:10:244:k::1/64 ([`bridge_ip6_on`]) |
//! | routed gateway 169.254.1.1 (proxy ARP) | fe80::ecee:eeff:feee:eeee, the link-local address of the `lxc` veths (MAC ee:ee:ee:ee:ee:ee), as Calico |
//! | `ext0` 192.168.77.1 / client 192.168.77.2, default route via the node | fd00:77::1 / fd00:77::2, `::/0` via fd00:77::1 |
//! | underlay node `k` 192.168.50.(10+k) | fd00:50::(10+k)/64 ([`cluster_node_ip6`]) |
//! | underlay client `n` 192.168.50.(2+n) | fd00:50::(2+n)/64 ([`cluster_client_ip6`]) |
//! | node route 10.244.j.0/24 via node `j` | fd00:10:244:j::/64 via fd00:50::(10+j) |
//! | client route 10.244.0.0/16 via node 0 | fd00:10:244::/48 via fd00:50::10 |
//!
//! Duplicate address detection is off in every namespace (`accept_dad=0` before any interface is
//! created, and `nodad` on every address), so addresses are usable at once. Node namespaces have
//! `net.ipv6.conf.all.forwarding=1`. Bridges have multicast snooping off, so neighbour discovery
//! is flooded like ARP. The servers ([`TcpServer`], [`UdpServer`]) listen on both families and
//! the clients ([`tcp_request`], [`udp_request`], [`TcpSession`]) take any [`SocketAddr`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Address of the node on the external network (`ext0`).
pub const EXT_NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// Address of the external client (`eth0` in the ext namespace).
pub const EXT_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// Gateway address of the pods in [`PodNetwork::Bridge`] mode (address of `cbr0`).
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Link-local gateway of the pods in [`PodNetwork::Routed`] mode (answered by proxy ARP).
pub const ROUTED_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// MAC address of every host-side `lxc` veth in routed mode (as Calico does).
pub const ROUTED_HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// Directory under which [`BpfRoot`] mounts its bpffs instances.
pub const BPF_TEST_DIR: &str = "/run/podlb-test";

const NAME_PREFIX: &str = "plb";
const SERVER_POLL: Duration = Duration::from_millis(100);

/// Address of the first external client of a [`Cluster`] on the underlay (`br0`).
pub const CLUSTER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// Name of a cluster node's uplink to the underlay, in the node namespace.
pub const CLUSTER_UPLINK: &str = "eth0";
/// Most nodes in a [`Cluster`] (node IPs 192.168.50.10..=254).
pub const MAX_CLUSTER_NODES: usize = 245;
/// Most external clients of a [`Cluster`] (client IPs 192.168.50.2..=9).
pub const MAX_CLUSTER_CLIENTS: usize = 8;

/// IPv6 address of the node on the external network (`ext0`).
pub const EXT_NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// IPv6 address of the external client (`eth0` in the ext namespace).
pub const EXT_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
/// IPv6 gateway of the pods of node 0 in [`PodNetwork::Bridge`] mode (address of `cbr0`).
pub const BRIDGE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1);
/// IPv6 gateway of the pods in [`PodNetwork::Routed`] mode: the link-local address every host-side
/// `lxc` veth derives from [`ROUTED_HOST_MAC`] (Calico's fe80::ecee:eeff:feee:eeee).
pub const ROUTED_GATEWAY6: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// IPv6 address of the first external client of a [`Cluster`] on the underlay.
pub const CLUSTER_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 2);

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of `ip`.
    pub fn of(ip: impl Into<IpAddr>) -> IpFamily {
        match ip.into() {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The Kubernetes spelling: `IPv4` or `IPv6` (`ipFamilies`, EndpointSlice `addressType`).
    pub fn k8s_name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// The unspecified address of the family (0.0.0.0 or ::).
    pub fn unspecified(self) -> IpAddr {
        match self {
            IpFamily::V4 => Ipv4Addr::UNSPECIFIED.into(),
            IpFamily::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }
}

/// `n` written in decimal and read as hex, so that IPv6 groups read like the IPv4 numbers they
/// mirror (10 -> 0x10, 244 -> 0x244).
fn dec_as_hex(n: usize) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).expect("at most 4 decimal digits")
}

/// Address of pod `i` on node 0: 10.244.0.(10+i).
pub fn pod_ip(i: usize) -> Ipv4Addr {
    pod_ip_on(0, i)
}

/// Address of pod `i` on node `k`: 10.244.k.(10+i).
pub fn pod_ip_on(k: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, k, 10 + i as u8)
}

/// Gateway of the pods on node `k` in [`PodNetwork::Bridge`] mode: 10.244.k.1 (`cbr0`).
pub fn bridge_ip_on(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, k, 1)
}

/// Address of cluster node `k` on the underlay: 192.168.50.(10+k).
pub fn cluster_node_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 10 + k as u8)
}

/// Address of cluster client `n` on the underlay: 192.168.50.(2+n).
pub fn cluster_client_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 2 + n as u8)
}

/// IPv6 address of pod `i` on node 0: fd00:10:244:0::(10+i).
pub fn pod_ip6(i: usize) -> Ipv6Addr {
    pod_ip6_on(0, i)
}

/// IPv6 address of pod `i` on node `k`: fd00:10:244:k::(10+i) (the twin of 10.244.k.(10+i)).
pub fn pod_ip6_on(k: u8, i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x10,
        0x244,
        dec_as_hex(k as usize),
        0,
        0,
        0,
        dec_as_hex(10 + i),
    )
}

/// IPv6 gateway of the pods on node `k` in [`PodNetwork::Bridge`] mode: fd00:10:244:k::1.
pub fn bridge_ip6_on(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, dec_as_hex(k as usize), 0, 0, 0, 1)
}

/// IPv6 address of cluster node `k` on the underlay: fd00:50::(10+k).
pub fn cluster_node_ip6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, dec_as_hex(10 + k))
}

/// IPv6 address of cluster client `n` on the underlay: fd00:50::(2+n).
pub fn cluster_client_ip6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, dec_as_hex(2 + n))
}

/// `plb{pid}-{counter}`: unique within the machine for as long as this process lives.
fn unique_prefix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}-{n}", std::process::id())
}

/// A short unique name such as `plb1234-7-pod0` (process id + per-process counter + role).
pub fn unique_name(role: &str) -> String {
    format!("{}-{role}", unique_prefix())
}

/// Fails with a clear message unless running as root (the test bed needs it; never skip).
pub fn require_root() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the podlb test bed needs root (network namespaces, veths, bpffs mounts); run as root"
        );
    }
    Ok(())
}

/// Polls `cond` every `poll` until it returns true (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(poll);
    }
}

/// Retries `f` every 50 ms until it returns `Ok` or `timeout` passes; then returns the last error.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs a command, returns its stdout; the error carries the command line, status and stderr.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {desc}"))?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin
                .map(|s| format!("\nbatch input:\n{s}"))
                .unwrap_or_default()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs several `ip` commands (one per line) in namespace `ns` with `ip -n NS -batch -`.
fn ip_batch(ns: &Netns, lines: &[String]) -> Result<()> {
    let input = lines.join("\n") + "\n";
    run(
        Command::new("ip").args(["-n", ns.name(), "-batch", "-"]),
        Some(&input),
    )?;
    Ok(())
}

/// Serialises `ip netns add/del` within this process: concurrent first-time setup of the
/// /run/netns shared mount by iproute2 is racy.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Removes leftovers (namespaces and bpffs mounts named `plb{pid}-…`) of test processes that died
/// without cleaning up. Runs once per process, automatically, before the first namespace or bpf
/// root is created.
pub fn cleanup_stale() {
    fn dead_owner(name: &str) -> bool {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
    }
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if dead_owner(&name) {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let _ = run(Command::new("ip").args(["netns", "del", &name]), None);
        }
    }
    for entry in fs::read_dir(BPF_TEST_DIR).into_iter().flatten().flatten() {
        if dead_owner(&entry.file_name().to_string_lossy()) {
            unmount_and_remove(&entry.path());
        }
    }
}

fn cleanup_stale_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(cleanup_stale);
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `unique_name(role)` with `lo` up.
    pub fn new(role: &str) -> Result<Netns> {
        Self::with_name(unique_name(role))
    }

    fn with_name(name: String) -> Result<Netns> {
        require_root()?;
        cleanup_stale_once();
        {
            let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run(Command::new("ip").args(["netns", "add", &name]), None)?;
        }
        let ns = Netns { name };
        // IPv6 on, and no duplicate address detection for the interfaces created from now on
        // (`default`) or already there (`all`): addresses are usable at once.
        ns.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ])?;
        run(
            Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]),
            None,
        )?;
        Ok(ns)
    }

    /// The namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`: open it for `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `args` inside the namespace (`ip netns exec`; note: that also remounts /sys) and
    /// returns its stdout; a failure carries the exit status and stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
            None,
        )
        .with_context(|| format!("in netns {}", self.name))
    }

    /// Runs `f` on a fresh OS thread that has entered this network namespace (mount namespace
    /// unchanged) and returns its result. Sockets created in `f` belong to the namespace and may
    /// be used from any thread afterwards. Panics if the namespace cannot be entered; a panic in
    /// `f` is propagated.
    pub fn run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        self.try_run_in(f).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Netns::run_in`], but failing to enter the namespace is an error, not a panic.
    pub fn try_run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T> {
        let file =
            File::open(self.path()).with_context(|| format!("opening netns {}", self.name))?;
        let joined = thread::scope(|s| {
            s.spawn(move || {
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(r) => r.with_context(|| format!("setns into netns {}", self.name)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Writes sysctls (`net.ipv4.ip_forward` style keys) from inside the namespace.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.try_run_in(|| -> Result<()> {
            for (key, value) in settings {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                fs::write(&path, value).with_context(|| format!("sysctl {key}={value}"))?;
            }
            Ok(())
        })?
        .with_context(|| format!("in netns {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _lock = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]), None);
    }
}

/// How pods are wired to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNetwork {
    /// Calico style: pod /32 (and /128), gateway 169.254.1.1 answered by proxy ARP (and
    /// fe80::ecee:eeff:feee:eeee, the host veth's link-local address), host route per pod.
    Routed,
    /// Bridge CNI style: pods in 10.244.k.0/24 and fd00:10:244:k::/64 on bridge `cbr0`
    /// (10.244.k.1, fd00:10:244:k::1) of node `k`.
    Bridge,
}

/// Options for [`Node::new`] and [`Node::with_index`].
///
/// The node index (which pod CIDR the node gets) is not a field here, so that existing struct
/// literals keep compiling: pass it to [`Node::with_index`], or build a [`Cluster`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Number of pods created up front (more with [`Node::add_pod`]).
    pub pods: usize,
    pub network: PodNetwork,
    /// Create the `ext` client namespace on `ext0` (192.168.77.0/24 and fd00:77::/64).
    pub external_client: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            pods: 2,
            network: PodNetwork::Routed,
            external_client: false,
        }
    }
}

/// A pod: its own network namespace with `eth0`, wired to the node's `lxc{i}`.
#[derive(Debug)]
pub struct Pod {
    ns: Netns,
    name: String,
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    host_if: String,
}

impl Pod {
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// The pod's IPv4 address, 10.244.k.(10+i) on node `k`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The pod's IPv6 address, fd00:10:244:k::(10+i) on node `k`.
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }
    /// The pod's address of `family`.
    pub fn ip_of(&self, family: IpFamily) -> IpAddr {
        match family {
            IpFamily::V4 => self.ip.into(),
            IpFamily::V6 => self.ip6.into(),
        }
    }
    /// `pod{i}`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Host-side veth in the node namespace, `lxc{i}`.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }
}

/// A Kubernetes node built from network namespaces; everything is deleted on drop.
#[derive(Debug)]
pub struct Node {
    // Field order is drop order: pods and the client go before the node.
    pods: Vec<Pod>,
    ext: Option<Netns>,
    ns: Netns,
    prefix: String,
    network: PodNetwork,
    index: u8,
    /// The node's address on the cluster underlay (`eth0`), for a [`Cluster`] node.
    uplink: Option<Ipv4Addr>,
    /// The node's IPv6 address on the cluster underlay, for a [`Cluster`] node.
    uplink6: Option<Ipv6Addr>,
}

impl Node {
    /// Builds node 0: the node namespace, `opts.pods` pods and, if asked, the external client.
    pub fn new(opts: NodeOptions) -> Result<Node> {
        Self::with_index(opts, 0)
    }

    /// Like [`Node::new`], but as node `index` of a cluster: pods get 10.244.index.(10+i) and the
    /// bridge (in bridge mode) 10.244.index.1/24. A standalone node with an external client
    /// still uses `ext0` and 192.168.77.0/24.
    pub fn with_index(opts: NodeOptions, index: u8) -> Result<Node> {
        Self::build(opts, index, unique_prefix())
    }

    fn build(opts: NodeOptions, index: u8, prefix: String) -> Result<Node> {
        let ns = Netns::with_name(format!("{prefix}-node"))?;
        let mut node = Node {
            pods: Vec::new(),
            ext: None,
            ns,
            prefix,
            network: opts.network,
            index,
            uplink: None,
            uplink6: None,
        };
        node.ns.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.default.forwarding", "1"),
        ])?;
        if opts.network == PodNetwork::Bridge {
            ip_batch(
                &node.ns,
                &[
                    // No multicast snooping: neighbour solicitations are flooded like ARP.
                    "link add cbr0 type bridge mcast_snooping 0".into(),
                    format!("addr add {}/24 dev cbr0", bridge_ip_on(index)),
                    format!("addr add {}/64 dev cbr0 nodad", bridge_ip6_on(index)),
                    "link set cbr0 up".into(),
                ],
            )?;
        }
        if opts.external_client {
            let ext = new_leaf_ns(format!("{}-ext", node.prefix))?;
            let ext_ref = node.ext.insert(ext);
            ip_batch(
                &node.ns,
                &[
                    format!(
                        "link add ext0 type veth peer name eth0 netns {}",
                        ext_ref.name()
                    ),
                    format!("addr add {EXT_NODE_IP}/24 dev ext0"),
                    format!("addr add {EXT_NODE_IP6}/64 dev ext0 nodad"),
                    "link set ext0 up".into(),
                ],
            )?;
            ip_batch(
                ext_ref,
                &[
                    format!("addr add {EXT_CLIENT_IP}/24 dev eth0"),
                    format!("addr add {EXT_CLIENT_IP6}/64 dev eth0 nodad"),
                    "link set eth0 up".into(),
                    // Covers the pod CIDR 10.244.0.0/16 and the Service CIDR 10.96.0.0/16.
                    format!("route add default via {EXT_NODE_IP}"),
                    // The same for IPv6 (fd00:10:244::/48, Service addresses fd00:...).
                    format!("route add ::/0 via {EXT_NODE_IP6}"),
                ],
            )?;
        }
        for _ in 0..opts.pods {
            node.add_pod()?;
        }
        Ok(node)
    }

    /// Adds pod number `pods().len()` (same scheme as the initial ones) and returns its index.
    pub fn add_pod(&mut self) -> Result<usize> {
        let i = self.pods.len();
        if i > 245 {
            bail!("at most 246 pods per node");
        }
        let (name, host_if, ip, ip6) = (
            format!("pod{i}"),
            format!("lxc{i}"),
            pod_ip_on(self.index, i),
            pod_ip6_on(self.index, i),
        );
        let ns = new_leaf_ns(format!("{}-{name}", self.prefix))?;
        let pod = Pod {
            ns,
            name,
            ip,
            ip6,
            host_if,
        };
        let (hif, pns) = (&pod.host_if, pod.ns.name());
        match self.network {
            PodNetwork::Routed => {
                ip_batch(
                    &self.ns,
                    &[
                        format!("link add {hif} address {ROUTED_HOST_MAC} type veth peer name eth0 netns {pns}"),
                        format!("link set {hif} up"),
                        format!("route add {ip}/32 dev {hif}"),
                        format!("route add {ip6}/128 dev {hif}"),
                    ],
                )?;
                self.ns.sysctl(&[
                    (&format!("net.ipv4.conf.{hif}.proxy_arp"), "1"),
                    (&format!("net.ipv4.neigh.{hif}.proxy_delay"), "0"),
                ])?;
                // The node namespace has no default route, so proxy ARP cannot answer for
                // 169.254.1.1 (the kernel needs a route to it via another device, which a real
                // Calico host has); pin the gateway's neighbour entry instead. For IPv6 the
                // gateway is the host veth's own link-local address (derived from its MAC); its
                // neighbour entry is pinned as well.
                ip_batch(
                    &pod.ns,
                    &[
                        format!("addr add {ip}/32 dev eth0"),
                        format!("addr add {ip6}/128 dev eth0 nodad"),
                        "link set eth0 up".into(),
                        format!("route add {ROUTED_GATEWAY} dev eth0 scope link"),
                        format!("neigh add {ROUTED_GATEWAY} lladdr {ROUTED_HOST_MAC} dev eth0 nud permanent"),
                        format!("route add default via {ROUTED_GATEWAY} dev eth0"),
                        format!("neigh add {ROUTED_GATEWAY6} lladdr {ROUTED_HOST_MAC} dev eth0 nud permanent"),
                        format!("route add ::/0 via {ROUTED_GATEWAY6} dev eth0"),
                    ],
                )?;
            }
            PodNetwork::Bridge => {
                ip_batch(
                    &self.ns,
                    &[
                        format!("link add {hif} type veth peer name eth0 netns {pns}"),
                        format!("link set {hif} master cbr0"),
                        format!("link set {hif} up"),
                    ],
                )?;
                ip_batch(
                    &pod.ns,
                    &[
                        format!("addr add {ip}/24 dev eth0"),
                        format!("addr add {ip6}/64 dev eth0 nodad"),
                        "link set eth0 up".into(),
                        format!(
                            "route add default via {} dev eth0",
                            bridge_ip_on(self.index)
                        ),
                        format!("route add ::/0 via {} dev eth0", bridge_ip6_on(self.index)),
                    ],
                )?;
            }
        }
        self.pods.push(pod);
        Ok(i)
    }

    /// The node namespace (where the agent runs).
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// Pod `i`; panics if there is no such pod.
    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }
    pub fn network(&self) -> PodNetwork {
        self.network
    }
    /// The external client namespace, if created.
    pub fn ext(&self) -> Option<&Netns> {
        self.ext.as_ref()
    }
    /// The external client's address (192.168.77.2), if created.
    pub fn ext_ip(&self) -> Option<Ipv4Addr> {
        self.ext.as_ref().map(|_| EXT_CLIENT_IP)
    }
    /// The external client's IPv6 address (fd00:77::2), if created.
    pub fn ext_ip6(&self) -> Option<Ipv6Addr> {
        self.ext.as_ref().map(|_| EXT_CLIENT_IP6)
    }
    /// The node's address on the external network, for NodePorts: 192.168.50.(10+k) on `eth0`
    /// for a [`Cluster`] node, 192.168.77.1 on `ext0` for a standalone node with an external
    /// client, else `None`.
    pub fn node_ip(&self) -> Option<Ipv4Addr> {
        self.uplink
            .or_else(|| self.ext.as_ref().map(|_| EXT_NODE_IP))
    }
    /// The node's IPv6 address on the external network, for NodePorts: fd00:50::(10+k) on
    /// `eth0` for a [`Cluster`] node, fd00:77::1 on `ext0` for a standalone node with an
    /// external client, else `None`.
    pub fn node_ip6(&self) -> Option<Ipv6Addr> {
        self.uplink6
            .or_else(|| self.ext.as_ref().map(|_| EXT_NODE_IP6))
    }
    /// [`Node::node_ip`] or [`Node::node_ip6`].
    pub fn node_ip_of(&self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => self.node_ip().map(IpAddr::V4),
            IpFamily::V6 => self.node_ip6().map(IpAddr::V6),
        }
    }
    /// [`Node::ext_ip`] or [`Node::ext_ip6`].
    pub fn ext_ip_of(&self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => self.ext_ip().map(IpAddr::V4),
            IpFamily::V6 => self.ext_ip6().map(IpAddr::V6),
        }
    }
    /// The node index `k` (pods are 10.244.k.(10+i)); 0 for [`Node::new`].
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The Kubernetes node name, `node-{index}` (what [`Agent`] passes as `--node-name`).
    pub fn name(&self) -> String {
        format!("node-{}", self.index)
    }
    /// The node's pod CIDR, `10.244.k.0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }
    /// The node's IPv6 pod CIDR, `fd00:10:244:k::/64`.
    pub fn pod_cidr6(&self) -> String {
        format!("fd00:10:244:{}::/64", self.index)
    }
    /// The node's external interfaces (what [`Agent`] passes as `--external-interface`):
    /// `["eth0"]` for a [`Cluster`] node, `["ext0"]` for a standalone node with an external
    /// client, else none.
    pub fn external_interfaces(&self) -> Vec<String> {
        let mut ifs = Vec::new();
        if self.uplink.is_some() {
            ifs.push(CLUSTER_UPLINK.to_string());
        }
        if self.ext.is_some() {
            ifs.push("ext0".to_string());
        }
        ifs
    }
}

/// Options for [`Cluster::new`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes (at most [`MAX_CLUSTER_NODES`]).
    pub nodes: usize,
    /// Pods created up front on every node (more with [`Node::add_pod`] via
    /// [`Cluster::node_mut`]).
    pub pods_per_node: usize,
    pub network: PodNetwork,
    /// Create client 0 (192.168.50.2, fd00:50::2) on the underlay; more with
    /// [`Cluster::add_client`].
    pub external_client: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 2,
            pods_per_node: 2,
            network: PodNetwork::Routed,
            external_client: false,
        }
    }
}

/// Several [`Node`]s joined by a Linux bridge `br0` in a bridge namespace (the underlay,
/// 192.168.50.0/24 and fd00:50::/64), plus external client namespaces on the same bridge. See the module docs
/// for the topology. Everything is deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    // Field order is drop order: clients and nodes go before the bridge.
    clients: Vec<Netns>,
    nodes: Vec<Node>,
    bridge: Netns,
    prefix: String,
}

impl Cluster {
    pub fn new(opts: ClusterOptions) -> Result<Cluster> {
        if opts.nodes == 0 || opts.nodes > MAX_CLUSTER_NODES {
            bail!(
                "a cluster has 1 to {MAX_CLUSTER_NODES} nodes, not {}",
                opts.nodes
            );
        }
        let prefix = unique_prefix();
        let bridge = new_leaf_ns(format!("{prefix}-br"))?;
        // A pure layer-2 namespace: no addresses of its own (no IPv6 link-local chatter either),
        // and no multicast snooping, so neighbour solicitations are flooded like ARP.
        bridge.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        ip_batch(
            &bridge,
            &[
                "link add br0 type bridge mcast_snooping 0".into(),
                "link set br0 up".into(),
            ],
        )?;
        let mut cluster = Cluster {
            clients: Vec::new(),
            nodes: Vec::new(),
            bridge,
            prefix,
        };
        for k in 0..opts.nodes {
            let node_opts = NodeOptions {
                pods: opts.pods_per_node,
                network: opts.network,
                external_client: false,
            };
            let node = Node::build(node_opts, k as u8, format!("{}-n{k}", cluster.prefix))?;
            let node = cluster.nodes.push_and_get(node);
            let (ip, ip6, port) = (cluster_node_ip(k), cluster_node_ip6(k), format!("n{k}"));
            ip_batch(
                &cluster.bridge,
                &[
                    format!(
                        "link add {port} type veth peer name {CLUSTER_UPLINK} netns {}",
                        node.ns.name()
                    ),
                    format!("link set {port} master br0"),
                    format!("link set {port} up"),
                ],
            )?;
            node.ns
                .sysctl(&[(&format!("net.ipv4.conf.{CLUSTER_UPLINK}.rp_filter"), "0")])?;
            let mut lines = vec![
                format!("addr add {ip}/24 dev {CLUSTER_UPLINK}"),
                format!("addr add {ip6}/64 dev {CLUSTER_UPLINK} nodad"),
                format!("link set {CLUSTER_UPLINK} up"),
            ];
            for j in (0..opts.nodes).filter(|&j| j != k) {
                lines.push(format!(
                    "route add 10.244.{j}.0/24 via {} dev {CLUSTER_UPLINK}",
                    cluster_node_ip(j)
                ));
                lines.push(format!(
                    "route add fd00:10:244:{j}::/64 via {} dev {CLUSTER_UPLINK}",
                    cluster_node_ip6(j)
                ));
            }
            ip_batch(&node.ns, &lines)?;
            node.uplink = Some(ip);
            node.uplink6 = Some(ip6);
        }
        if opts.external_client {
            cluster.add_client()?;
        }
        Ok(cluster)
    }

    /// Adds external client `n = clients().len()` on the underlay: namespace with `eth0`
    /// 192.168.50.(2+n)/24 and fd00:50::(2+n)/64, and routes to 10.244.0.0/16 and
    /// fd00:10:244::/48 via node 0. Returns `n`.
    pub fn add_client(&mut self) -> Result<usize> {
        let n = self.clients.len();
        if n >= MAX_CLUSTER_CLIENTS {
            bail!("at most {MAX_CLUSTER_CLIENTS} clients per cluster");
        }
        let ns = new_leaf_ns(format!("{}-client{n}", self.prefix))?;
        let ns = self.clients.push_and_get(ns);
        let port = format!("c{n}");
        ip_batch(
            &self.bridge,
            &[
                format!(
                    "link add {port} type veth peer name eth0 netns {}",
                    ns.name()
                ),
                format!("link set {port} master br0"),
                format!("link set {port} up"),
            ],
        )?;
        ip_batch(
            ns,
            &[
                format!("addr add {}/24 dev eth0", cluster_client_ip(n)),
                format!("addr add {}/64 dev eth0 nodad", cluster_client_ip6(n)),
                "link set eth0 up".into(),
                format!("route add 10.244.0.0/16 via {}", cluster_node_ip(0)),
                format!("route add fd00:10:244::/48 via {}", cluster_node_ip6(0)),
            ],
        )?;
        Ok(n)
    }

    /// Node `k`; panics if there is no such node.
    pub fn node(&self, k: usize) -> &Node {
        &self.nodes[k]
    }
    /// Node `k`, e.g. to add pods; panics if there is no such node.
    pub fn node_mut(&mut self, k: usize) -> &mut Node {
        &mut self.nodes[k]
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Node `k`'s address on the underlay, 192.168.50.(10+k); panics if there is no such node.
    pub fn node_ip(&self, k: usize) -> Ipv4Addr {
        self.nodes[k].uplink.expect("cluster nodes have an uplink")
    }
    /// Node `k`'s IPv6 address on the underlay, fd00:50::(10+k); panics if there is no such
    /// node.
    pub fn node_ip6(&self, k: usize) -> Ipv6Addr {
        self.nodes[k].uplink6.expect("cluster nodes have an uplink")
    }
    /// [`Cluster::node_ip`] or [`Cluster::node_ip6`].
    pub fn node_ip_of(&self, k: usize, family: IpFamily) -> IpAddr {
        match family {
            IpFamily::V4 => self.node_ip(k).into(),
            IpFamily::V6 => self.node_ip6(k).into(),
        }
    }
    /// The first external client, if any.
    pub fn client(&self) -> Option<&Netns> {
        self.clients.first()
    }
    /// The first external client's address (192.168.50.2), if there is a client.
    pub fn client_ip(&self) -> Option<Ipv4Addr> {
        self.clients.first().map(|_| cluster_client_ip(0))
    }
    /// The first external client's IPv6 address (fd00:50::2), if there is a client.
    pub fn client_ip6(&self) -> Option<Ipv6Addr> {
        self.clients.first().map(|_| cluster_client_ip6(0))
    }
    /// Client `n`'s address of `family`; panics if there is no such client.
    pub fn client_ip_of(&self, n: usize, family: IpFamily) -> IpAddr {
        assert!(n < self.clients.len(), "no client {n}");
        match family {
            IpFamily::V4 => cluster_client_ip(n).into(),
            IpFamily::V6 => cluster_client_ip6(n).into(),
        }
    }
    /// All external clients; client `n` has address [`cluster_client_ip`]`(n)`.
    pub fn clients(&self) -> &[Netns] {
        &self.clients
    }
    /// The namespace holding the underlay bridge `br0` (ports `n{k}` and `c{n}`).
    pub fn bridge(&self) -> &Netns {
        &self.bridge
    }
}

/// `Vec::push` that returns a reference to the pushed element.
trait PushAndGet<T> {
    fn push_and_get(&mut self, v: T) -> &mut T;
}

impl<T> PushAndGet<T> for Vec<T> {
    fn push_and_get(&mut self, v: T) -> &mut T {
        self.push(v);
        self.last_mut().unwrap()
    }
}

/// A pod, client or bridge namespace (IPv6 on, no DAD, like every [`Netns`]).
fn new_leaf_ns(name: String) -> Result<Netns> {
    Netns::with_name(name)
}

fn unmount_and_remove(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_dir(path);
}

/// A private bpffs mounted on a unique directory under /run/podlb-test (outside /sys, which
/// `ip netns exec` remounts). Drop unmounts it (lazily) and removes the directory.
#[derive(Debug)]
pub struct BpfRoot {
    path: PathBuf,
}

impl BpfRoot {
    pub fn new() -> Result<BpfRoot> {
        require_root()?;
        cleanup_stale_once();
        let path = Path::new(BPF_TEST_DIR).join(unique_name("bpf"));
        fs::create_dir_all(&path).with_context(|| format!("mkdir -p {}", path.display()))?;
        let root = BpfRoot { path };
        crate::datapath::mount_bpffs(&root.path)
            .with_context(|| format!("mount -t bpf bpf {}", root.path.display()))?;
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfRoot {
    fn drop(&mut self) {
        unmount_and_remove(&self.path);
    }
}

/// A child process running in a network namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

/// Spawns `cmd` with only its network namespace switched to `ns` (it keeps the caller's mount
/// namespace, so it sees the caller's bpffs mounts). stdin is /dev/null; stdout and stderr go to
/// a log file, see [`Process::log`].
pub fn spawn_in_netns(ns: &Netns, cmd: Command) -> io::Result<Process> {
    spawn_in_netns_path(&ns.path(), cmd)
}

/// [`spawn_in_netns`] for a namespace given by its path (`/run/netns/NAME`).
pub fn spawn_in_netns_path(ns: &Path, mut cmd: Command) -> io::Result<Process> {
    let nsfile = File::open(ns)?; // opened before fork; O_CLOEXEC, so the child won't keep it
    let fd = nsfile.as_raw_fd();
    let dir = std::env::temp_dir().join("podlb-test");
    fs::create_dir_all(&dir)?;
    let log_path = dir.join(format!("{}.log", unique_name("proc")));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setns is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        });
    }
    let child = cmd.spawn()?;
    drop(nsfile);
    Ok(Process {
        child,
        log_path,
        status: None,
    })
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Waits up to `d` for the process to exit.
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        wait_until(d, Duration::from_millis(10), || self.try_wait().is_some());
        self.status
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.try_wait() {
            return s;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        *self.status.insert(status)
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(s) = self.try_wait() {
            return s;
        }
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        match self.wait_timeout(Duration::from_secs(5)) {
            Some(s) => s,
            None => self.kill9(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(8192)..];
            eprintln!(
                "--- log of pid {} ({}), tail ---\n{}\n--- end of log ---",
                self.child.id(),
                self.log_path.display(),
                tail.trim_end()
            );
        } else {
            let _ = fs::remove_file(&self.log_path);
        }
    }
}

/// What a test server answered: `"{ident} {client address it saw}"`. Every address is a
/// [`SocketAddr`] of the family the request used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The server's ident (e.g. the pod name).
    pub ident: String,
    /// The client address the server saw (after any NAT).
    pub seen_client: SocketAddr,
    /// Where the reply came from: the TCP peer or the UDP datagram source.
    pub peer: SocketAddr,
    /// The client socket's local address (an unconnected UDP socket's is 0.0.0.0:port or
    /// [::]:port).
    pub local: SocketAddr,
}

impl Reply {
    /// The address (without port) the server saw the client as.
    pub fn seen_ip(&self) -> IpAddr {
        self.seen_client.ip()
    }
    /// Whether the reply came from `addr` (address and port; flow label and scope ignored).
    pub fn from_addr(&self, addr: impl Into<SocketAddr>) -> bool {
        let a = addr.into();
        (self.peer.ip(), self.peer.port()) == (a.ip(), a.port())
    }
}

fn parse_reply(line: &str, peer: SocketAddr, local: SocketAddr) -> Result<Reply> {
    let (ident, seen) = line
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("malformed reply {line:?}"))?;
    let seen_client = seen
        .parse()
        .with_context(|| format!("malformed reply {line:?}"))?;
    Ok(Reply {
        ident: ident.to_string(),
        seen_client,
        peer,
        local,
    })
}

/// Stop flag + counter + thread shared by the servers.
#[derive(Debug)]
struct ServerThread {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    fn spawn(f: impl FnOnce(Arc<AtomicBool>, Arc<AtomicUsize>) + Send + 'static) -> Self {
        let (stop, count) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, c) = (stop.clone(), count.clone());
        ServerThread {
            stop,
            count,
            thread: Some(thread::spawn(move || f(s, c))),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// TCP echo-ident server on port `port` of both families (0.0.0.0 and [::], two sockets, the
/// IPv6 one `IPV6_V6ONLY`) in a namespace: every line received on a connection is answered with
/// `"{ident} {peer_addr}\n"` (`10.244.0.10:41234` or `[fd00:10:244:0::10]:41234`). Stops on drop
/// (within ~100 ms, closing connections).
#[derive(Debug)]
pub struct TcpServer {
    inner: ServerThread,
    port: u16,
}

impl TcpServer {
    /// Panics (with context) if the port cannot be bound in either family.
    pub fn start(ns: &Netns, port: u16, ident: &str) -> TcpServer {
        let listeners = ns
            .run_in(|| -> io::Result<[TcpListener; 2]> {
                let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
                // Port 0: the IPv6 socket takes the port the kernel gave the IPv4 one.
                let port = v4.local_addr()?.port();
                let v6 = TcpListener::from(bind_v6only(libc::SOCK_STREAM, port)?);
                Ok([v4, v6])
            })
            .unwrap_or_else(|e| {
                panic!(
                    "TcpServer {ident}: bind :{port} in netns {}: {e}",
                    ns.name()
                )
            });
        let port = listeners[0].local_addr().map(|a| a.port()).unwrap_or(port);
        for l in &listeners {
            // Readiness comes from poll; a connection reset before accept must not block.
            let _ = l.set_nonblocking(true);
        }
        let ident = ident.to_string();
        let inner = ServerThread::spawn(move |stop, accepted| {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let ready = poll_readable_any(&listeners, SERVER_POLL);
                for (listener, _) in listeners.iter().zip(ready).filter(|(_, r)| *r) {
                    let Ok((stream, peer)) = listener.accept() else {
                        continue;
                    };
                    if stream.set_nonblocking(false).is_err() {
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (stop, reply) = (stop.clone(), format!("{ident} {peer}\n"));
                    conns.retain(|h| !h.is_finished());
                    conns.push(thread::spawn(move || serve_tcp_conn(stream, &reply, &stop)));
                }
            }
            conns.into_iter().for_each(|h| drop(h.join()));
        });
        TcpServer { inner, port }
    }

    /// Connections accepted so far (both families).
    pub fn accepted(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A new socket of `domain` and `ty` (`SOCK_CLOEXEC` added), in the calling thread's namespace.
fn new_socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh socket that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_reuseaddr(fd: &OwnedFd) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &(1 as libc::c_int),
    )
}

/// bind(2) `fd` to `addr`; the error names the address.
fn bind_fd(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = sockaddr(addr);
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    })
    .map(drop)
    .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))
}

/// A socket of `ty` (SOCK_STREAM: also listening) bound to [::]:`port` with `IPV6_V6ONLY`, so
/// that it coexists with an IPv4 socket on 0.0.0.0:`port`, in the calling thread's namespace.
fn bind_v6only(ty: libc::c_int, port: u16) -> io::Result<OwnedFd> {
    let fd = new_socket(libc::AF_INET6, ty)?;
    setsockopt(
        &fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        &(1 as libc::c_int),
    )?;
    if ty == libc::SOCK_STREAM {
        // As std does for listeners.
        set_reuseaddr(&fd)?;
    }
    bind_fd(&fd, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))?;
    if ty == libc::SOCK_STREAM {
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    }
    Ok(fd)
}

/// Waits up to `timeout` until one of `socks` is readable; returns which are.
fn poll_readable_any<S: AsRawFd>(socks: &[S], timeout: Duration) -> Vec<bool> {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    pfds.iter().map(|p| n > 0 && p.revents != 0).collect()
}

fn serve_tcp_conn(stream: TcpStream, reply: &str, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(SERVER_POLL));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // read_until keeps partial data across timeouts.
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {
                line.clear();
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Ok(_) => return, // EOF in the middle of a line
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// UDP ident server on port `port` of both families (0.0.0.0 and [::], two sockets) in a
/// namespace: every datagram is answered with `"{ident} {peer_addr}"` to its sender, from the
/// socket it arrived on. Stops on drop.
#[derive(Debug)]
pub struct UdpServer {
    inner: ServerThread,
    port: u16,
}

impl UdpServer {
    /// Panics (with context) if the port cannot be bound in either family.
    pub fn start(ns: &Netns, port: u16, ident: &str) -> UdpServer {
        let socks = ns
            .run_in(|| -> io::Result<[UdpSocket; 2]> {
                let v4 = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
                let port = v4.local_addr()?.port();
                let v6 = UdpSocket::from(bind_v6only(libc::SOCK_DGRAM, port)?);
                Ok([v4, v6])
            })
            .unwrap_or_else(|e| {
                panic!(
                    "UdpServer {ident}: bind :{port} in netns {}: {e}",
                    ns.name()
                )
            });
        let port = socks[0].local_addr().map(|a| a.port()).unwrap_or(port);
        for s in &socks {
            let _ = s.set_nonblocking(true);
        }
        let ident = ident.to_string();
        let inner = ServerThread::spawn(move |stop, received| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                let ready = poll_readable_any(&socks, SERVER_POLL);
                for (sock, _) in socks.iter().zip(ready).filter(|(_, r)| *r) {
                    while let Ok((_, peer)) = sock.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::SeqCst);
                        let _ = sock.send_to(format!("{ident} {peer}").as_bytes(), peer);
                    }
                }
            }
        });
        UdpServer { inner, port }
    }

    /// Datagrams received so far (both families).
    pub fn received(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Connects from inside `ns` with a timeout, returning a stream with read/write timeouts set.
fn tcp_connect(ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = ns.try_run_in(|| TcpStream::connect_timeout(&dst, timeout))??;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `a` as a `sockaddr_in` or `sockaddr_in6` in a `sockaddr_storage`, with its length.
fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The wildcard address of `dst`'s family with port `port`: 0.0.0.0:port or [::]:port.
fn unspecified_like(dst: &SocketAddr, port: u16) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into(),
        SocketAddr::V6(_) => SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into(),
    }
}

/// A TCP connection from the wildcard address of `dst`'s family (0.0.0.0 or [::]) and port
/// `src_port` (SO_REUSEADDR) to `dst`, in the calling thread's network namespace: nonblocking
/// connect, then poll up to `timeout`. Returns a blocking stream.
fn connect_bound(src_port: u16, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let fd = new_socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    set_reuseaddr(&fd)?;
    bind_fd(&fd, unspecified_like(&dst, src_port))?;
    let (dst_sa, dst_len) = sockaddr(dst);
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &dst_sa as *const libc::sockaddr_storage as *const libc::sockaddr,
            dst_len,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {timeout:?}"),
                    ))
                }
                n if n > 0 => break,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        let mut err: libc::c_int = 0;
        let mut errlen = size_of::<libc::c_int>() as libc::socklen_t;
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut libc::c_int as *mut libc::c_void,
                &mut errlen,
            )
        })?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Like [`tcp_connect`], from source port `src_port` (0.0.0.0:`src_port` or [::]:`src_port`,
/// SO_REUSEADDR).
///
/// `EADDRNOTAVAIL` (the 4-tuple is still taken) is retried until `timeout`: a socket closed
/// just before lives on while a child process forked by another thread of this process still
/// shares the descriptor (until its exec closes it).
fn tcp_connect_from(
    ns: &Netns,
    src_port: u16,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream> {
    let stream = ns.try_run_in(|| {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match connect_bound(src_port, dst, left) {
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{e} (the 4-tuple is still in use by another connection)"),
                        ));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    })??;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// One TCP request from `ns` to `dst` (IPv4 or IPv6; a `SocketAddrV4`/`SocketAddrV6` works as
/// well): connect, send `"hello\n"`, read one reply line, close.
pub fn tcp_request(ns: &Netns, dst: impl Into<SocketAddr>, timeout: Duration) -> Result<Reply> {
    TcpSession::connect(ns, dst, timeout)?.request()
}

/// [`tcp_request`] from the fixed source port `src_port`: the socket binds 0.0.0.0:`src_port`
/// (or [::]:`src_port` for an IPv6 `dst`) with SO_REUSEADDR before connecting, and closes
/// normally (FIN). The same request, with the same 4-tuple, may be repeated at once: Linux
/// reuses the TIME_WAIT of an explicitly bound port (TCP timestamps are on by default), and the
/// short FIN_WAIT2 before the server closes is waited out (see [`TcpSession::connect_from`]).
pub fn tcp_request_from(
    ns: &Netns,
    src_port: u16,
    dst: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<Reply> {
    TcpSession::connect_from(ns, src_port, dst, timeout)?.request()
}

/// One UDP request from `ns`: an unconnected socket on 0.0.0.0:0 (or [::]:0 for an IPv6 `dst`)
/// sends `"hello\n"` to `dst` and waits for one datagram; `Reply::peer` is that datagram's
/// source address.
pub fn udp_request(ns: &Netns, dst: impl Into<SocketAddr>, timeout: Duration) -> Result<Reply> {
    let dst = dst.into();
    udp_request_impl(ns, 0, dst, timeout)
        .with_context(|| format!("udp request from netns {} to {dst}", ns.name()))
}

/// [`udp_request`] from the fixed source port `src_port` (0.0.0.0:`src_port` or
/// [::]:`src_port`).
pub fn udp_request_from(
    ns: &Netns,
    src_port: u16,
    dst: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<Reply> {
    let dst = dst.into();
    udp_request_impl(ns, src_port, dst, timeout).with_context(|| {
        format!(
            "udp request from netns {} port {src_port} to {dst}",
            ns.name()
        )
    })
}

fn udp_request_impl(
    ns: &Netns,
    src_port: u16,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Reply> {
    let src = unspecified_like(&dst, src_port);
    let sock = ns
        .try_run_in(|| UdpSocket::bind(src))?
        .with_context(|| format!("bind {src}"))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(b"hello\n", dst)?;
    let mut buf = [0u8; 2048];
    let (n, peer) = sock.recv_from(&mut buf).context("waiting for the reply")?;
    parse_reply(
        &String::from_utf8_lossy(&buf[..n]),
        peer,
        sock.local_addr()?,
    )
}

/// A persistent TCP connection from a namespace; each [`TcpSession::request`] is one
/// line/reply exchange on the same connection.
#[derive(Debug)]
pub struct TcpSession {
    reader: BufReader<TcpStream>,
    desc: String,
}

impl TcpSession {
    /// Connects from `ns` to `dst` (IPv4 or IPv6).
    pub fn connect(
        ns: &Netns,
        dst: impl Into<SocketAddr>,
        timeout: Duration,
    ) -> Result<TcpSession> {
        let dst = dst.into();
        let desc = format!("tcp session from netns {} to {dst}", ns.name());
        let stream = tcp_connect(ns, dst, timeout).with_context(|| format!("{desc}: connect"))?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            desc,
        })
    }

    /// Like [`TcpSession::connect`], from the fixed source port `src_port` (binds
    /// 0.0.0.0:`src_port`, or [::]:`src_port` for an IPv6 `dst`, with SO_REUSEADDR). While the
    /// 4-tuple is still taken by an earlier connection (`EADDRNOTAVAIL`, e.g. in FIN_WAIT2),
    /// connecting is retried until `timeout`. Two sessions with the same 4-tuple cannot be open
    /// at once; the same source port from different namespaces, or to different destinations,
    /// can.
    pub fn connect_from(
        ns: &Netns,
        src_port: u16,
        dst: impl Into<SocketAddr>,
        timeout: Duration,
    ) -> Result<TcpSession> {
        let dst = dst.into();
        let desc = format!(
            "tcp session from netns {} port {src_port} to {dst}",
            ns.name()
        );
        let stream = tcp_connect_from(ns, src_port, dst, timeout)
            .with_context(|| format!("{desc}: connect"))?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            desc,
        })
    }

    /// Sends `"hello\n"` and reads one reply line.
    pub fn request(&mut self) -> Result<Reply> {
        (|| -> Result<Reply> {
            let stream = self.reader.get_mut();
            stream.write_all(b"hello\n")?;
            let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed by peer");
            }
            parse_reply(&line, peer, local)
        })()
        .with_context(|| format!("{}: request", self.desc))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().peer_addr()
    }
}

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

/// YAML builders for the manifests the tests and the demo write.
///
/// [`service`] and [`slice`] write the simple single-port-list cases; [`Service`] and [`Slice`]
/// are builders for everything else: Service types, dual stack (`ipFamilies`,
/// `ipFamilyPolicy`, `clusterIPs`), NodePorts, externalIPs, LoadBalancer ingress, traffic
/// policies, labels, and EndpointSlices of either address type with `nodeName`s. [`node`]
/// writes a Node object with its addresses.
pub mod manifest {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    pub use super::IpFamily;

    /// A ClusterIP Service with `(name, port, protocol)` ports. An IPv6 `cluster_ip` makes a
    /// single-stack IPv6 Service (`ipFamilies: [IPv6]`, `clusterIPs`); an IPv4 one writes the
    /// same YAML as always (`clusterIP` only).
    pub fn service(name: &str, cluster_ip: &str, ports: &[(&str, u16, &str)]) -> String {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
             spec:\n  type: ClusterIP\n  clusterIP: {cluster_ip}\n"
        );
        if let Ok(IpAddr::V6(_)) = cluster_ip.parse::<IpAddr>() {
            s += &format!(
                "  clusterIPs: [\"{cluster_ip}\"]\n  ipFamilies: [IPv6]\n  \
                 ipFamilyPolicy: SingleStack\n"
            );
        }
        s += "  ports:\n";
        for (pname, port, proto) in ports {
            s += &format!(
                "  - {{name: {pname}, port: {port}, protocol: {proto}, targetPort: 9999}}\n"
            );
        }
        s
    }

    /// A dual-stack ClusterIP Service (`ipFamilyPolicy: RequireDualStack`, `ipFamilies` in the
    /// order of `cluster_ips`, the first being `clusterIP`) with `(name, port, protocol)` ports.
    pub fn dual_stack_service(
        name: &str,
        cluster_ips: [IpAddr; 2],
        ports: &[(&str, u16, &str)],
    ) -> String {
        let mut svc = Service::new(name, "ClusterIP")
            .cluster_ip(cluster_ips[0])
            .cluster_ip(cluster_ips[1]);
        for &(pname, port, proto) in ports {
            svc = svc.port(pname, port, proto, 9999);
        }
        svc.yaml()
    }

    /// An IPv4 EndpointSlice for Service `service`, with `(name, port, protocol)` ports and
    /// `(address, ready)` endpoints.
    pub fn slice(
        service: &str,
        slice: &str,
        ports: &[(&str, u16, &str)],
        endpoints: &[(Ipv4Addr, bool)],
    ) -> String {
        let mut s = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
             namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n"
        );
        for (pname, port, proto) in ports {
            s += &format!("- {{name: {pname}, port: {port}, protocol: {proto}}}\n");
        }
        s += "endpoints:\n";
        for (ip, ready) in endpoints {
            s += &format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: {ready}}}\n");
        }
        if endpoints.is_empty() {
            s += "[]\n";
        }
        s
    }

    /// [`slice`] with `addressType: IPv6`.
    pub fn slice6(
        service: &str,
        slice: &str,
        ports: &[(&str, u16, &str)],
        endpoints: &[(Ipv6Addr, bool)],
    ) -> String {
        let mut b = Slice::new(service, slice, IpFamily::V6);
        for &(pname, port, proto) in ports {
            b = b.port(pname, port, proto);
        }
        for &(ip, ready) in endpoints {
            b = b.endpoint(ip, ready);
        }
        b.yaml()
    }

    /// A Node object named `name` whose `InternalIP`s are `addresses` (one per family on a
    /// dual-stack node), with a `Hostname` address.
    pub fn node(name: &str, addresses: &[IpAddr]) -> String {
        let mut s = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nstatus:\n  addresses:\n"
        );
        for a in addresses {
            s += &format!("  - {{type: InternalIP, address: \"{a}\"}}\n");
        }
        s += &format!("  - {{type: Hostname, address: {name}}}\n");
        s
    }

    /// One entry of a Service's `spec.ports`.
    #[derive(Debug, Clone)]
    pub struct ServicePort {
        pub name: String,
        pub port: u16,
        pub protocol: String,
        /// `targetPort` (podlb, like kube-proxy, never reads it).
        pub target: String,
        pub node_port: Option<u16>,
    }

    /// A Service manifest builder.
    ///
    /// ```
    /// # use podlb::testbed::manifest::Service;
    /// let yaml = Service::new("web", "NodePort")
    ///     .cluster_ip("10.96.0.10".parse::<std::net::IpAddr>().unwrap())
    ///     .cluster_ip("fd00:96::10".parse::<std::net::IpAddr>().unwrap())
    ///     .node_port("http", 80, "TCP", 8080, 30080)
    ///     .yaml();
    /// assert!(yaml.contains("ipFamilies: [IPv4, IPv6]"));
    /// assert!(yaml.contains("ipFamilyPolicy: RequireDualStack"));
    /// ```
    #[derive(Debug, Clone)]
    pub struct Service {
        pub name: String,
        pub type_: String,
        /// `clusterIPs` (the first is also `clusterIP`); empty: no `clusterIP` field.
        pub cluster_ips: Vec<IpAddr>,
        /// Written as `clusterIP` instead of the addresses when set (e.g. `None`).
        pub cluster_ip_literal: Option<String>,
        /// `ipFamilies`; `None`: the families of `cluster_ips`, in order.
        pub ip_families: Option<Vec<IpFamily>>,
        /// `ipFamilyPolicy`; `None`: SingleStack for one family, RequireDualStack for two.
        pub ip_family_policy: Option<String>,
        pub ports: Vec<ServicePort>,
        pub external_ips: Vec<IpAddr>,
        /// `status.loadBalancer.ingress`: (ip, ipMode).
        pub ingress: Vec<(IpAddr, Option<String>)>,
        pub external_traffic_policy: Option<String>,
        pub internal_traffic_policy: Option<String>,
        pub labels: Vec<(String, String)>,
        pub external_name: Option<String>,
    }

    impl Service {
        /// A Service of `type_` (ClusterIP, NodePort, LoadBalancer, ExternalName) in namespace
        /// `default`, without addresses or ports yet.
        pub fn new(name: &str, type_: &str) -> Service {
            Service {
                name: name.to_string(),
                type_: type_.to_string(),
                cluster_ips: Vec::new(),
                cluster_ip_literal: None,
                ip_families: None,
                ip_family_policy: None,
                ports: Vec::new(),
                external_ips: Vec::new(),
                ingress: Vec::new(),
                external_traffic_policy: None,
                internal_traffic_policy: None,
                labels: Vec::new(),
                external_name: None,
            }
        }

        /// Appends a cluster IP (the first one is the primary `clusterIP`).
        pub fn cluster_ip(mut self, ip: impl Into<IpAddr>) -> Service {
            self.cluster_ips.push(ip.into());
            self
        }

        /// `clusterIP: {s}` verbatim (e.g. `None` for a headless Service), no `clusterIPs`.
        pub fn cluster_ip_literal(mut self, s: &str) -> Service {
            self.cluster_ip_literal = Some(s.to_string());
            self
        }

        /// Sets `ipFamilies` explicitly.
        pub fn ip_families(mut self, families: &[IpFamily]) -> Service {
            self.ip_families = Some(families.to_vec());
            self
        }

        /// Sets `ipFamilyPolicy` (SingleStack, PreferDualStack, RequireDualStack).
        pub fn ip_family_policy(mut self, policy: &str) -> Service {
            self.ip_family_policy = Some(policy.to_string());
            self
        }

        /// A port with a numeric `targetPort`.
        pub fn port(self, name: &str, port: u16, protocol: &str, target: u16) -> Service {
            self.port_named(name, port, protocol, &target.to_string(), None)
        }

        /// A port with a NodePort.
        pub fn node_port(
            self,
            name: &str,
            port: u16,
            protocol: &str,
            target: u16,
            node_port: u16,
        ) -> Service {
            self.port_named(name, port, protocol, &target.to_string(), Some(node_port))
        }

        /// A port with any `targetPort` (a number or a name) and an optional NodePort.
        pub fn port_named(
            mut self,
            name: &str,
            port: u16,
            protocol: &str,
            target: &str,
            node_port: Option<u16>,
        ) -> Service {
            self.ports.push(ServicePort {
                name: name.to_string(),
                port,
                protocol: protocol.to_string(),
                target: target.to_string(),
                node_port,
            });
            self
        }

        pub fn external_ip(mut self, ip: impl Into<IpAddr>) -> Service {
            self.external_ips.push(ip.into());
            self
        }

        /// A `status.loadBalancer.ingress` entry with an optional `ipMode`.
        pub fn ingress(mut self, ip: impl Into<IpAddr>, ip_mode: Option<&str>) -> Service {
            self.ingress.push((ip.into(), ip_mode.map(String::from)));
            self
        }

        pub fn external_traffic_policy(mut self, policy: &str) -> Service {
            self.external_traffic_policy = Some(policy.to_string());
            self
        }

        pub fn internal_traffic_policy(mut self, policy: &str) -> Service {
            self.internal_traffic_policy = Some(policy.to_string());
            self
        }

        pub fn label(mut self, key: &str, value: &str) -> Service {
            self.labels.push((key.to_string(), value.to_string()));
            self
        }

        pub fn external_name(mut self, name: &str) -> Service {
            self.external_name = Some(name.to_string());
            self
        }

        /// The families written as `ipFamilies` (explicit, or those of the cluster IPs).
        pub fn families(&self) -> Vec<IpFamily> {
            self.ip_families.clone().unwrap_or_else(|| {
                let mut f: Vec<IpFamily> = Vec::new();
                for ip in &self.cluster_ips {
                    let fam = IpFamily::of(*ip);
                    if !f.contains(&fam) {
                        f.push(fam);
                    }
                }
                f
            })
        }

        pub fn yaml(&self) -> String {
            let mut s = format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: default\n",
                self.name
            );
            if !self.labels.is_empty() {
                s += "  labels:\n";
                for (k, v) in &self.labels {
                    s += &format!("    {k}: \"{v}\"\n");
                }
            }
            s += &format!("spec:\n  type: {}\n", self.type_);
            if let Some(lit) = &self.cluster_ip_literal {
                s += &format!("  clusterIP: {lit}\n");
            } else if let Some(first) = self.cluster_ips.first() {
                let ips: Vec<String> = self
                    .cluster_ips
                    .iter()
                    .map(|i| format!("\"{i}\""))
                    .collect();
                s += &format!(
                    "  clusterIP: \"{first}\"\n  clusterIPs: [{}]\n",
                    ips.join(", ")
                );
            }
            let families = self.families();
            if !families.is_empty() {
                let names: Vec<&str> = families.iter().map(|f| f.k8s_name()).collect();
                s += &format!("  ipFamilies: [{}]\n", names.join(", "));
            }
            let policy = self
                .ip_family_policy
                .clone()
                .or_else(|| match families.len() {
                    0 => None,
                    1 => Some("SingleStack".into()),
                    _ => Some("RequireDualStack".into()),
                });
            if let Some(p) = policy {
                s += &format!("  ipFamilyPolicy: {p}\n");
            }
            if let Some(n) = &self.external_name {
                s += &format!("  externalName: {n}\n");
            }
            if let Some(p) = &self.external_traffic_policy {
                s += &format!("  externalTrafficPolicy: {p}\n");
            }
            if let Some(p) = &self.internal_traffic_policy {
                s += &format!("  internalTrafficPolicy: {p}\n");
            }
            if !self.external_ips.is_empty() {
                let ips: Vec<String> = self
                    .external_ips
                    .iter()
                    .map(|i| format!("\"{i}\""))
                    .collect();
                s += &format!("  externalIPs: [{}]\n", ips.join(", "));
            }
            if !self.ports.is_empty() {
                s += "  ports:\n";
                for p in &self.ports {
                    s += &format!(
                        "  - {{name: {}, port: {}, protocol: {}, targetPort: {}",
                        p.name, p.port, p.protocol, p.target
                    );
                    if let Some(np) = p.node_port {
                        s += &format!(", nodePort: {np}");
                    }
                    s += "}\n";
                }
            }
            if !self.ingress.is_empty() {
                s += "status:\n  loadBalancer:\n    ingress:\n";
                for (ip, mode) in &self.ingress {
                    s += &format!("    - ip: \"{ip}\"\n");
                    if let Some(m) = mode {
                        s += &format!("      ipMode: {m}\n");
                    }
                }
            }
            s
        }
    }

    /// One endpoint of an EndpointSlice.
    #[derive(Debug, Clone)]
    pub struct SliceEndpoint {
        pub address: IpAddr,
        pub ready: bool,
        pub node_name: Option<String>,
    }

    /// An EndpointSlice manifest builder (`addressType` IPv4 or IPv6).
    #[derive(Debug, Clone)]
    pub struct Slice {
        pub service: String,
        pub name: String,
        pub family: IpFamily,
        /// (name, port, protocol)
        pub ports: Vec<(String, u16, String)>,
        pub endpoints: Vec<SliceEndpoint>,
        pub labels: Vec<(String, String)>,
    }

    impl Slice {
        /// EndpointSlice `name` of Service `service` (label `kubernetes.io/service-name`) with
        /// `addressType` `family`.
        pub fn new(service: &str, name: &str, family: IpFamily) -> Slice {
            Slice {
                service: service.to_string(),
                name: name.to_string(),
                family,
                ports: Vec::new(),
                endpoints: Vec::new(),
                labels: Vec::new(),
            }
        }

        pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Slice {
            self.ports
                .push((name.to_string(), port, protocol.to_string()));
            self
        }

        /// An endpoint with `ready` (serving = ready, not terminating) and no node name.
        pub fn endpoint(mut self, ip: impl Into<IpAddr>, ready: bool) -> Slice {
            self.endpoints.push(SliceEndpoint {
                address: ip.into(),
                ready,
                node_name: None,
            });
            self
        }

        /// A ready endpoint on node `node` (`nodeName`).
        pub fn endpoint_on(mut self, ip: impl Into<IpAddr>, node: &str) -> Slice {
            self.endpoints.push(SliceEndpoint {
                address: ip.into(),
                ready: true,
                node_name: Some(node.to_string()),
            });
            self
        }

        pub fn label(mut self, key: &str, value: &str) -> Slice {
            self.labels.push((key.to_string(), value.to_string()));
            self
        }

        pub fn yaml(&self) -> String {
            let mut s = format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}\n  \
                 namespace: default\n  labels:\n    kubernetes.io/service-name: {}\n",
                self.name, self.service
            );
            for (k, v) in &self.labels {
                s += &format!("    {k}: \"{v}\"\n");
            }
            s += &format!("addressType: {}\nports:\n", self.family.k8s_name());
            for (name, port, proto) in &self.ports {
                s += &format!("- {{name: {name}, port: {port}, protocol: {proto}}}\n");
            }
            if self.endpoints.is_empty() {
                s += "endpoints: []\n";
            } else {
                s += "endpoints:\n";
                for e in &self.endpoints {
                    s += &format!(
                        "- addresses: [\"{}\"]\n  conditions: {{ready: {}}}\n",
                        e.address, e.ready
                    );
                    if let Some(n) = &e.node_name {
                        s += &format!("  nodeName: {n}\n");
                    }
                }
            }
            s
        }
    }
}
