//! podlb's test kit, for the tests, the bench and the demo; never part of the product.
//!
//! - [`testbed`]: Kubernetes nodes and clusters built from network namespaces, with real
//!   servers and clients, and the `podlb agent` process wrapper; [`testbed::manifest`] writes
//!   the YAML they are fed.
//! - [`apiserver`]: a stand-in for the Kubernetes API server (list/watch of Services,
//!   EndpointSlices and Nodes), for the `kubernetes` source.
//! - [`frame`]: the one frame builder (IPv4, IPv6; TCP, UDP, SCTP, ICMP, ICMPv6) for
//!   BPF_PROG_TEST_RUN, the replies the programs must send, and independent checksum and CRC32c
//!   verifiers.
//! - [`podspec`]: a rendered DaemonSet's container as a `podman run` command line, and the
//!   podman runner ([`podspec::podman`]) for the DaemonSet test.
//! - [`rng`]: the one seeded pseudo-random generator of the tests and the bench.
//! - [`rules`]: iptables and nftables rule sets in the shapes kube-proxy writes, for the bench's
//!   baselines and the `podlb cleanup-kube-proxy` tests.
pub mod apiserver;
pub mod frame;
pub mod kustomize;
pub mod podspec;
pub mod rng;
pub mod rules;
pub mod testbed;

pub use rng::Rng;
