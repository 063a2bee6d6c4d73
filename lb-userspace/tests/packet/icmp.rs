//! Packet-level tests of the ICMP error translation (`lb-ebpf/src/icmp.rs`) through
//! BPF_PROG_TEST_RUN, in all three programs that run it: the TC ingress program
//! `podlb_tc_pod`, the XDP program `podlb_xdp_ext` and the TC egress program `podlb_tc_egress`.
//!
//! Flows are created for real: a SYN (or UDP datagram) to the frontend runs through the program
//! first, and the ICMP error then quotes that packet exactly as the program emitted it (after
//! DNAT, and SNAT when masqueraded). The expected output is built from scratch with freshly
//! computed checksums and compared byte for byte; the outer IPv4, quoted IPv4 and ICMP
//! checksums are also verified independently.
//! They need root and fail (never skip) without it.

use crate::harness::*;
use testkit::frame::*;
// The tests' (IPv4 address, port) pair, not lb_common's 16-byte address.
use lb_common::*;
use testkit::frame::Addr;

const CLIENT: Addr = ([10, 244, 0, 10], 40000);
/// A router between the client and the backend (it sends the error, it is not NATed).
const ROUTER: [u8; 4] = [10, 244, 0, 1];
const VIP: [u8; 4] = [10, 96, 0, 10];
const BE1: Addr = ([10, 244, 0, 11], 8080);
const UDP_BE: Addr = ([10, 244, 0, 11], 5353);
const SCTP_BE: Addr = ([10, 244, 0, 11], 3869);
/// The node address (SNAT source and NodePort address) and an external client.
const NODE: [u8; 4] = [192, 168, 77, 1];
const NODE_PORT: Addr = (NODE, 30080);
const EXT: Addr = ([192, 168, 77, 2], 40000);
const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_REDIRECT: u8 = 5;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const CODE_PORT_UNREACH: u8 = 3;
const CODE_FRAG_NEEDED: u8 = 4;
/// "Fragmentation needed" rest of header: 2 unused bytes, then the next-hop MTU (1280).
const MTU_1280: [u8; 4] = [0, 0, 0x05, 0x00];

// ---------------------------------------------------------------------------------------------
// ICMP errors and their checks.

/// "Fragmentation needed" (next-hop MTU 1280) from `src` to `dst`, quoting `quote`.
fn frag_needed(src: [u8; 4], dst: [u8; 4], quote: &[u8]) -> Vec<u8> {
    icmp(
        src,
        dst,
        ICMP_DEST_UNREACH,
        CODE_FRAG_NEEDED,
        MTU_1280,
        quote,
    )
    .build()
}

/// "Port unreachable" from `src` to `dst`, quoting `quote`.
fn port_unreachable(src: [u8; 4], dst: [u8; 4], quote: &[u8]) -> Vec<u8> {
    icmp(
        src,
        dst,
        ICMP_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        quote,
    )
    .build()
}

/// Independent checks of a translated error: outer IPv4 header checksum, ICMP checksum over
/// the whole message (IPv4 total length), and the quoted IPv4 header's own checksum.
#[track_caller]
fn verify_error(f: &[u8]) {
    assert_eq!(be16(f, 12), 0x0800, "IPv4");
    assert_eq!(f[14], 0x45, "outer IPv4 header without options");
    verify_icmp(f);
    assert_eq!(f[42] & 0x0f, 5, "quoted IPv4 header without options");
    assert_eq!(
        fold(sum16(&f[42..62])),
        0xffff,
        "quoted IPv4 header checksum"
    );
}

/// Outer source and destination, quoted source and destination (address, port).
fn addresses(f: &[u8]) -> ([u8; 4], [u8; 4], Addr, Addr) {
    let a = |o: usize| -> [u8; 4] { f[o..o + 4].try_into().unwrap() };
    (a(26), a(30), (a(54), be16(f, 62)), (a(58), be16(f, 64)))
}

// ---------------------------------------------------------------------------------------------
// Flows, created by running their first packet through the program.

/// ClusterIP VIP:80/TCP -> BE1 (svc 1); runs the client's SYN and returns (SYN as the client
/// sent it, SYN as the program emitted it: client -> BE1).
fn clusterip_flow(h: &mut Harness) -> (Vec<u8>, Vec<u8>) {
    h.add_frontend((VIP, 80), PROTO_TCP, 1, &[BE1], 0, KIND_CLUSTER_IP);
    let syn = tcp(CLIENT, (VIP, 80), SYN)
        .tcp_opts(&MSS)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    let input = syn.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.nat(), "SYN verdict");
    assert_frame_eq(&out, &syn.dst(BE1).build());
    assert!(
        h.ct_get(ct_key(BE1, CLIENT, PROTO_TCP)).is_some(),
        "reply entry"
    );
    (input, out)
}

/// NodePort 192.168.77.1:30080/TCP with FE_SNAT -> BE1 (svc 3); runs the SYN from EXT and
/// returns (SYN as sent, SYN as emitted: NODE:P -> BE1, P).
fn nodeport_flow(h: &mut Harness) -> (Vec<u8>, Vec<u8>, u16) {
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.add_frontend(NODE_PORT, PROTO_TCP, 3, &[BE1], FE_SNAT, KIND_NODE_PORT);
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS).payload(b"x");
    let input = syn.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.nat(), "SYN verdict");
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    assert_frame_eq(&out, &syn.src((NODE, p)).dst(BE1).build());
    let reply = h
        .ct_get(ct_key(BE1, (NODE, p), PROTO_TCP))
        .expect("reply entry");
    assert_eq!(reply.flags, CT_REPLY | CT_SNAT);
    assert_eq!(
        (reply.nat_addr, reply.nat_port),
        (addr4(NODE_PORT.0), NODE_PORT.1)
    );
    assert_eq!((reply.snat_addr, reply.snat_port), (addr4(EXT.0), EXT.1));
    (input, out, p)
}

/// Runs `input` and expects it translated into exactly `want` (verdict: NATed, handed on).
#[track_caller]
fn assert_translated(h: &mut Harness, input: &[u8], want: &[u8]) -> Vec<u8> {
    let ct = h.sorted_conntrack();
    let (verdict, out) = h.run(input);
    assert_eq!(verdict, h.hook.nat(), "verdict");
    assert_frame_eq(&out, want);
    verify_error(&out);
    assert_eq!(
        h.sorted_conntrack(),
        ct,
        "conntrack changed by an ICMP error"
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Test bodies, run for the TC ingress and the XDP program.

/// 1. "Fragmentation needed" (MTU 1280) from a router about client -> backend: the quote
///    becomes client -> VIP:80; the outer addresses and the MTU are unchanged.
fn frag_needed_from_router(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (syn, natted) = clusterip_flow(&mut h);
    let input = frag_needed(ROUTER, CLIENT.0, &quote(&natted, 8));
    let want = frag_needed(ROUTER, CLIENT.0, &quote(&syn, 8));
    let out = assert_translated(&mut h, &input, &want);

    assert_eq!(addresses(&out), (ROUTER, CLIENT.0, CLIENT, (VIP, 80)));
    assert_eq!((out[34], out[35]), (3, 4), "type and code");
    assert_eq!(be16(&out, 40), 1280, "next-hop MTU");
    // Only the quoted destination, its port and the checksums covering them changed.
    let allowed = [36, 37, 52, 53, 58, 59, 60, 61, 64, 65];
    let c = changed(&input, &out);
    assert!(
        c.iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {c:?}"
    );
    assert_counters(&h, &[]);
}

/// 2. Port unreachable sent by the backend itself: the error's source becomes the VIP too.
fn port_unreachable_from_backend(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (syn, natted) = clusterip_flow(&mut h);
    let input = port_unreachable(BE1.0, CLIENT.0, &quote(&natted, 8));
    let want = port_unreachable(VIP, CLIENT.0, &quote(&syn, 8));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (VIP, CLIENT.0, CLIENT, (VIP, 80)));
}

/// 2b. The same for a UDP flow (VIP:53 -> backend:5353). The quoted UDP checksum is left as it
///     was (receivers do not check it), everything else matches the pre-NAT datagram.
fn udp_port_unreachable_from_backend(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    h.add_frontend((VIP, 53), PROTO_UDP, 2, &[UDP_BE], 0, KIND_CLUSTER_IP);
    let dgram = udp(CLIENT, (VIP, 53)).payload(b"query");
    let sent = dgram.build();
    let (verdict, natted) = h.run(&sent);
    assert_eq!(verdict, h.hook.nat());
    assert_frame_eq(&natted, &dgram.dst(UDP_BE).build());

    let input = port_unreachable(UDP_BE.0, CLIENT.0, &quote(&natted, 8));
    let mut q = quote(&sent, 8);
    q[26..28].copy_from_slice(&natted[40..42]); // the UDP checksum as quoted
    let want = port_unreachable(VIP, CLIENT.0, &q);
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (VIP, CLIENT.0, CLIENT, (VIP, 53)));
}

/// 3. Masqueraded NodePort flow: an error from the backend about NODE:P -> backend, addressed
///    to the node, goes to the client from the NodePort address and quotes EXT -> NodePort.
fn masqueraded_error_from_backend(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (syn, natted, _p) = nodeport_flow(&mut h);
    let input = frag_needed(BE1.0, NODE, &quote(&natted, 8));
    let want = frag_needed(NODE, EXT.0, &quote(&syn, 8));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (NODE, EXT.0, EXT, NODE_PORT));
    assert_eq!(be16(&out, 40), 1280, "next-hop MTU");
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 3b. Masqueraded flow, error from a router: the source stays, the destination is the client.
fn masqueraded_error_from_router(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (syn, natted, _p) = nodeport_flow(&mut h);
    let input = icmp(
        ROUTER,
        NODE,
        ICMP_TIME_EXCEEDED,
        0,
        [0; 4],
        &quote(&natted, 8),
    )
    .build();
    let want = icmp(
        ROUTER,
        EXT.0,
        ICMP_TIME_EXCEEDED,
        0,
        [0; 4],
        &quote(&syn, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (ROUTER, EXT.0, EXT, NODE_PORT));
}

/// 4. Time exceeded (TTL 1 ran out at a router) about client -> backend: translated like 1.
fn time_exceeded_from_router(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    h.add_frontend((VIP, 80), PROTO_TCP, 1, &[BE1], 0, KIND_CLUSTER_IP);
    let syn = tcp(CLIENT, (VIP, 80), SYN).tcp_opts(&MSS).ttl(1);
    let sent = syn.build();
    let (verdict, natted) = h.run(&sent);
    assert_eq!(verdict, h.hook.nat());
    assert_frame_eq(&natted, &syn.dst(BE1).build());

    let input = icmp(
        ROUTER,
        CLIENT.0,
        ICMP_TIME_EXCEEDED,
        0,
        [0; 4],
        &quote(&natted, 8),
    )
    .build();
    let want = icmp(
        ROUTER,
        CLIENT.0,
        ICMP_TIME_EXCEEDED,
        0,
        [0; 4],
        &quote(&sent, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (ROUTER, CLIENT.0, CLIENT, (VIP, 80)));
    assert_eq!((out[34], out[35]), (11, 0), "type and code");
}

/// 5. Left alone, byte for byte: ICMP that is not an error we translate, errors about no flow
///    of ours, and errors we cannot parse safely.
fn untranslated(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (_syn, natted) = clusterip_flow(&mut h);
    let q = quote(&natted, 8);
    // An echo whose data looks like the quote of a NATed packet, so only the type protects it.
    let echo_rest = [0x12, 0x34, 0x00, 0x01];
    let frag = |q: &[u8]| {
        icmp(
            ROUTER,
            CLIENT.0,
            ICMP_DEST_UNREACH,
            CODE_FRAG_NEEDED,
            MTU_1280,
            q,
        )
        .build()
    };

    // Quote of a packet with IPv4 options (NOP, NOP, NOP, EOL), as the program emitted it.
    let opts = tcp((CLIENT.0, 40002), (VIP, 80), SYN).ip_opts(&[1, 1, 1, 0]);
    let (verdict, natted_opts) = h.run(&opts.build());
    assert_eq!(verdict, h.hook.nat());
    assert_frame_eq(&natted_opts, &opts.dst(BE1).build());
    let q_opts = quote(&natted_opts, 8);
    assert_eq!(q_opts.len(), 24 + 8);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "echo request",
            icmp(CLIENT.0, BE1.0, ICMP_ECHO, 0, echo_rest, &q).build(),
        ),
        (
            "echo reply",
            icmp(BE1.0, CLIENT.0, ICMP_ECHO_REPLY, 0, echo_rest, &q).build(),
        ),
        (
            "redirect",
            icmp(ROUTER, CLIENT.0, ICMP_REDIRECT, 1, [10, 244, 0, 2], &q).build(),
        ),
        (
            "no conntrack entry (other client port)",
            frag(&quote(&tcp((CLIENT.0, 40001), BE1, SYN).build(), 8)),
        ),
        (
            "no conntrack entry (other backend)",
            frag(&quote(
                &tcp(CLIENT, ([10, 244, 0, 12], 8080), SYN).build(),
                8,
            )),
        ),
        ("quoted packet with IPv4 options", frag(&q_opts)),
        ("quoted IPv4 header cut to 16 bytes", frag(&q[..16])),
        ("quoted IPv4 header only, no L4 bytes", frag(&q[..20])),
        ("quoted L4 header cut to 2 bytes", frag(&q[..22])),
        ("nothing quoted", frag(&[])),
        (
            "outer IPv4 header with options",
            icmp(
                ROUTER,
                CLIENT.0,
                ICMP_DEST_UNREACH,
                CODE_FRAG_NEEDED,
                MTU_1280,
                &q,
            )
            .ip_opts(&[1, 1, 1, 0])
            .build(),
        ),
        (
            "outer IPv4 fragment (MF)",
            patch(frag(&q), |ip| ip[6] = 0x20),
        ),
    ];
    for (name, input) in cases {
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, h.hook.pass(), "{name}: verdict");
        if out != input {
            panic!(
                "{name}: changed at offsets {:?}\n got: {}\nwant: {}",
                (0..out.len().max(input.len()))
                    .filter(|&i| out.get(i) != input.get(i))
                    .collect::<Vec<_>>(),
                hex(&out),
                hex(&input)
            );
        }
    }
    // Control: the same flow's error is translated in this harness.
    let (verdict, out) = h.run(&frag(&q));
    assert_eq!(verdict, h.hook.nat());
    assert_eq!(addresses(&out).3, (VIP, 80), "control case translated");
}

/// 7. An error about a reply, sent to the VIP: the client (or a router on its side) got
///    VIP:80 -> client and answers it (here "fragmentation needed"). It goes to the backend,
///    quoting the reply as the backend sent it (BE1 -> client), like conntrack's RELATED.
fn error_about_reply_goes_to_backend(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    clusterip_flow(&mut h);
    let as_seen = tcp((VIP, 80), CLIENT, SYN | ACK).build();
    let as_sent = tcp(BE1, CLIENT, SYN | ACK).build();
    let input = frag_needed(ROUTER, VIP, &quote(&as_seen, 8));
    let want = frag_needed(ROUTER, BE1.0, &quote(&as_sent, 8));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (ROUTER, BE1.0, BE1, CLIENT));
    assert_eq!(be16(&out, 40), 1280, "next-hop MTU");
    assert_counters(&h, &[]);
}

/// 7b. The same for a masqueraded NodePort flow: the client saw NODE:30080 -> EXT; the backend
///     sent BE1 -> NODE:P. The UDP port unreachable the client sends to the node address goes
///     to the backend, quoting BE1 -> NODE:P.
fn error_about_masqueraded_reply_goes_to_backend(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (_, _, p) = nodeport_flow(&mut h);
    let as_seen = tcp(NODE_PORT, EXT, SYN | ACK).build();
    let as_sent = tcp(BE1, (NODE, p), SYN | ACK).build();
    let input = port_unreachable(EXT.0, NODE, &quote(&as_seen, 8));
    let want = port_unreachable(EXT.0, BE1.0, &quote(&as_sent, 8));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (EXT.0, BE1.0, BE1, (NODE, p)));
}

#[test]
fn tc_error_about_reply_goes_to_backend() {
    error_about_reply_goes_to_backend(Hook::Tc);
}

#[test]
fn xdp_error_about_reply_goes_to_backend() {
    error_about_reply_goes_to_backend(Hook::Xdp);
}

#[test]
fn tc_error_about_masqueraded_reply_goes_to_backend() {
    error_about_masqueraded_reply_goes_to_backend(Hook::Tc);
}

#[test]
fn xdp_error_about_masqueraded_reply_goes_to_backend() {
    error_about_masqueraded_reply_goes_to_backend(Hook::Xdp);
}

/// On TC egress the error's route is already chosen: an error about a reply is left alone.
#[test]
fn tc_egress_leaves_error_about_reply() {
    let mut h = Harness::new(Hook::Tc, "icmp");
    h.load_egress();
    clusterip_flow(&mut h);
    let as_seen = tcp((VIP, 80), CLIENT, SYN | ACK).build();
    let input = frag_needed(ROUTER, VIP, &quote(&as_seen, 8));
    let (verdict, out) = h.run_egress(&input);
    assert_eq!(verdict, TC_NEXT);
    assert_eq!(out, input);
}

#[test]
fn tc_frag_needed_from_router() {
    frag_needed_from_router(Hook::Tc);
}

#[test]
fn xdp_frag_needed_from_router() {
    frag_needed_from_router(Hook::Xdp);
}

#[test]
fn tc_port_unreachable_from_backend() {
    port_unreachable_from_backend(Hook::Tc);
}

#[test]
fn xdp_port_unreachable_from_backend() {
    port_unreachable_from_backend(Hook::Xdp);
}

#[test]
fn tc_udp_port_unreachable_from_backend() {
    udp_port_unreachable_from_backend(Hook::Tc);
}

#[test]
fn xdp_udp_port_unreachable_from_backend() {
    udp_port_unreachable_from_backend(Hook::Xdp);
}

#[test]
fn tc_masqueraded_error_from_backend() {
    masqueraded_error_from_backend(Hook::Tc);
}

#[test]
fn xdp_masqueraded_error_from_backend() {
    masqueraded_error_from_backend(Hook::Xdp);
}

#[test]
fn tc_masqueraded_error_from_router() {
    masqueraded_error_from_router(Hook::Tc);
}

#[test]
fn xdp_masqueraded_error_from_router() {
    masqueraded_error_from_router(Hook::Xdp);
}

#[test]
fn tc_time_exceeded_from_router() {
    time_exceeded_from_router(Hook::Tc);
}

#[test]
fn xdp_time_exceeded_from_router() {
    time_exceeded_from_router(Hook::Xdp);
}

#[test]
fn tc_untranslated_icmp_is_untouched() {
    untranslated(Hook::Tc);
}

#[test]
fn xdp_untranslated_icmp_is_untouched() {
    untranslated(Hook::Xdp);
}

/// 6. The TC egress program (errors the node itself generates) translates case 1 the same way;
///    it leaves an echo and a plain TCP segment to the VIP alone (it does no load balancing).
#[test]
fn tc_egress_translates_frag_needed() {
    let mut h = Harness::tc();
    h.load_egress();
    let (syn, natted) = clusterip_flow(&mut h);
    let ct = h.sorted_conntrack();

    let input = frag_needed(ROUTER, CLIENT.0, &quote(&natted, 8));
    let want = frag_needed(ROUTER, CLIENT.0, &quote(&syn, 8));
    let (verdict, out) = h.run_egress(&input);
    assert_eq!(verdict, TC_NEXT, "verdict");
    assert_frame_eq(&out, &want);
    verify_error(&out);
    assert_eq!(addresses(&out), (ROUTER, CLIENT.0, CLIENT, (VIP, 80)));
    assert_eq!(be16(&out, 40), 1280, "next-hop MTU");
    // Same result as the ingress program.
    let (_, ingress_out) = h.run(&input);
    assert_frame_eq(&out, &ingress_out);

    for (name, f) in [
        (
            "echo",
            icmp(
                CLIENT.0,
                BE1.0,
                ICMP_ECHO,
                0,
                [0, 1, 0, 1],
                &quote(&natted, 8),
            )
            .build(),
        ),
        (
            "TCP to the VIP",
            tcp((CLIENT.0, 40005), (VIP, 80), SYN).build(),
        ),
        ("a flow's reply", tcp(BE1, CLIENT, SYN | ACK).build()),
    ] {
        let (verdict, out) = h.run_egress(&f);
        assert_eq!(verdict, TC_NEXT, "{name}: verdict");
        assert_frame_eq(&out, &f);
    }
    assert_eq!(
        h.sorted_conntrack(),
        ct,
        "conntrack changed by the egress program"
    );
}

/// 6b. Egress: the masqueraded error (case 3) too.
#[test]
fn tc_egress_translates_masqueraded_error() {
    let mut h = Harness::tc();
    h.load_egress();
    let (syn, natted, _p) = nodeport_flow(&mut h);
    let input = frag_needed(BE1.0, NODE, &quote(&natted, 8));
    let want = frag_needed(NODE, EXT.0, &quote(&syn, 8));
    let (verdict, out) = h.run_egress(&input);
    assert_eq!(verdict, TC_NEXT, "verdict");
    assert_frame_eq(&out, &want);
    verify_error(&out);
}

/// 2c. An SCTP flow (VIP:3868 -> backend:3869): the quote (ports and verification tag; the
///     CRC32c is not among the 8 quoted bytes) becomes the client's INIT to the VIP again.
fn sctp_port_unreachable_from_backend(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    h.add_frontend((VIP, 3868), PROTO_SCTP, 4, &[SCTP_BE], 0, KIND_CLUSTER_IP);
    let sent = sctp_init(CLIENT, (VIP, 3868));
    let (verdict, natted) = h.run(&sent);
    assert_eq!(verdict, h.hook.nat());
    assert_eq!(addresses_l4(&natted), (CLIENT, SCTP_BE), "INIT DNATed");

    let input = port_unreachable(SCTP_BE.0, CLIENT.0, &quote(&natted, 8));
    let want = port_unreachable(VIP, CLIENT.0, &quote(&sent, 8));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(addresses(&out), (VIP, CLIENT.0, CLIENT, (VIP, 3868)));
}

/// Source and destination (address, port) of a TCP/UDP/SCTP frame without IPv4 options.
fn addresses_l4(f: &[u8]) -> (Addr, Addr) {
    let a = |o: usize| -> [u8; 4] { f[o..o + 4].try_into().unwrap() };
    ((a(26), be16(f, 34)), (a(30), be16(f, 36)))
}

/// An SCTP INIT from `src` to `dst` (verification tag 0), with a valid CRC32c.
fn sctp_init(src: Addr, dst: Addr) -> Vec<u8> {
    let mut init = vec![1, 0, 0, 20]; // INIT, flags, length
    init.extend(0x1a2b_3c4du32.to_be_bytes()); // initiate tag
    init.extend(65535u32.to_be_bytes()); // a_rwnd
    init.extend([0, 10, 0, 10]); // outbound streams, max inbound streams
    init.extend(0x0102_0304u32.to_be_bytes()); // initial TSN
    sctp(src, dst, 0, init).build()
}

#[test]
fn tc_sctp_port_unreachable_from_backend() {
    sctp_port_unreachable_from_backend(Hook::Tc);
}

#[test]
fn xdp_sctp_port_unreachable_from_backend() {
    sctp_port_unreachable_from_backend(Hook::Xdp);
}

/// 5b. A quote cut short by the IPv4 total length (the quoted IPv4 header and no L4 bytes), in
///     a frame with 8 trailing bytes after the datagram (here: the quoted packet's own first
///     8 L4 bytes, the worst case). Bytes beyond the IPv4 total length are not part of the
///     datagram (the parser, `parse.rs`, treats such a packet as truncated), and the ICMP
///     checksum does not cover them: the error must be left alone, not translated by reading
///     and rewriting the trailer (which also leaves the ICMP checksum wrong).
fn quote_truncated_by_total_length(hook: Hook) {
    let mut h = Harness::new(hook, "icmp");
    let (_syn, natted) = clusterip_flow(&mut h);
    let q = quote(&natted, 8);
    let mut input = frag_needed(ROUTER, CLIENT.0, &q[..20]);
    input.extend(&q[20..28]);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.pass(), "verdict");
    assert_frame_eq(&out, &input);
}

#[test]
fn tc_quote_truncated_by_total_length_is_untouched() {
    quote_truncated_by_total_length(Hook::Tc);
}

#[test]
fn xdp_quote_truncated_by_total_length_is_untouched() {
    quote_truncated_by_total_length(Hook::Xdp);
}
