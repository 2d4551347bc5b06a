#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;
mod faulty;
mod fixture;
mod logs;
mod macros;
mod recording;
#[cfg(feature = "servers")]
pub mod servers;

pub use conformance::{
    coordination_conformance, provider_conformance, store_conformance, CredentialProbe,
};
pub use faulty::{Fault, FaultyProvider, Operation};
pub use logs::{assert_no_secret, capture_tracing, CaptureWriter, LogCapture};
pub use recording::RecordingProvider;
