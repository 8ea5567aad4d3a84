//! In-process policy decisions at 10, 100 and 1,000 policies.
//!
//! `cargo bench -p writ-bench --bench policy` prints p50/p99/p99.9 from a
//! plain timing loop, then criterion's estimates.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::hint::black_box;

use criterion::Criterion;
use writ_bench::{decide_once, percentiles, policy_set};

fn main() {
    println!("| policies | p50 | p99 | p99.9 |");
    println!("|---:|---:|---:|---:|");
    let sets: Vec<(usize, writ_policy::PolicySet)> = [10, 100, 1000]
        .into_iter()
        .map(|n| (n, policy_set(n).unwrap()))
        .collect();
    for (n, set) in &sets {
        assert!(decide_once(set, 7), "the benchmark request must be allowed");
        for i in 0..2000 {
            black_box(decide_once(set, i % n));
        }
        let (p50, p99, p999) = percentiles(20_000, |i| {
            black_box(decide_once(set, i % n));
        });
        println!("| {n} | {p50:.1?} | {p99:.1?} | {p999:.1?} |");
    }

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("policy_decision");
    for (n, set) in &sets {
        group.bench_function(format!("{n}_policies"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(decide_once(set, i % n))
            })
        });
    }
    group.finish();
    c.final_summary();
}
