//! Wasm sandboxes from images and from the VM pool: the guest's compiled
//! modules, instances and float state survive a capture, and a recycled VM
//! starts clean.

mod common;

use common::{modes, sandbox};
use nub_wasm::{InstanceOptions, Value, Wasi, WasmSandbox, workloads};

/// A counter in linear memory, a global, and float work.
const STATEFUL: &str = r#"(module
  (memory (export "memory") 1)
  (global $calls (mut i64) (i64.const 0))
  (func (export "bump") (param i32) (result i32)
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (local.get 0)))
    (i32.load (i32.const 0)))
  (func (export "calls") (result i64) (global.get $calls))
  (func (export "mix") (param f64 f32) (result f64)
    (f64.add (f64.sqrt (local.get 0)) (f64.promote_f32 (f32.mul (local.get 1) (local.get 1))))))"#;

fn mix(sbox: &mut WasmSandbox, x: f64, y: f32) -> u64 {
    let r: f64 = sbox.call("mix", (x, y)).unwrap();
    r.to_bits()
}

#[test]
fn a_wasm_sandbox_from_an_image_goes_on_with_its_modules_and_instances() {
    for mode in modes() {
        let mut sbox = sandbox(mode);
        let bytes = wat::parse_str(STATEFUL).unwrap();
        let module = sbox.load(&bytes).unwrap();
        let instance = sbox.instantiate(&module).unwrap();
        assert_eq!(sbox.call::<i32, i32>("bump", 5).unwrap(), 5);
        let expected = mix(&mut sbox, 2.0, 1.5);
        // A WASI instance with output captured before the capture.
        let hello = workloads_hello();
        let wasi_module = sbox.load(&hello).unwrap();
        let wasi = sbox
            .instantiate_with(
                &wasi_module,
                InstanceOptions::default().with_wasi(Wasi::new()),
            )
            .unwrap();
        let image = sbox.capture_image().unwrap();

        for start in 0..2 {
            let mut from = WasmSandbox::from_image(&image, None).unwrap();
            from.set_current(instance);
            // Memory and globals go on from the capture, in each sandbox
            // on its own.
            assert_eq!(
                from.call::<i32, i32>("bump", 1 + start).unwrap(),
                6 + start,
                "{mode:?}"
            );
            assert_eq!(from.call::<(), i64>("calls", ()).unwrap(), 2);
            assert_eq!(mix(&mut from, 2.0, 1.5), expected);
            // The module is compiled in the guest already.
            let info = from.load(&bytes).unwrap();
            assert_eq!(info.hash, module.hash);
            let fresh = from.instantiate(&info).unwrap();
            assert_ne!(fresh, instance);
            assert_eq!(from.call::<i32, i32>("bump", 3).unwrap(), 3);
            // WASI instances go on too (their host functions registered).
            let outcome = from.run(&wasi).unwrap();
            assert_eq!(outcome.output.stdout, b"hi\n");
        }
        // The captured sandbox carries on unchanged.
        assert_eq!(sbox.call_in::<i32, i32>(&instance, "bump", 1).unwrap(), 6);
    }
}

/// `_start` writes "hi\n" and reads the clock (a host call).
fn workloads_hello() -> Vec<u8> {
    wat::parse_str(
        r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func $c (param i32 i64 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 64) "hi\n")
      (func (export "_start")
        (drop (call $c (i32.const 1) (i64.const 0) (i32.const 32)))
        (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 3))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap()
}

#[test]
fn a_recycled_vm_runs_float_work_like_a_fresh_one() {
    // The f64 workload through several sandboxes in turn: the later ones
    // get pooled VMs, whose FPU/SSE state the pool resets.
    let module = wat::parse_str(workloads::SPEED_WAT).unwrap();
    let mut results = Vec::new();
    let mut recycled = false;
    for _ in 0..3 {
        let mut sbox = WasmSandbox::new().unwrap();
        recycled |= sbox.sandbox().is_recycled();
        let m = sbox.load(&module).unwrap();
        sbox.instantiate(&m).unwrap();
        let r = sbox
            .call_values(&sbox.current().unwrap(), "f64loop", &[Value::I32(10_000)])
            .unwrap();
        results.push(r);
    }
    assert!(recycled, "the pool gave back a VM");
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
}
