//! Packet-level tests of SCTP load balancing, for both the TC program (`podlb_tc_pod`) and the
//! XDP program (`podlb_xdp_ext`), through BPF_PROG_TEST_RUN.
//!
//! This kernel has no SCTP sockets, so SCTP is only tested here, at packet level. The tests use
//! the approach of `tc.rs` / `xdp.rs`: every test loads its own copy of
//! the eBPF object (private maps, nothing pinned), fills the maps, runs hand-built frames and
//! checks the verdict, the output bytes (byte-exact against a frame built from scratch with
//! freshly computed checksums), conntrack and counters.
//!
//! SCTP's checksum is a CRC32c (RFC 9260 appendix B) over the whole SCTP packet with the
//! checksum field zeroed, stored little-endian at offset 8 of the common header; it does not
//! cover the IP addresses. It is implemented below independently of `lb-ebpf/src/sctp.rs`
//! (bitwise, no table) and self-tested against the RFC 3720 B.4 vectors.
//!
//! Every scenario runs once per hook: `<scenario>::tc` and `<scenario>::xdp`. The XDP harness
//! owns a fresh network namespace (like `xdp.rs`): a NATed packet finds no route
//! there and is `XDP_PASS`ed. They need root and fail (never skip) without it.

use crate::harness::*;
use testkit::frame::*;
// The tests' (IPv4 address, port) pair, not lb_common's 16-byte address.
use lb_common::*;
use testkit::frame::Addr;

const CLIENT: Addr = ([10, 244, 0, 5], 40000);
const VIP: [u8; 4] = [10, 96, 0, 20];
/// The SCTP Service frontend (Diameter's port).
const SVC: Addr = (VIP, 3868);
/// Its backend, on a different port: the CRC32c must be recomputed.
const BE: Addr = ([10, 244, 0, 11], 3869);
/// A backend on the Service port: only the address changes.
const BE_SAME: Addr = ([10, 244, 0, 12], 3868);
/// The node address (SNAT source and NodePort address) and an external client.
const NODE: [u8; 4] = [192, 168, 77, 1];
const EXT: Addr = ([192, 168, 77, 2], 40000);
const NODE_PORT: Addr = (NODE, 30868);
const SVC_ID: u32 = 1;

/// Initiate tags of the client and of the backend.
const ITAG_CLIENT: u32 = 0x1a2b_3c4d;
const ITAG_BACKEND: u32 = 0x5e6f_7081;

/// Offsets in a frame with a 20-byte IPv4 header.
const IP_CSUM: [usize; 2] = [24, 25];
const IP_SRC: [usize; 4] = [26, 27, 28, 29];
const IP_DST: [usize; 4] = [30, 31, 32, 33];
const SPORT: [usize; 2] = [34, 35];
const DPORT: [usize; 2] = [36, 37];
const CRC: [usize; 4] = [42, 43, 44, 45];

/// Longest SCTP packet (common header included) whose CRC podlb recomputes (`MAX_SCTP_LEN`).
const MAX_SCTP_LEN: usize = 2048;

// ---------------------------------------------------------------------------------------------
// Independent CRC32c (Castagnoli): `crc32c`/`sctp_crc` from `testkit::frame`, checked here
// against the RFC 3720 vectors.

#[test]
fn crc32c_reference_vectors() {
    // RFC 3720 B.4 (the CRC bytes listed there are the little-endian encoding of these values).
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA, "32 bytes of zeros");
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43, "32 bytes of ones");
    let inc: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&inc), 0x46DD_794E, "32 incrementing bytes");
    let dec: Vec<u8> = (0..32).rev().collect();
    assert_eq!(crc32c(&dec), 0x113F_DB5C, "32 decrementing bytes");
    // The usual check value.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283, "\"123456789\"");
    assert_eq!(crc32c(b""), 0, "empty input");
    // The builder stores it little-endian at offset 8 of the common header, computed with that
    // field zeroed.
    let l4 = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT)).l4();
    let mut zeroed = l4.clone();
    zeroed[8..12].fill(0);
    assert_eq!(l4[8..12], crc32c(&zeroed).to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Harness: one loaded program (TC or XDP) and its maps.

impl Harness {
    /// Adds an SCTP frontend (slots first, then the frontend with its count); returns the
    /// backend ids.
    fn add_sctp_frontend(
        &mut self,
        fe: Addr,
        svc_id: u32,
        backends: &[Addr],
        flags: u16,
        kind: u16,
    ) -> Vec<u32> {
        self.add_frontend(fe, PROTO_SCTP, svc_id, backends, flags, kind)
    }

    /// ClusterIP SCTP Service `fe` -> `backends`, svc_id 1.
    fn cluster_ip(&mut self, fe: Addr, backends: &[Addr]) -> Vec<u32> {
        self.add_sctp_frontend(fe, SVC_ID, backends, 0, KIND_CLUSTER_IP)
    }
}

fn ct_key(src: Addr, dst: Addr) -> CtKey {
    crate::harness::ct_key(src, dst, PROTO_SCTP)
}

fn ct_entry(nat: Addr, flags: u32, backend_id: u32, snat: Addr) -> CtEntry {
    crate::harness::ct_entry(nat, flags, SVC_ID, backend_id, snat)
}

const NO_SNAT: Addr = ([0; 4], 0);

/// Runs `p` and expects it NATed into exactly `want` (built from scratch: fresh IPv4 checksum
/// and CRC32c), with a CRC32c that also verifies independently. Returns (input, output).
#[track_caller]
fn assert_nat(h: &Harness, p: &Pkt, want: &Pkt) -> (Vec<u8>, Vec<u8>) {
    let input = p.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.nat(), "verdict");
    verify_sctp(&out);
    assert_frame_eq(&out, &want.build());
    (input, out)
}

/// Expects only bytes at `allowed` offsets to differ between `input` and `out`.
#[track_caller]
fn assert_changed_only(input: &[u8], out: &[u8], allowed: &[&[usize]]) {
    let allowed: Vec<usize> = allowed.iter().flat_map(|a| a.iter().copied()).collect();
    let c = changed(input, out);
    assert!(
        c.iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {c:?} (allowed {allowed:?})"
    );
}

for_both_hooks!(
    init_is_dnatted_with_valid_crc,
    data_chunks_of_every_length_get_valid_crc,
    reply_is_reverse_natted_with_valid_crc,
    same_port_backend_keeps_crc,
    snat_frontend_rewrites_source_port_with_valid_crc,
    oversized_sctp_to_port_changing_frontend_is_dropped,
    oversized_sctp_to_same_port_frontend_is_natted,
    no_backends_answers_icmp_port_unreachable,
    corrupted_input_crc_is_recomputed,
    truncated_sctp_passes_unchanged,
    header_only_sctp_gets_valid_crc,
    sctp_shorter_than_ip_total_length_is_dropped,
    ethernet_padding_is_outside_the_crc,
    ipv4_options_before_sctp,
);

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// 1. An INIT to the SCTP frontend is DNATed to a backend on another port: destination address
///    and port rewritten, IPv4 checksum and CRC32c valid, nothing else changed; conntrack gets
///    both directions with protocol 132.
fn init_is_dnatted_with_valid_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    let ids = h.cluster_ip(SVC, &[BE]);
    let init = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT));
    let (input, out) = assert_nat(&h, &init, &init.clone().dst(BE));
    assert_changed_only(&input, &out, &[&IP_CSUM, &IP_DST, &DPORT, &CRC]);
    assert_eq!(&out[30..34], &BE.0, "destination address");
    assert_eq!(be16(&out, 36), BE.1, "destination port");
    assert_eq!(&out[26..30], &CLIENT.0, "source address");
    assert_eq!(be16(&out, 34), CLIENT.1, "source port");
    assert_ne!(
        crc_field(&out),
        crc_field(&input),
        "the port changed, so the CRC32c must have been recomputed"
    );

    let fwd = h.ct_get(ct_key(CLIENT, SVC));
    assert_eq!(fwd, Some(ct_entry(BE, CT_FORWARD, ids[0], NO_SNAT)));
    let reply = h.ct_get(ct_key(BE, CLIENT));
    assert_eq!(reply, Some(ct_entry(SVC, CT_REPLY, ids[0], NO_SNAT)));
    assert_eq!(h.conntrack().len(), 2, "exactly two conntrack entries");
    assert!(h.conntrack().iter().all(|(k, _)| k.proto == PROTO_SCTP));

    let s = h.stats(SVC_ID);
    assert_eq!((s.packets, s.bytes), (1, input.len() as u64));
    assert_counters(&h, &[]);
}

/// 2. DATA chunks of many payload lengths (the CRC code reads 8-byte words, then the tail a byte
///    at a time): the output CRC32c is valid for each. Padded chunks (RFC 9260) give SCTP
///    lengths of 0 or 4 mod 8; unpadded ones (non-conforming, but the CRC covers whatever bytes
///    are there) cover every other tail length.
fn data_chunks_of_every_length_get_valid_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    let mut tails = std::collections::BTreeSet::new();
    let cases = [0, 1, 3, 7, 8, 9, 100, 1000]
        .map(|n| (n, true))
        .into_iter()
        .chain((1..=7).map(|n| (n, false)));
    for (tsn, (n, pad)) in (0x0bad_cafe..).zip(cases) {
        let data = sctp(CLIENT, SVC, ITAG_BACKEND, data_chunk(tsn, &payload(n), pad));
        let (input, out) = assert_nat(&h, &data, &data.clone().dst(BE));
        assert_changed_only(&input, &out, &[&IP_CSUM, &IP_DST, &DPORT, &CRC]);
        tails.insert(sctp_of(&input).unwrap().len() % 8);
    }
    assert_eq!(tails.len(), 8, "every byte-tail length 0..8 exercised");
    assert_eq!(h.conntrack().len(), 2, "one flow");
    assert_counters(&h, &[]);
}

/// 3. The backend's INIT-ACK (and DATA) comes back with the Service address and port as its
///    source and a valid CRC32c.
fn reply_is_reverse_natted_with_valid_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    let init = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT));
    assert_nat(&h, &init, &init.clone().dst(BE));

    let init_ack = sctp(BE, CLIENT, ITAG_CLIENT, init_ack_chunk(ITAG_BACKEND));
    let (input, out) = assert_nat(&h, &init_ack, &init_ack.clone().src(SVC));
    assert_changed_only(&input, &out, &[&IP_CSUM, &IP_SRC, &SPORT, &CRC]);
    assert_eq!(&out[26..30], &SVC.0, "source address");
    assert_eq!(be16(&out, 34), SVC.1, "source port");
    assert_ne!(crc_field(&out), crc_field(&input), "CRC32c recomputed");

    for (i, n) in [0, 1, 3, 7, 8, 9, 100, 1000].into_iter().enumerate() {
        let data = sctp(
            BE,
            CLIENT,
            ITAG_CLIENT,
            data_chunk(i as u32, &payload(n), true),
        );
        assert_nat(&h, &data, &data.clone().src(SVC));
    }
    assert_eq!(h.stats(SVC_ID).packets, 10);
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[]);
}

/// 4. Backend port == Service port: only addresses change, which SCTP's CRC32c does not cover,
///    so the CRC stays valid and equal to the input's, both ways.
fn same_port_backend_keeps_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    let ids = h.cluster_ip(SVC, &[BE_SAME]);
    let init = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT));
    let (input, out) = assert_nat(&h, &init, &init.clone().dst(BE_SAME));
    assert_changed_only(&input, &out, &[&IP_CSUM, &IP_DST]);
    assert_eq!(crc_field(&out), crc_field(&input), "CRC32c unchanged");
    assert_eq!(
        h.ct_get(ct_key(CLIENT, SVC)),
        Some(ct_entry(BE_SAME, CT_FORWARD, ids[0], NO_SNAT))
    );
    assert_eq!(
        h.ct_get(ct_key(BE_SAME, CLIENT)),
        Some(ct_entry(SVC, CT_REPLY, ids[0], NO_SNAT))
    );

    for n in [0, 1, 7, 100] {
        let data = sctp(
            CLIENT,
            SVC,
            ITAG_BACKEND,
            data_chunk(n as u32, &payload(n), true),
        );
        let (input, out) = assert_nat(&h, &data, &data.clone().dst(BE_SAME));
        assert_eq!(crc_field(&out), crc_field(&input), "CRC32c unchanged");
    }

    let init_ack = sctp(BE_SAME, CLIENT, ITAG_CLIENT, init_ack_chunk(ITAG_BACKEND));
    let (input, out) = assert_nat(&h, &init_ack, &init_ack.clone().src(SVC));
    assert_changed_only(&input, &out, &[&IP_CSUM, &IP_SRC]);
    assert_eq!(crc_field(&out), crc_field(&input), "CRC32c unchanged");
    assert_counters(&h, &[]);
}

/// 5. A frontend with FE_SNAT (NodePort, Cluster policy): the client is masqueraded to the node
///    address and an allocated source port, so both ports change; the CRC32c is valid, and the
///    reply is mapped back to the client.
fn snat_frontend_rewrites_source_port_with_valid_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_sctp_frontend(NODE_PORT, SVC_ID, &[BE], FE_SNAT, KIND_NODE_PORT);
    let init = sctp(EXT, NODE_PORT, 0, init_chunk(ITAG_CLIENT));
    let input = init.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, hook.nat(), "verdict");
    verify_sctp(&out);
    let port = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port),
        "SNAT port {port} out of range"
    );
    let snat = (NODE, port);
    assert_frame_eq(&out, &init.clone().src(snat).dst(BE).build());
    assert_changed_only(
        &input,
        &out,
        &[&IP_CSUM, &IP_SRC, &IP_DST, &SPORT, &DPORT, &CRC],
    );

    assert_eq!(
        h.ct_get(ct_key(EXT, NODE_PORT)),
        Some(ct_entry(BE, CT_FORWARD | CT_SNAT, ids[0], snat))
    );
    assert_eq!(
        h.ct_get(ct_key(BE, snat)),
        Some(ct_entry(NODE_PORT, CT_REPLY | CT_SNAT, ids[0], EXT))
    );
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);

    // Reply: source back to the NodePort, destination back to the external client.
    let init_ack = sctp(BE, snat, ITAG_CLIENT, init_ack_chunk(ITAG_BACKEND));
    let want = init_ack.clone().src(NODE_PORT).dst(EXT);
    let (input, out) = assert_nat(&h, &init_ack, &want);
    assert_changed_only(
        &input,
        &out,
        &[&IP_CSUM, &IP_SRC, &IP_DST, &SPORT, &DPORT, &CRC],
    );
    // Later packets of the flow keep the SNAT port.
    let data = sctp(
        EXT,
        NODE_PORT,
        ITAG_BACKEND,
        data_chunk(1, &payload(9), true),
    );
    assert_nat(&h, &data, &data.clone().src(snat).dst(BE));
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 6. The CRC32c is recomputed over at most MAX_SCTP_LEN (2048) bytes of SCTP packet (common
///    header included): at the limit the packet is NATed, above it a port-changing packet is
///    dropped and counted as a NAT error, in both directions.
fn oversized_sctp_to_port_changing_frontend_is_dropped(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    // 12 (common header) + 16 (DATA header) + payload.
    let at_limit = sctp(
        CLIENT,
        SVC,
        1,
        data_chunk(1, &payload(MAX_SCTP_LEN - 28), true),
    );
    assert_eq!(at_limit.l4().len(), MAX_SCTP_LEN);
    assert_nat(&h, &at_limit, &at_limit.clone().dst(BE));
    assert_counters(&h, &[]);

    let mut drops = 0;
    for n in [MAX_SCTP_LEN - 28 + 1, MAX_SCTP_LEN - 28 + 4, 3000] {
        let big = sctp(CLIENT, SVC, 1, data_chunk(2, &payload(n), true));
        let input = big.build();
        assert!(big.l4().len() > MAX_SCTP_LEN);
        let (verdict, _) = match h.try_run(&input) {
            Ok(r) => r,
            Err(e) => {
                // BPF_PROG_TEST_RUN takes at most about a page of linear data.
                eprintln!(
                    "skipped: a {}-byte frame is too large for test-run: {e}",
                    input.len()
                );
                continue;
            }
        };
        assert_eq!(
            verdict,
            hook.drop(),
            "{}-byte SCTP packet: verdict",
            big.l4().len()
        );
        drops += 1;
        assert_counters(&h, &[(CNT_NAT_ERROR, drops)]);
    }
    assert!(
        drops >= 2,
        "frames just above the limit must fit in a test run"
    );

    // The reply direction (source port rewritten) has the same limit.
    let big = sctp(BE, CLIENT, 1, data_chunk(3, &payload(MAX_SCTP_LEN), true));
    let (verdict, _) = h.run(&big.build());
    assert_eq!(verdict, hook.drop(), "oversized reply: verdict");
    assert_counters(&h, &[(CNT_NAT_ERROR, drops + 1)]);
    // At the limit the reply still goes through.
    let reply = sctp(
        BE,
        CLIENT,
        1,
        data_chunk(4, &payload(MAX_SCTP_LEN - 28), true),
    );
    assert_nat(&h, &reply, &reply.clone().src(SVC));
}

/// 6b. Above MAX_SCTP_LEN but to a backend on the Service port: only addresses change, which the
///     CRC32c does not cover (sctp.rs: "address changes leave it alone but a port change needs
///     it recomputed"), so the packet must be NATed with its CRC untouched, not dropped.
///     Currently fails: `lb::process` calls `sctp::fix_crc` for every NATed SCTP packet, ports
///     changed or not, and `fix_crc` refuses more than MAX_SCTP_LEN bytes, so the packet is
///     dropped as a NAT error.
fn oversized_sctp_to_same_port_frontend_is_natted(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE_SAME]);
    let big = sctp(CLIENT, SVC, 1, data_chunk(1, &payload(MAX_SCTP_LEN), true));
    let (input, out) = assert_nat(&h, &big, &big.clone().dst(BE_SAME));
    assert_eq!(crc_field(&out), crc_field(&input), "CRC32c unchanged");
    let reply = sctp(
        BE_SAME,
        CLIENT,
        1,
        data_chunk(1, &payload(MAX_SCTP_LEN), true),
    );
    assert_nat(&h, &reply, &reply.clone().src(SVC));
    assert_counters(&h, &[]);
}

/// 7. A frontend without backends answers with ICMP port unreachable (like kube-proxy's REJECT)
///    quoting the original IPv4 header and the first 8 bytes of the SCTP header; so does a
///    ClusterIP on a port it does not expose. With FE_DROP_EMPTY the packet is dropped instead.
fn no_backends_answers_icmp_port_unreachable(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[]);
    let init = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT)).build();
    let (verdict, out) = h.run(&init);
    assert_eq!(verdict, hook.reject(), "verdict");
    verify_icmp(&out);
    assert_frame_eq(&out, &icmp_for(&init));
    assert_eq!(
        &out[14 + 20 + 8..14 + 20 + 8 + 20],
        &init[14..34],
        "quoted IPv4 header"
    );
    assert_eq!(
        &out[62..70],
        &init[34..42],
        "quoted SCTP ports, verification tag"
    );
    assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, 1)]);

    // A longer packet is cut down to the same 70-byte reply.
    let data = sctp(
        CLIENT,
        SVC,
        ITAG_BACKEND,
        data_chunk(1, &payload(500), true),
    )
    .build();
    let (verdict, out) = h.run(&data);
    assert_eq!(verdict, hook.reject(), "verdict");
    verify_icmp(&out);
    assert_frame_eq(&out, &icmp_for(&data));
    assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, 2)]);
    assert!(
        h.conntrack().is_empty(),
        "no conntrack for rejected packets"
    );

    // An SCTP port the ClusterIP does not expose.
    h.add_vip(VIP);
    let other = sctp(CLIENT, (VIP, 2905), 0, init_chunk(ITAG_CLIENT)).build();
    let (verdict, out) = h.run(&other);
    assert_eq!(verdict, hook.reject(), "verdict");
    assert_frame_eq(&out, &icmp_for(&other));
    assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, 2), (CNT_REJECT_NO_PORT, 1)]);

    // Traffic policy Local with no local endpoint: dropped.
    h.add_sctp_frontend((NODE, 30868), 2, &[], FE_DROP_EMPTY, KIND_NODE_PORT);
    let (verdict, _) = h.run(&sctp(EXT, (NODE, 30868), 0, init_chunk(1)).build());
    assert_eq!(verdict, hook.drop(), "verdict");
    assert_counters(
        &h,
        &[
            (CNT_REJECT_NO_BACKEND, 2),
            (CNT_REJECT_NO_PORT, 1),
            (CNT_DROP_NO_BACKEND, 1),
        ],
    );
}

/// 8. podlb does not validate the incoming CRC32c: a packet with a corrupted CRC is NATed and
///    leaves with the CRC of its output bytes, i.e. the corruption is no longer detectable by
///    the receiver. (Linux's nf_conntrack_proto_sctp, `sctp_error`, checks the CRC in
///    PREROUTING when nf_conntrack_checksum is on and the packet is CHECKSUM_NONE, and treats a
///    bad one as invalid: untracked, so iptables kube-proxy would not NAT it.) This pins the
///    current behaviour.
fn corrupted_input_crc_is_recomputed(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    let good = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT));
    let bad = good.clone().corrupt(0xdead_beef);
    let input = bad.build();
    assert_ne!(sctp_crc(sctp_of(&input).unwrap()), crc_field(&input));
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, hook.nat(), "verdict");
    let crc = verify_sctp(&out);
    assert_eq!(crc, sctp_crc(sctp_of(&out).unwrap()));
    assert_frame_eq(&out, &good.dst(BE).build());
    assert_counters(&h, &[]);
}

/// 9. Too short for an SCTP common header (12 bytes): not parsed, passed unchanged.
fn truncated_sctp_passes_unchanged(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    let full = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT)).build();
    // Datagrams with 8 and 11 bytes of SCTP (total length consistent).
    for n in [8, 11] {
        assert_untouched(&h, &cut_l4(&full, n));
    }
    // The same, padded to the Ethernet minimum: the total length still says it is short.
    assert_untouched(&h, &[cut_l4(&full, 8), vec![0; 18]].concat());
    // A frame cut after 8 bytes of SCTP while the IPv4 total length claims the whole INIT.
    let cut = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT)).build()[..14 + 20 + 8].to_vec();
    assert_untouched(&h, &cut);
    assert!(h.conntrack().is_empty());
    assert_eq!(h.stats(SVC_ID).packets, 0);
    assert_counters(&h, &[]);
}

/// 9b. A bare 12-byte common header (no chunk): complete enough to be NATed, and its CRC32c must
///     then be that of the output (the checksum field counts as zero). The SCTP length 12 is
///     not a multiple of 8, so the checksum field falls in the byte-at-a-time tail of the CRC
///     code. Currently fails: only `crc_word` zeroes the checksum field, `crc_byte` does not, so
///     for an SCTP length below 16 the old CRC bytes are fed into the new CRC.
fn header_only_sctp_gets_valid_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    let bare = sctp(CLIENT, SVC, ITAG_BACKEND, vec![]);
    assert_eq!(bare.l4().len(), 12);
    assert_nat(&h, &bare, &bare.clone().dst(BE));
    assert_counters(&h, &[]);
}

/// 9c. A frame shorter than its IPv4 total length (the common header present, the chunks cut
///     off): the CRC32c cannot be computed, so the NATed packet is dropped as a NAT error (the
///     kernel would drop it as truncated anyway) rather than sent on with a wrong CRC.
fn sctp_shorter_than_ip_total_length_is_dropped(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    let full = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT)).build();
    for n in [12, 16, 24] {
        let (verdict, _) = h.run(&full[..14 + 20 + n]);
        assert_eq!(
            verdict,
            hook.drop(),
            "{n} of 32 SCTP bytes present: verdict"
        );
    }
    assert_counters(&h, &[(CNT_NAT_ERROR, 3)]);
}

/// The CRC32c covers the SCTP packet as delimited by the IPv4 total length: Ethernet padding
/// after it is neither covered nor changed.
fn ethernet_padding_is_outside_the_crc(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    for n in [0, 1, 5] {
        let pad: Vec<u8> = (0..4 + n as u8 * 3).map(|i| 0xe0 | i).collect();
        let data = sctp(
            CLIENT,
            SVC,
            ITAG_BACKEND,
            data_chunk(1, &payload(n), n != 5),
        )
        .trailer(&pad);
        let (input, out) = assert_nat(&h, &data, &data.clone().dst(BE));
        assert_eq!(out[out.len() - pad.len()..], pad[..], "padding unchanged");
        assert_changed_only(&input, &out, &[&IP_CSUM, &IP_DST, &DPORT, &CRC]);
    }
    assert_counters(&h, &[]);
}

/// IPv4 options move the SCTP header: the rewrite and the CRC32c follow the IHL.
fn ipv4_options_before_sctp(hook: Hook) {
    let mut h = Harness::new(hook, "sctp");
    h.cluster_ip(SVC, &[BE]);
    // NOPs then end of options (4 bytes), and a 12-byte option area.
    for opts in [
        &[1u8, 1, 1, 0][..],
        &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0][..],
    ] {
        let init = sctp(CLIENT, SVC, 0, init_chunk(ITAG_CLIENT)).ip_opts(opts);
        assert_nat(&h, &init, &init.clone().dst(BE));
        let data = sctp(CLIENT, SVC, 9, data_chunk(1, &payload(13), true)).ip_opts(opts);
        assert_nat(&h, &data, &data.clone().dst(BE));
        let reply = sctp(BE, CLIENT, ITAG_CLIENT, init_ack_chunk(ITAG_BACKEND)).ip_opts(opts);
        assert_nat(&h, &reply, &reply.clone().src(SVC));
    }
    assert_counters(&h, &[]);
}
