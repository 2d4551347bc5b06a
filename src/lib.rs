//! leasehold
pub use leasehold_core::*;
