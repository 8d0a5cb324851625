//! The interpreter's speed in the guest against the same wasmi natively on
//! the host, in one run: fib(25) (recursive, i32), a loop of 10M
//! iterations, and an f64 loop of 1M iterations (docs/wasm.md, *Why this
//! dispatch*).
//!
//! `cargo run --release -p nub-wasm --example speed [ROUNDS]`; set
//! `NUB_WASM_GUEST_ELF` to time another build of the guest.

use std::time::{Duration, Instant};

use nub_sandbox::{GuestBinary, UninitializedSandbox};
use nub_wasm::WasmSandbox;

/// The three workloads.
const WAT: &str = r#"
(module
  (func $fib (export "fib") (param $n i32) (result i32)
    local.get $n
    i32.const 2
    i32.lt_s
    if (result i32)
      local.get $n
    else
      local.get $n
      i32.const 1
      i32.sub
      call $fib
      local.get $n
      i32.const 2
      i32.sub
      call $fib
      i32.add
    end)
  (func (export "loop") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    block
      loop
        local.get $i
        local.get $n
        i32.ge_u
        br_if 1
        local.get $acc
        local.get $i
        i32.xor
        i32.const 3
        i32.add
        local.set $acc
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $acc)
  (func (export "f64loop") (param $n i32) (result f64)
    (local $i i32) (local $x f64)
    f64.const 1
    local.set $x
    block
      loop
        local.get $i
        local.get $n
        i32.ge_u
        br_if 1
        local.get $x
        f64.const 0.999
        f64.mul
        local.get $i
        f64.convert_i32_s
        f64.const 0.001
        f64.mul
        f64.add
        f64.sqrt
        f64.const 1.5
        f64.div
        f64.const 1
        f64.add
        local.set $x
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $x))
"#;

/// The workloads: export, argument.
const ROWS: &[(&str, &str, i32)] = &[
    ("fib(25)", "fib", 25),
    ("loop 10M", "loop", 10_000_000),
    ("f64 1M", "f64loop", 1_000_000),
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
    let wasm = wat::parse_str(WAT)?;
    let binary = match std::env::var_os("NUB_WASM_GUEST_ELF") {
        Some(path) => GuestBinary::FilePath(path.into()),
        None => WasmSandbox::guest_binary(),
    };
    let sandbox =
        UninitializedSandbox::new(binary, Some(WasmSandbox::default_config()))?.evolve()?;
    let mut sbox = WasmSandbox::from_sandbox(sandbox);
    let module = sbox.load(&wasm)?;
    sbox.instantiate(&module)?;

    let engine = wasmi::Engine::default();
    let native_module = wasmi::Module::new(&engine, &wasm[..])?;
    let mut store = wasmi::Store::new(&engine, ());
    let instance =
        wasmi::Linker::<()>::new(&engine).instantiate_and_start(&mut store, &native_module)?;

    println!("| workload | guest | native wasmi | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for &(row, export, n) in ROWS {
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
