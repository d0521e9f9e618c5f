//! spop-mirror: work in progress.
fn main() {}
