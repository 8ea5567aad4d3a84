//! Decides in a loop for a profiler: `decide_loop [POLICIES] [SECONDS]`
//! (`perf record -g target/release/examples/decide_loop 1000 10`).
#![allow(clippy::unwrap_used, reason = "profiling harness")]

/// The allocator of the writ binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let secs: u64 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let set = writ_bench::policy_set(n).unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut i = 0usize;
    let mut count = 0u64;
    while Instant::now() < until {
        for _ in 0..100 {
            i = i.wrapping_add(1);
            black_box(writ_bench::decide_once(&set, i % n));
        }
        count += 100;
    }
    println!("{:.1} µs per decision", secs as f64 * 1e6 / count as f64);
}
