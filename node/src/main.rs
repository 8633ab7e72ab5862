//! The `tenure` binary (being built).

fn main() {}
