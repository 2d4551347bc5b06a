//! The `leasehold` operator CLI.

fn main() {}
