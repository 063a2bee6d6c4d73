//! `lb_slots` (a frontend's backends, by slot) and `lb_backends` (the backends, by id).
use crate::Addr;

/// Key of `lb_slots`: the `slot`-th backend of service `svc_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub svc_id: u32,
    pub slot: u32,
}

/// Value of `lb_slots`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub backend_id: u32,
}

/// A backend (pod address and target port). Value of `lb_backends`, an array indexed by
/// backend id. Id 0 is never used; an all-zero entry means "no backend". A frontend's backends
/// are all of the frontend's family.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr: Addr,
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
