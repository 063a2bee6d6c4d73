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
//! - [`icmp`]: ICMP errors about NATed flows;
//! - [`ipv6`]: IPv6 and dual stack;
//! - [`kube`]: the `kubernetes` source against the API server stand-in;
//! - [`cleanup`]: `podlb cleanup-kube-proxy` against kube-proxy-shaped iptables and nftables
//!   rules.

mod support;

mod cleanup;
mod icmp;
mod ipv6;
mod kube;
mod multinode;
mod service;
mod service_types;
