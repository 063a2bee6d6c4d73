//! SCTP chunks for the test packets (the frames around them come from [`sctp`](super::sctp)):
//! INIT, INIT-ACK and DATA with fixed, recognisable field values.

/// INIT (type 1, flags 0, length 20): initiate tag, a_rwnd, outbound and inbound streams,
/// initial TSN.
pub fn init_chunk(itag: u32) -> Vec<u8> {
    let mut c = vec![1, 0];
    c.extend(20u16.to_be_bytes());
    c.extend(itag.to_be_bytes());
    c.extend(106_496u32.to_be_bytes()); // a_rwnd
    c.extend(10u16.to_be_bytes()); // outbound streams
    c.extend(65_535u16.to_be_bytes()); // inbound streams
    c.extend(0x0bad_cafeu32.to_be_bytes()); // initial TSN
    c
}

/// INIT-ACK (type 2) with the fixed fields of an INIT and a 16-byte State Cookie parameter.
pub fn init_ack_chunk(itag: u32) -> Vec<u8> {
    let mut c = vec![2, 0];
    c.extend((20u16 + 20).to_be_bytes());
    c.extend(itag.to_be_bytes());
    c.extend(212_992u32.to_be_bytes());
    c.extend(10u16.to_be_bytes());
    c.extend(10u16.to_be_bytes());
    c.extend(0x7e57_0001u32.to_be_bytes());
    c.extend(7u16.to_be_bytes()); // State Cookie
    c.extend(20u16.to_be_bytes());
    c.extend((0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5a));
    c
}

/// DATA (type 0, flags B|E, length 16 + payload): TSN, stream id, stream sequence, PPID, the
/// payload, then zero padding to 4 bytes when `pad` (RFC 9260 requires it; `pad == false` builds
/// a non-conforming last chunk, to put every byte-tail length in front of the CRC code).
pub fn data_chunk(tsn: u32, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut c = vec![0, 0x03];
    c.extend(((16 + payload.len()) as u16).to_be_bytes());
    c.extend(tsn.to_be_bytes());
    c.extend(1u16.to_be_bytes()); // stream id
    c.extend((tsn as u16).to_be_bytes()); // stream sequence
    c.extend(46u32.to_be_bytes()); // PPID (Diameter)
    c.extend(payload);
    if pad {
        c.resize(c.len().next_multiple_of(4), 0);
    }
    c
}

/// A payload of `n` recognisable bytes.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + n) as u8 ^ 0xa5).collect()
}
