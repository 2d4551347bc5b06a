//! Benchmarks of the lease manager.

fn main() {}
