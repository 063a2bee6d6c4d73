//! podlb's test kit, for the tests, the bench and the demo; never part of the product.
//!
//! - [`rng`]: the one seeded pseudo-random generator of the tests and the bench.
pub mod rng;

pub use rng::Rng;
