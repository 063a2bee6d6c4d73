//! The fixtures of the end-to-end tests: the single-node [`Fixture`] (node, agent, servers) and
//! the two-node [`Multi`] (cluster, one agent per node, servers), with the requests and checks
//! they run.
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Single-node fixture

/// Node + agent + servers. Field order is drop order: servers, then the agent, then the node.
pub struct Fixture {
    /// TCP servers by ident.
    pub tcp: BTreeMap<String, TcpServer>,
    /// UDP servers by ident.
    pub udp: BTreeMap<String, UdpServer>,
    pub agent: Agent,
    pub node: Node,
}

impl Fixture {
    /// A node with `pods` pods (and the external client when asked), and an agent on it; `who`
    /// names the tests in a failure.
    pub fn new(who: &str, network: PodNetwork, pods: usize, external_client: bool) -> Fixture {
        let (node, agent) = node_with_agent(who, network, pods, external_client);
        Fixture {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agent,
            node,
        }
    }

    pub fn ns(&self, pod: usize) -> &Netns {
        self.node.pod(pod).ns()
    }

    pub fn ip(&self, pod: usize) -> Ipv4Addr {
        self.node.pod(pod).ip()
    }

    pub fn ip6(&self, pod: usize) -> Ipv6Addr {
        self.node.pod(pod).ip6()
    }

    pub fn ip_of(&self, pod: usize, family: Family) -> IpAddr {
        self.node.pod(pod).ip_of(family)
    }

    /// The external client.
    pub fn ext(&self) -> &Netns {
        self.node.ext().expect("external client")
    }

    /// The external client's address of `family`.
    pub fn ext_ip(&self, family: Family) -> IpAddr {
        self.node.ext_ip_of(family).expect("external client")
    }

    /// The node's address of `family` on `ext0`: NodePorts and SNAT (no Node object).
    pub fn node_ip(&self, family: Family) -> IpAddr {
        self.node.node_ip_of(family).expect("external client")
    }

    /// TCP server on `port` in `pod` (both families), answering with `ident`.
    pub fn serve_tcp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = TcpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.tcp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// UDP server on `port` in `pod` (both families), answering with `ident`.
    pub fn serve_udp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = UdpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.udp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// TCP 8080 and UDP 5353 servers in each of `pods`, answering `pod{i}`.
    pub fn serve(&mut self, pods: &[usize]) {
        for &i in pods {
            self.serve_tcp(i, TCP_BACKEND_PORT, &format!("pod{i}"));
            self.serve_udp(i, UDP_BACKEND_PORT, &format!("pod{i}"));
        }
    }

    /// Connections accepted plus datagrams received by every server so far.
    pub fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Connections (TCP) or datagrams (UDP) that the `pod{i}` servers saw.
    pub fn hits(&self, l4: L4, pod: usize) -> usize {
        let ident = format!("pod{pod}");
        match l4 {
            L4::Tcp => self.tcp.get(&ident).map_or(0, TcpServer::accepted),
            L4::Udp => self.udp.get(&ident).map_or(0, UdpServer::received),
        }
    }

    /// Writes one manifest file `{file}.yaml` with several YAML documents (atomically).
    pub fn apply(&self, file: &str, docs: &[String]) {
        self.agent
            .write_manifest(&format!("{file}.yaml"), &docs.join("---\n"))
            .unwrap();
    }

    pub fn remove(&self, file: &str) {
        self.agent.remove_manifest(&format!("{file}.yaml")).unwrap();
    }

    /// `podlb service list -o json`, parsed.
    pub fn services(&self) -> Vec<Value> {
        try_services(&self.agent).unwrap_or_else(|e| panic!("podlb service list -o json: {e:#}"))
    }

    /// Waits until the datapath has every `(frontend, protocol, kind)`; returns the rows.
    pub fn wait_programmed(&self, want: &[(SocketAddr, &str, &str)]) -> Vec<Value> {
        wait_programmed(&self.agent, want)
    }

    /// Waits until the datapath has none of `gone` (frontend, protocol).
    pub fn wait_unprogrammed(&self, gone: &[(SocketAddr, &str)]) {
        wait_unprogrammed(&self.agent, gone)
    }

    /// Backends (as "ip:port") the datapath holds for `frontend`/`proto`.
    pub fn backends(&self, frontend: SocketAddr, proto: &str) -> Option<BTreeSet<String>> {
        row(&self.services(), frontend, proto).map(|r| row_backends(&r))
    }

    /// Waits until the datapath holds exactly the backends of `pods` (their address of
    /// `frontend`'s family) for `frontend`/`l4`.
    pub fn wait_backends(&self, frontend: SocketAddr, l4: L4, pods: &[usize]) {
        let family = Family::of(frontend.ip());
        let want: BTreeSet<String> = pods
            .iter()
            .map(|&i| be(self.ip_of(i, family), l4.ports().2))
            .collect();
        let ok = wait_until(SETTLE, Duration::from_millis(50), || {
            self.backends(frontend, l4.proto()).as_ref() == Some(&want)
        });
        assert!(
            ok,
            "{frontend} never got backends {want:?}; have {:?}\n{}",
            self.backends(frontend, l4.proto()),
            self.agent.log()
        );
    }

    /// The packet counter of `frontend`/`proto` (0 if it is not programmed).
    pub fn packets(&self, frontend: SocketAddr, proto: &str) -> u64 {
        row(&self.services(), frontend, proto)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    }

    /// `podlb status -o json`, parsed.
    pub fn status(&self) -> Value {
        try_status(&self.agent).unwrap_or_else(|e| panic!("podlb status -o json: {e:#}"))
    }

    /// Event counter `name` from `podlb status`.
    pub fn counter(&self, name: &str) -> u64 {
        let s = self.status();
        s["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in status: {s}"))
    }

    /// Waits until a request from `client` to `dst` is answered from `dst`.
    pub fn wait_reply(&self, client: &Netns, dst: SocketAddr, l4: L4) -> Reply {
        wait_answered(client, dst, l4, || self.agent.log())
    }

    /// `n` requests from `client` to `dst`; asserts on each reply that it came from `dst` and
    /// that the server saw `seen`. Returns how often each server ident answered.
    pub fn collect(
        &self,
        client: &Netns,
        dst: SocketAddr,
        l4: L4,
        n: usize,
        seen: Seen,
    ) -> BTreeMap<String, usize> {
        collect(client, dst, l4, n, seen, || self.agent.log())
    }

    /// Asserts that `n` requests from `client` to `dst` all fail and reach no server.
    pub fn assert_unreachable(&self, client: &Netns, dst: SocketAddr, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for k in 0..n {
            if let Ok(r) = l4.request(client, dst, SHORT) {
                panic!(
                    "{why}: {l4:?} request {k} to {dst} was answered: {r:?}\n{}",
                    self.agent.log()
                );
            }
        }
        assert_eq!(
            self.total_hits(),
            before,
            "{why}: a request to {dst} reached a backend"
        );
    }

    /// The agent's log without colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&self.agent.log())
    }
}

// ---------------------------------------------------------------------------------------------
// Two-node fixture

pub const NODES: usize = 2;
pub const PODS_PER_NODE: usize = 2;

/// The Node objects of the two-node cluster (an InternalIP of each family = the node's underlay
/// addresses), as every kube-proxy sees them.
pub fn nodes_yaml() -> String {
    (0..NODES)
        .map(|k| {
            manifest::node(
                &format!("node-{k}"),
                &[cluster_node_ip(k).into(), cluster_node_ip6(k).into()],
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A [`web_service`] (with `externalTrafficPolicy` when given) and its slice of the family of
/// `cluster_ip` with ready endpoints `(address, node index)` (each with `nodeName: node-k`).
pub fn multi_docs(
    name: &str,
    type_: &str,
    cluster_ip: IpAddr,
    etp: Option<&str>,
    node_ports: Option<(u16, u16)>,
    eps: &[(IpAddr, usize)],
) -> Vec<String> {
    let mut svc = web_service(name, type_, cluster_ip, node_ports);
    if let Some(p) = etp {
        svc = svc.external_traffic_policy(p);
    }
    let mut slice = web_slice(name, Family::of(cluster_ip));
    for &(ip, k) in eps {
        slice = slice.endpoint_on(ip, &format!("node-{k}"));
    }
    vec![svc.yaml(), slice.yaml()]
}

/// Cluster + one agent per node + servers. Field order is drop order: servers, then the agents,
/// then the cluster. All agents are fed the SAME manifests, as every kube-proxy of a cluster
/// watches the same API objects.
pub struct Multi {
    pub tcp: BTreeMap<String, TcpServer>,
    pub udp: BTreeMap<String, UdpServer>,
    pub agents: Vec<Agent>,
    pub cluster: Cluster,
}

impl Multi {
    /// Two nodes with two pods each, `clients` external clients (at least 1), an agent per node.
    pub fn new(who: &str, network: PodNetwork, clients: usize) -> Multi {
        Self::with_agent_args(who, network, clients, &[])
    }

    /// Like [`Multi::new`], with `agent_args` appended to every agent's command line.
    pub fn with_agent_args(
        who: &str,
        network: PodNetwork,
        clients: usize,
        agent_args: &[&str],
    ) -> Multi {
        require_root().unwrap_or_else(|e| panic!("{who} tests must run as root: {e:#}"));
        let mut cluster = Cluster::new(ClusterOptions {
            nodes: NODES,
            pods_per_node: PODS_PER_NODE,
            network,
            external_client: true,
        })
        .expect("building the cluster");
        for _ in 1..clients {
            cluster.add_client().expect("adding a client");
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_podlb"));
        let agents = (0..NODES)
            .map(|k| {
                Agent::start_with(bin, cluster.node(k), agent_args)
                    .unwrap_or_else(|e| panic!("starting the agent on node {k}: {e:#}"))
            })
            .collect();
        Multi {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agents,
            cluster,
        }
    }

    pub fn pod(&self, k: usize, i: usize) -> &Pod {
        self.cluster.node(k).pod(i)
    }

    /// `node{k}-pod{i}`: what the servers of that pod answer.
    pub fn ident(k: usize, i: usize) -> String {
        format!("node{k}-pod{i}")
    }

    pub fn client(&self, n: usize) -> &Netns {
        &self.cluster.clients()[n]
    }

    /// The underlay addresses of `family` of node A (node-0) and node B (node-1).
    pub fn node_ips(&self, family: Family) -> (IpAddr, IpAddr) {
        (
            self.cluster.node_ip_of(0, family),
            self.cluster.node_ip_of(1, family),
        )
    }

    /// Starts TCP (8080) and UDP (5353) servers in pod `i` of node `k`.
    pub fn serve(&mut self, k: usize, i: usize) {
        let ident = Self::ident(k, i);
        let ns = self.cluster.node(k).pod(i).ns();
        let t = TcpServer::start(ns, TCP_BACKEND_PORT, &ident);
        let u = UdpServer::start(ns, UDP_BACKEND_PORT, &ident);
        assert!(self.tcp.insert(ident.clone(), t).is_none(), "{ident}");
        assert!(self.udp.insert(ident.clone(), u).is_none(), "{ident}");
    }

    /// Connections accepted plus datagrams received by every server so far.
    pub fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Writes the same manifest file (several YAML documents) to EVERY agent.
    pub fn apply(&self, file: &str, docs: &[String]) {
        let yaml = docs.join("---\n");
        for a in &self.agents {
            a.write_manifest(&format!("{file}.yaml"), &yaml).unwrap();
        }
    }

    /// The logs of all agents, labelled by node, without colour codes.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(k, a)| format!("===== agent log, node-{k} =====\n{}", strip_ansi(&a.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until node `k`'s datapath has every (frontend, protocol, kind, backends).
    pub fn wait_programmed(&self, k: usize, want: &[(SocketAddr, L4, &str, &[SocketAddr])]) {
        let r = wait_for(SETTLE, || {
            let rows = try_services(&self.agents[k])?;
            for &(fe, l4, kind, backends) in want {
                let proto = l4.proto();
                let Some(row) = row(&rows, fe, proto) else {
                    bail!("node-{k}: {fe}/{proto} is not programmed: {rows:?}");
                };
                ensure!(
                    row["kind"] == kind,
                    "node-{k}: {fe}/{proto} is not a {kind} frontend: {row}"
                );
                let have: BTreeSet<String> = row["backends"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|b| b.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let want: BTreeSet<String> = backends.iter().map(|b| b.to_string()).collect();
                ensure!(
                    have == want,
                    "node-{k}: {fe}/{proto} has backends {have:?}, want {want:?}: {row}"
                );
            }
            Ok(())
        });
        r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()));
    }

    /// Waits until a request from `client` to `dst` is answered from `dst` as `seen`.
    pub fn wait_reply(&self, client: &Netns, dst: SocketAddr, l4: L4, seen: Seen) -> Reply {
        wait_for(SETTLE, || {
            let r = l4.request(client, dst, SHORT)?;
            check_reply(&r, dst, seen)?;
            Ok(r)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{l4:?} {dst} never answered from netns {}: {e:#}\n{}",
                client.name(),
                self.logs()
            )
        })
    }

    /// `n` requests from `client` to `dst`; asserts on each reply that it came from `dst` and
    /// that the backend saw `seen`. Returns how often each server ident answered.
    pub fn collect(
        &self,
        client: &Netns,
        dst: SocketAddr,
        l4: L4,
        n: usize,
        seen: Seen,
    ) -> BTreeMap<String, usize> {
        collect(client, dst, l4, n, seen, || self.logs())
    }

    /// Asserts that `n` requests from `client` to `dst` all fail within [`SHORT`] and that no
    /// server saw anything meanwhile.
    pub fn assert_unreachable(&self, client: &Netns, dst: SocketAddr, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for i in 0..n {
            if let Ok(r) = l4.request(client, dst, SHORT) {
                panic!(
                    "{why}: {l4:?} request {i} to {dst} was answered: {r:?}\n{}",
                    self.logs()
                );
            }
        }
        assert_eq!(
            self.total_hits(),
            before,
            "{why}: a {l4:?} request to {dst} reached a backend\n{}",
            self.logs()
        );
    }

    /// Asserts (waiting for the hooks to show) that node `k`'s `podlb status` reports `eth0` with
    /// an XDP hook (native or generic) and TC, and every pod interface `lxc*` with TC.
    pub fn assert_hooks(&self, k: usize) {
        let want_pods: Vec<String> = self
            .cluster
            .node(k)
            .pods()
            .iter()
            .map(|p| p.host_if().to_string())
            .collect();
        let r = wait_for(SETTLE, || {
            let status = try_status(&self.agents[k])?;
            let ifs: BTreeSet<(String, String)> = status["interfaces"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("no interfaces array: {status}"))?
                .iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_string(),
                        v["hook"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let has = |name: &str, hook: &str| ifs.contains(&(name.to_string(), hook.to_string()));
            ensure!(
                has("eth0", "xdp-native") || has("eth0", "xdp-generic"),
                "node-{k}: eth0 has no XDP hook: {ifs:?}"
            );
            ensure!(has("eth0", "tc"), "node-{k}: eth0 has no TC hook: {ifs:?}");
            for p in &want_pods {
                ensure!(has(p, "tc"), "node-{k}: {p} has no TC hook: {ifs:?}");
            }
            let stray: Vec<_> = ifs
                .iter()
                .filter(|(n, _)| n != "eth0" && !n.starts_with("lxc"))
                .collect();
            ensure!(
                stray.is_empty(),
                "node-{k}: hooked interfaces that are neither eth0 nor lxc*: {stray:?}"
            );
            Ok(status)
        });
        let status = r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()));
        eprintln!("node-{k} status interfaces: {}", status["interfaces"]);
    }

    /// Asserts that node `k`'s SNAT address of `family` (podlb status) is its own underlay
    /// address of that family.
    pub fn assert_snat_address(&self, k: usize, family: Family) {
        let status = try_status(&self.agents[k])
            .unwrap_or_else(|e| panic!("podlb status on node-{k}: {e:#}"));
        assert_eq!(
            status[snat_key(family)],
            self.cluster.node_ip_of(k, family).to_string().as_str(),
            "node-{k} masquerades {} with the wrong address: {status}",
            family.name()
        );
    }
}

/// A [`web_service`] on `cluster_ip` and its slice (of `cluster_ip`'s family) with the ready
/// endpoints `pods` of `f`.
pub fn web_docs(
    f: &Fixture,
    name: &str,
    type_: &str,
    cluster_ip: IpAddr,
    node_ports: Option<(u16, u16)>,
    pods: &[usize],
) -> (Service, String) {
    let family = Family::of(cluster_ip);
    let mut slice = web_slice(name, family);
    for &i in pods {
        slice = slice.endpoint(f.ip_of(i, family), true);
    }
    (
        web_service(name, type_, cluster_ip, node_ports),
        slice.yaml(),
    )
}

/// The flags of a `service list` row (panics if the row has none).
pub fn flags(row: &Value) -> Vec<String> {
    row["flags"]
        .as_array()
        .unwrap_or_else(|| panic!("no flags array: {row}"))
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect()
}
