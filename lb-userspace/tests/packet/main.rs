//! Packet-level tests of the eBPF programs through BPF_PROG_TEST_RUN, in one test binary.
//!
//! Every test loads its own copy of the eBPF object (maps are private to that `Ebpf`, nothing is
//! pinned, so tests run in parallel), fills the maps, runs frames built from scratch
//! (`testkit::frame`) through a program and checks the verdict, the output bytes (byte-exact
//! against a frame built from scratch with freshly computed checksums, and with independent
//! checksum verifiers), conntrack and counters. They need root and fail (never skip) without it.
//!
//! - [`harness`]: one loaded program (TC, XDP, TC egress) and its maps;
//! - [`tc`]: the TC program `podlb_tc_pod` over IPv4;
//! - [`xdp`]: the XDP program `podlb_xdp_ext` over IPv4;
//! - [`sctp`]: SCTP load balancing (both hooks);
//! - [`icmp`]: the ICMP error translation (all three programs);
//! - [`ipv6`]: IPv6 in all three programs;
//! - [`cluster_cidr`]: masquerading of ClusterIP traffic from outside the cluster CIDR (both
//!   families, both hooks).

mod harness;

/// One `#[test]` per hook for each scenario: `name::tc` and `name::xdp`.
macro_rules! for_both_hooks {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn tc() {
                    super::$name(super::Hook::Tc)
                }
                #[test]
                fn xdp() {
                    super::$name(super::Hook::Xdp)
                }
            }
        )*
    };
}

mod cluster_cidr;
mod icmp;
mod ipv6;
mod sctp;
mod tc;
mod xdp;
