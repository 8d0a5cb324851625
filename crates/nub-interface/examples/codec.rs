//! The codec comparison behind docs/interfaces.md's choice: postcard
//! (serde) against rkyv (validated access, then deserialized, as a typed
//! call needs an owned value) for a small struct and a 4 KiB argument,
//! encode + decode per round trip, host side, release build:
//! `cargo run --release -p nub-interface --example codec`.

use std::{hint::black_box, time::Instant};

#[derive(
    serde::Serialize, serde::Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
struct Pair {
    a: u64,
    b: u64,
}

/// Median nanoseconds per call of `f` over 15 rounds of `n` calls.
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[7]
}

fn main() {
    let pair = Pair { a: 40, b: 2 };
    let bytes = vec![0x5Au8; 4096];
    let n = 200_000;
    let postcard_small = time(n, || {
        let enc = postcard::to_allocvec(black_box(&pair)).unwrap();
        let dec: Pair = postcard::from_bytes(black_box(&enc)).unwrap();
        black_box(dec);
    });
    let rkyv_small = time(n, || {
        let enc = rkyv::to_bytes::<rkyv::rancor::Error>(black_box(&pair)).unwrap();
        let archived = rkyv::access::<ArchivedPair, rkyv::rancor::Error>(black_box(&enc)).unwrap();
        let dec: Pair = rkyv::deserialize::<Pair, rkyv::rancor::Error>(archived).unwrap();
        black_box(dec);
    });
    let postcard_4k = time(n / 10, || {
        let enc = postcard::to_allocvec(black_box(&bytes)).unwrap();
        let dec: Vec<u8> = postcard::from_bytes(black_box(&enc)).unwrap();
        black_box(dec);
    });
    let rkyv_4k = time(n / 10, || {
        let enc = rkyv::to_bytes::<rkyv::rancor::Error>(black_box(&bytes)).unwrap();
        let archived =
            rkyv::access::<rkyv::Archived<Vec<u8>>, rkyv::rancor::Error>(black_box(&enc)).unwrap();
        let dec: Vec<u8> = rkyv::deserialize::<Vec<u8>, rkyv::rancor::Error>(archived).unwrap();
        black_box(dec);
    });
    let buf = serde_bytes::ByteBuf::from(bytes.clone());
    let postcard_bytebuf = time(n / 10, || {
        let enc = postcard::to_allocvec(black_box(&buf)).unwrap();
        let dec: serde_bytes::ByteBuf = postcard::from_bytes(black_box(&enc)).unwrap();
        black_box(dec);
    });
    let small_len = (
        postcard::to_allocvec(&pair).unwrap().len(),
        rkyv::to_bytes::<rkyv::rancor::Error>(&pair).unwrap().len(),
    );
    println!("| argument | postcard | rkyv | bytes (postcard / rkyv) |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| Pair {{ a: u64, b: u64 }} | {postcard_small:.0} ns | {rkyv_small:.0} ns | {} / {} |",
        small_len.0, small_len.1
    );
    println!(
        "| 4 KiB Vec<u8> | {postcard_4k:.0} ns | {rkyv_4k:.0} ns | {} / {} |",
        postcard::to_allocvec(&bytes).unwrap().len(),
        rkyv::to_bytes::<rkyv::rancor::Error>(&bytes).unwrap().len()
    );
    println!(
        "| 4 KiB serde_bytes::ByteBuf | {postcard_bytebuf:.0} ns | (n/a) | {} |",
        postcard::to_allocvec(&buf).unwrap().len()
    );
}
