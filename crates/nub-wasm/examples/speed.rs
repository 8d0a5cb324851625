//! The interpreter's speed in the guest against the same wasmi natively on
//! the host, in one run: fib(25) (recursive, i32), a loop of 10M
//! iterations, and an f64 loop of 1M iterations (docs/wasm.md, *Why this
//! dispatch*).
//!
//! `cargo run --release -p nub-wasm --example speed [ROUNDS]`; set
//! `NUB_WASM_GUEST_ELF` to time another build of the guest.

use std::time::{Duration, Instant};

use nub_sandbox::{GuestBinary, UninitializedSandbox};
use nub_wasm::{WasmSandbox, workloads};

/// The workloads ([`workloads`]): row, (export, argument).
const ROWS: &[(&str, (&str, i32))] = &[
    ("fib(25)", workloads::FIB_25),
    ("loop 10M", workloads::LOOP_10M),
    ("f64 1M", workloads::F64_1M),
];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(15);
    let wasm = wat::parse_str(workloads::SPEED_WAT)?;
    let binary = match std::env::var_os("NUB_WASM_GUEST_ELF") {
        Some(path) => GuestBinary::FilePath(path.into()),
        None => WasmSandbox::guest_binary(),
    };
    let sandbox =
        UninitializedSandbox::new(binary, Some(WasmSandbox::default_config()))?.evolve()?;
    let mut sbox = WasmSandbox::from_sandbox(sandbox)?;
    let module = sbox.load(&wasm)?;
    sbox.instantiate(&module)?;

    let engine = wasmi::Engine::default();
    let native_module = wasmi::Module::new(&engine, &wasm[..])?;
    let mut store = wasmi::Store::new(&engine, ());
    let instance =
        wasmi::Linker::<()>::new(&engine).instantiate_and_start(&mut store, &native_module)?;

    println!("| workload | guest | native wasmi | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for &(row, (export, n)) in ROWS {
        let mut guest = Vec::new();
        let mut native = Vec::new();
        let mut results = (None, None);
        for _ in 0..rounds {
            let t = Instant::now();
            let got: Vec<nub_wasm::Value> = sbox.call_values(
                &sbox.current().ok_or("no instance")?,
                export,
                &[nub_wasm::Value::I32(n)],
            )?;
            guest.push(t.elapsed());
            results.0 = Some(got);

            let func = instance.get_func(&store, export).ok_or("no export")?;
            let mut out = [wasmi::Val::I32(0)];
            if export == "f64loop" {
                out[0] = wasmi::Val::F64(0.0.into());
            }
            let t = Instant::now();
            func.call(&mut store, &[wasmi::Val::I32(n)], &mut out)?;
            native.push(t.elapsed());
            results.1 = Some(format!("{:?}", out[0]));
        }
        let (g, h) = (median(guest), median(native));
        println!(
            "| {row} | {:.2} ms | {:.2} ms | {:.2}x |",
            g.as_secs_f64() * 1e3,
            h.as_secs_f64() * 1e3,
            g.as_secs_f64() / h.as_secs_f64()
        );
        eprintln!(
            "  {row}: guest {:?}, native {}",
            results.0,
            results.1.unwrap_or_default()
        );
    }
    Ok(())
}
