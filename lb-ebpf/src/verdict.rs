//! What a step tells the entry point to do with the packet: the one result type of the
//! pipeline and of the steps that can end it (backend selection, SNAT, NAT).

/// What the hook should do with the packet.
pub enum Verdict {
    /// Not service traffic: continue untouched.
    Pass,
    /// NATed: continue (XDP may forward it itself).
    Nat,
    Drop,
    /// Answer the client: TCP RST or ICMP port unreachable.
    Reject,
}
