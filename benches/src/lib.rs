//! Benchmarks for the spop workspace (see the `benches` targets).
