//! End-to-end tests with real traffic, in one test binary: namespace nodes and clusters
//! (`testkit::testbed`), real `podlb agent` processes, real servers and clients. They need
//! root and fail (never skip) without it; run them with the eBPF object built
//! (`cargo xtask test -- --test e2e`).
//!
//! - [`support`]: what the modules share: helpers, the fixtures and the scenario bodies that
//!   run once per address family;
//! - [`service`]: ClusterIP Services over IPv4;
//! - [`service_types`]: NodePort, externalIPs, LoadBalancer and the rest of the Service types;
//! - [`multinode`]: two-node clusters;
//! - [`cluster_cidr`]: `--cluster-cidr`, an external client to a ClusterIP via a node whose
//!   only backend is on the other node;
//! - [`icmp`]: ICMP errors about NATed flows;
//! - [`ipv6`]: IPv6 and dual stack;
//! - [`kube`]: the `kubernetes` source against the API server stand-in;
//! - [`kube_tls`]: the same over HTTPS, with the stand-in's CA and bearer token;
//! - [`config`]: the agent's configuration (flags, files, `--print-config`) through the real
//!   binary, and `--nodeport-addresses` with real traffic;
//! - [`daemonset`]: the image run with podman as the rendered DaemonSet specifies;
//! - [`cleanup`]: `podlb cleanup-kube-proxy` against kube-proxy-shaped iptables and nftables
//!   rules.

mod support;

mod cleanup;
mod cluster_cidr;
mod config;
mod daemonset;
mod icmp;
mod ipv6;
mod kube;
mod kube_tls;
mod multinode;
mod service;
mod service_types;
