//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

pub mod e2e;
pub mod packet;
