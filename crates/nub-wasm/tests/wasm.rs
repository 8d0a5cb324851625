//! WebAssembly in the wasm guest, against wasmi natively on the host:
//! results, traps, memory limits, floats, deadlines, hostile modules.

mod common;

use std::time::Duration;

use common::{Native, modes, same, sandbox, with_module};
use nub_sandbox::{CallMode, CallOptions, HyperlightError};
use nub_wasm::{ExternKind, FuncSig, InstanceOptions, TrapCode, ValType, Value, WasmError};

const FIB: &str = r#"
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
  (func (export "fib64") (param $n i64) (result i64)
    (local $a i64) (local $b i64) (local $t i64)
    i64.const 1
    local.set $b
    block
      loop
        local.get $n
        i64.eqz
        br_if 1
        local.get $a
        local.get $b
        i64.add
        local.set $t
        local.get $b
        local.set $a
        local.get $t
        local.set $b
        local.get $n
        i64.const 1
        i64.sub
        local.set $n
        br 0
      end
    end
    local.get $a))
"#;

const LOOPS: &str = r#"
(module
  (func (export "sum") (param $n i32) (result i64)
    (local $i i32) (local $acc i64)
    block
      loop
        local.get $i
        local.get $n
        i32.ge_u
        br_if 1
        local.get $acc
        local.get $i
        i64.extend_i32_u
        local.get $i
        i64.extend_i32_u
        i64.mul
        i64.add
        local.set $acc
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $acc)
  (func (export "collatz") (param $n i64) (result i32)
    (local $steps i32)
    block
      loop
        local.get $n
        i64.const 1
        i64.le_u
        br_if 1
        local.get $n
        i64.const 1
        i64.and
        i64.eqz
        if (result i64)
          local.get $n
          i64.const 1
          i64.shr_u
        else
          local.get $n
          i64.const 3
          i64.mul
          i64.const 1
          i64.add
        end
        local.set $n
        local.get $steps
        i32.const 1
        i32.add
        local.set $steps
        br 0
      end
    end
    local.get $steps)
  (func (export "spin") (loop br 0))
  (func (export "multi") (param i32 i64) (result i64 i32)
    local.get 1
    local.get 0))
"#;

const MEMORY: &str = r#"
(module
  (memory (export "mem") 1)
  (data (i32.const 16) "hello, wasm")
  (func (export "load8") (param i32) (result i32)
    local.get 0
    i32.load8_u)
  (func (export "store_load") (param $addr i32) (param $v i64) (result i64)
    local.get $addr
    local.get $v
    i64.store
    local.get $addr
    i64.load)
  (func (export "grow") (param i32) (result i32)
    local.get 0
    memory.grow)
  (func (export "size") (result i32)
    memory.size)
  (func (export "fill_sum") (param $len i32) (result i32)
    (local $i i32) (local $sum i32)
    i32.const 0
    i32.const 7
    local.get $len
    memory.fill
    block
      loop
        local.get $i
        local.get $len
        i32.ge_u
        br_if 1
        local.get $sum
        local.get $i
        i32.load8_u
        i32.add
        local.set $sum
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $sum))
"#;

const FLOATS: &str = r#"
(module
  (func (export "f64ops") (param $a f64) (param $b f64) (result f64 f64 f64 f64 f64 f64 f64)
    local.get $a
    local.get $b
    f64.add
    local.get $a
    local.get $b
    f64.mul
    local.get $a
    local.get $b
    f64.div
    local.get $a
    f64.sqrt
    local.get $a
    local.get $b
    f64.min
    local.get $a
    f64.nearest
    local.get $a
    f64.floor)
  (func (export "f32ops") (param $a f32) (param $b f32) (result f32 f32 f32 f32 f32)
    local.get $a
    local.get $b
    f32.sub
    local.get $a
    local.get $b
    f32.div
    local.get $a
    f32.sqrt
    local.get $a
    local.get $b
    f32.max
    local.get $a
    f32.trunc)
  (func (export "convert") (param $a f64) (result i64 i32 f32 i64)
    local.get $a
    i64.trunc_sat_f64_s
    local.get $a
    i32.trunc_sat_f64_u
    local.get $a
    f32.demote_f64
    local.get $a
    i64.reinterpret_f64)
  (func (export "series") (param $n i32) (result f64)
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

const TRAPS: &str = r#"
(module
  (memory 1)
  (table 2 funcref)
  (type $v (func))
  (func $f (export "ok") (result i32) i32.const 7)
  (elem (i32.const 1) $f)
  (func (export "unreachable") unreachable)
  (func (export "div") (param i32 i32) (result i32)
    local.get 0
    local.get 1
    i32.div_s)
  (func (export "oob") (param i32) (result i32)
    local.get 0
    i32.load)
  (func (export "trunc") (param f64) (result i32)
    local.get 0
    i32.trunc_f64_s)
  (func (export "null") (param i32)
    local.get 0
    call_indirect (type $v))
  (func $deep (export "deep") (param i32) (result i32)
    local.get 0
    i32.const 1
    i32.add
    call $deep))
"#;

fn i32s(values: &[i32]) -> Vec<Value> {
    values.iter().map(|v| Value::I32(*v)).collect()
}

#[test]
fn fib_matches_native_wasmi_in_both_call_modes() {
    for mode in modes() {
        let mut sbox = with_module(mode, FIB);
        let mut native = Native::new(FIB);
        for n in (0..=20).chain([25]) {
            same(&mut sbox, &mut native, "fib", &i32s(&[n])).unwrap();
            same(&mut sbox, &mut native, "fib64", &[Value::I64(n.into())]).unwrap();
        }
        assert_eq!(sbox.call::<i32, i32>("fib", 25).unwrap(), 75025);
        assert_eq!(
            sbox.call::<i64, i64>("fib64", 90).unwrap(),
            2880067194370816120
        );
    }
}

#[test]
fn loops_and_multi_value_match_native_wasmi() {
    let mut sbox = with_module(CallMode::Exit, LOOPS);
    let mut native = Native::new(LOOPS);
    for n in [0, 1, 1000, 1_000_000] {
        same(&mut sbox, &mut native, "sum", &i32s(&[n])).unwrap();
    }
    for n in [1i64, 27, 97, 871, 837_799] {
        same(&mut sbox, &mut native, "collatz", &[Value::I64(n)]).unwrap();
    }
    let args = [Value::I32(-3), Value::I64(i64::MIN)];
    same(&mut sbox, &mut native, "multi", &args).unwrap();
    let (a, b) = sbox
        .call::<(i32, i64), (i64, i32)>("multi", (-3, 5))
        .unwrap();
    assert_eq!((a, b), (5, -3));
}

#[test]
fn memory_loads_stores_and_grows_like_native_wasmi() {
    let mut sbox = with_module(CallMode::Exit, MEMORY);
    let mut native = Native::new(MEMORY);
    for addr in [16, 20, 26, 0, 65535] {
        same(&mut sbox, &mut native, "load8", &i32s(&[addr])).unwrap();
    }
    let word = [Value::I32(1024), Value::I64(0x0123_4567_89ab_cdef)];
    same(&mut sbox, &mut native, "store_load", &word).unwrap();
    same(&mut sbox, &mut native, "fill_sum", &i32s(&[4096])).unwrap();
    // A store past the end traps in both.
    let past = [Value::I32(65532), Value::I64(1)];
    let trap = same(&mut sbox, &mut native, "store_load", &past).unwrap_err();
    assert_eq!(trap, TrapCode::MemoryOutOfBounds);
    same(&mut sbox, &mut native, "grow", &i32s(&[3])).unwrap();
    same(&mut sbox, &mut native, "size", &[]).unwrap();
    // Memory written by one call is there for the next (fill_sum wrote 7s).
    assert_eq!(sbox.call::<i32, i32>("load8", 16).unwrap(), 7);
    assert_eq!(sbox.call::<i32, i32>("load8", 5000).unwrap(), 0);
}

#[test]
fn memory_grow_past_the_guest_budget_returns_minus_one_and_the_sandbox_lives() {
    let mut sbox = with_module(CallMode::Exit, MEMORY);
    let budget = sbox.limits().unwrap().memory_bytes;
    assert!(budget > 0);
    // Ask for more 64 KiB pages than the whole budget holds.
    let pages = i32::try_from(budget / 65536 + 1).unwrap();
    assert_eq!(sbox.call::<i32, i32>("grow", pages).unwrap(), -1);
    assert_eq!(sbox.call::<(), i32>("size", ()).unwrap(), 1);
    // Within the budget, growing works (and the old size comes back).
    assert_eq!(sbox.call::<i32, i32>("grow", 2).unwrap(), 1);
    assert_eq!(sbox.call::<(), i32>("size", ()).unwrap(), 3);
    assert!(!sbox.sandbox().is_poisoned());
}

#[test]
fn a_dropped_instance_gives_its_memory_back() {
    let mut sbox = with_module(CallMode::Exit, MEMORY);
    let budget = sbox.limits().unwrap().memory_bytes;
    let most = i32::try_from(budget / 65536).unwrap() - 1;
    assert_eq!(sbox.call::<i32, i32>("grow", most).unwrap(), 1);
    let first = sbox.current().unwrap();
    // A second instance cannot have its one page now...
    let module = sbox.load(&wat::parse_str(MEMORY).unwrap()).unwrap();
    let err = sbox.instantiate(&module).unwrap_err();
    assert!(matches!(err, WasmError::Instantiate(_)), "{err}");
    // ...but can once the first is gone.
    sbox.drop_instance(first).unwrap();
    sbox.instantiate(&module).unwrap();
    assert_eq!(sbox.call::<i32, i32>("load8", 16).unwrap(), i32::from(b'h'));
    let err = sbox.call_in::<i32, i32>(&first, "load8", 16).unwrap_err();
    assert!(matches!(err, WasmError::Unknown(_)), "{err}");
}

#[test]
fn floats_match_native_wasmi_bit_for_bit() {
    let mut sbox = with_module(CallMode::Exit, FLOATS);
    let mut native = Native::new(FLOATS);
    let f64s = [
        0.0,
        -0.0,
        1.5,
        -2.25,
        2.5,
        1e300,
        f64::MIN_POSITIVE / 3.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from_bits(0x7ff0_0000_dead_beef),
    ];
    for a in f64s {
        for b in [3.0, -0.0, f64::NAN, 1e-310] {
            same(
                &mut sbox,
                &mut native,
                "f64ops",
                &[Value::F64(a.to_bits()), Value::F64(b.to_bits())],
            )
            .unwrap();
        }
        same(
            &mut sbox,
            &mut native,
            "convert",
            &[Value::F64(a.to_bits())],
        )
        .unwrap();
    }
    for a in [0.0f32, -1.75, 3.5, f32::MAX, f32::NAN, 1e-40] {
        for b in [2.0f32, -0.0, f32::INFINITY] {
            let args = [Value::F32(a.to_bits()), Value::F32(b.to_bits())];
            same(&mut sbox, &mut native, "f32ops", &args).unwrap();
        }
    }
    same(&mut sbox, &mut native, "series", &i32s(&[100_000])).unwrap();
    let x = sbox.call::<i32, f64>("series", 1000).unwrap();
    assert!(x.is_finite() && x > 1.0, "{x}");
}

#[test]
fn traps_are_typed_match_native_wasmi_and_leave_the_sandbox_usable() {
    for mode in modes() {
        let mut sbox = with_module(mode, TRAPS);
        let mut native = Native::new(TRAPS);
        let cases: [(&str, Vec<Value>, TrapCode); 7] = [
            ("unreachable", vec![], TrapCode::UnreachableCodeReached),
            ("div", i32s(&[1, 0]), TrapCode::IntegerDivisionByZero),
            ("div", i32s(&[i32::MIN, -1]), TrapCode::IntegerOverflow),
            ("oob", i32s(&[65535]), TrapCode::MemoryOutOfBounds),
            (
                "trunc",
                vec![Value::F64(f64::NAN.to_bits())],
                TrapCode::BadConversionToInteger,
            ),
            ("null", i32s(&[0]), TrapCode::IndirectCallToNull),
            ("deep", i32s(&[0]), TrapCode::StackOverflow),
        ];
        for (name, args, code) in cases {
            let got = same(&mut sbox, &mut native, name, &args).unwrap_err();
            assert_eq!(got, code, "{name}");
            // The sandbox and the instance go on.
            assert!(!sbox.sandbox().is_poisoned());
            assert_eq!(sbox.call::<(), i32>("ok", ()).unwrap(), 7);
        }
        let instance = sbox.current().unwrap();
        let err = sbox.call::<i32, ()>("null", 5).unwrap_err();
        assert_eq!(err.trap_code(), Some(TrapCode::TableOutOfBounds), "{err}");
        // The module can be instantiated again after traps.
        let module = sbox.load(&wat::parse_str(TRAPS).unwrap()).unwrap();
        let again = sbox.instantiate(&module).unwrap();
        assert_ne!(again, instance);
        assert_eq!(sbox.call::<(), i32>("ok", ()).unwrap(), 7);
    }
}

#[test]
fn a_deadline_stops_an_infinite_loop() {
    for mode in modes() {
        let mut sbox = with_module(mode, LOOPS);
        let instance = sbox.current().unwrap();
        let options = CallOptions::default().with_deadline(Duration::from_millis(100));
        let err = sbox
            .call_in_with::<(), ()>(&instance, "spin", (), options)
            .unwrap_err();
        match &err {
            WasmError::Sandbox(e @ HyperlightError::ExecutionTimeout(_)) => assert!(e.poisons()),
            other => panic!("{mode:?}: {other}"),
        }
        // A deadline poisons: later calls say so, typed.
        let err = sbox.call::<i32, i64>("sum", 3).unwrap_err();
        assert!(
            matches!(err, WasmError::Sandbox(HyperlightError::PoisonedSandbox)),
            "{err}"
        );
    }
}

#[test]
fn the_configured_execution_time_stops_an_infinite_loop() {
    let config = nub_wasm::WasmSandbox::default_config()
        .with_max_execution_time(Some(Duration::from_millis(100)));
    let mut sbox = nub_wasm::WasmSandbox::with_config(config).unwrap();
    let module = sbox.load(&wat::parse_str(LOOPS).unwrap()).unwrap();
    sbox.instantiate(&module).unwrap();
    let err = sbox.call::<(), ()>("spin", ()).unwrap_err();
    assert!(
        matches!(
            err,
            WasmError::Sandbox(HyperlightError::ExecutionTimeout(_))
        ),
        "{err}"
    );
}

#[test]
fn fuel_runs_out_as_a_trap() {
    let mut sbox = sandbox(CallMode::Exit);
    let module = sbox.load(&wat::parse_str(LOOPS).unwrap()).unwrap();
    let instance = sbox
        .instantiate_with(&module, InstanceOptions::default().with_fuel(10_000))
        .unwrap();
    assert_eq!(sbox.fuel_left(&instance).unwrap(), Some(10_000));
    assert_eq!(sbox.call::<i32, i64>("sum", 10).unwrap(), 285);
    let left = sbox.fuel_left(&instance).unwrap().unwrap();
    assert!(left < 10_000, "{left}");
    let err = sbox.call::<(), ()>("spin", ()).unwrap_err();
    assert_eq!(err.trap_code(), Some(TrapCode::OutOfFuel), "{err}");
    assert_eq!(sbox.fuel_left(&instance).unwrap(), Some(0));
    // An unmetered instance of the same module is not limited.
    let free = sbox.instantiate(&module).unwrap();
    assert_eq!(sbox.fuel_left(&free).unwrap(), None);
    assert_eq!(
        sbox.call::<i32, i64>("sum", 10_000).unwrap(),
        333_283_335_000
    );
}

#[test]
fn exports_list_names_and_signatures() {
    let mut sbox = with_module(CallMode::Exit, MEMORY);
    let instance = sbox.current().unwrap();
    let exports = sbox.exports(&instance).unwrap();
    let names: Vec<&str> = exports.iter().map(|e| e.name.as_str()).collect();
    // Sorted by name (wasmi's order), the module's list alike.
    assert_eq!(
        names,
        ["fill_sum", "grow", "load8", "mem", "size", "store_load"]
    );
    assert_eq!(exports[3].kind, ExternKind::Memory { min: 1, max: None });
    assert_eq!(
        exports[5].kind,
        ExternKind::Func(FuncSig {
            params: vec![ValType::I32, ValType::I64],
            results: vec![ValType::I64],
        })
    );
    // The module's own list says the same.
    let module = sbox.load(&wat::parse_str(MEMORY).unwrap()).unwrap();
    assert_eq!(module.exports, exports);
    assert!(module.imports.is_empty());
}

#[test]
fn wrong_names_and_types_are_typed_errors() {
    let mut sbox = with_module(CallMode::Exit, FIB);
    let err = sbox.call::<i32, i32>("nope", 1).unwrap_err();
    assert!(
        matches!(err, WasmError::NoSuchExport(ref n) if n == "nope"),
        "{err}"
    );
    let err = sbox.call::<i64, i32>("fib", 1).unwrap_err();
    assert!(
        matches!(err, WasmError::Signature { ref given, .. } if given == &[ValType::I64]),
        "{err}"
    );
    let err = sbox.call::<i32, f64>("fib", 1).unwrap_err();
    assert!(matches!(err, WasmError::ResultTypes { .. }), "{err}");
    assert_eq!(sbox.call::<i32, i32>("fib", 10).unwrap(), 55);
    let mut empty = sandbox(CallMode::Exit);
    assert!(matches!(
        empty.call::<(), ()>("f", ()).unwrap_err(),
        WasmError::NoInstance
    ));
}

#[test]
fn a_module_loaded_twice_is_compiled_and_sent_once() {
    let mut sbox = sandbox(CallMode::Exit);
    let wasm = wat::parse_str(FIB).unwrap();
    let first = sbox.load(&wasm).unwrap();
    let exits = sbox.sandbox().exit_count();
    let second = sbox.load(&wasm).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        sbox.sandbox().exit_count(),
        exits,
        "no call for a known hash"
    );
    assert_eq!(first.hash.0, *blake3::hash(&wasm).as_bytes());
    // Unloaded, it must be sent again (and then works).
    assert!(sbox.unload(&first).unwrap());
    assert!(!sbox.unload(&first).unwrap());
    let err = sbox.instantiate(&first).unwrap_err();
    assert!(matches!(err, WasmError::Unknown(_)), "{err}");
    let third = sbox.load(&wasm).unwrap();
    sbox.instantiate(&third).unwrap();
    assert_eq!(sbox.call::<i32, i32>("fib", 12).unwrap(), 144);
}

#[test]
fn a_module_from_a_data_cap_is_compiled_from_the_guests_directory() {
    use nub_wasm::nub_sandbox::javm_cap::{Cap, Slot};
    for mode in modes() {
        let mut sbox = sandbox(mode);
        let wasm = wat::parse_str(FIB).unwrap();
        // Published once (by anyone): the load sends no bytes, the guest
        // compiles its directory's copy, and the module is the same as if
        // its bytes had been loaded.
        let cap = Cap::inline(wasm.clone());
        sbox.sandbox_mut().put_cap(&cap).unwrap();
        let exits = sbox.sandbox().exit_count();
        let module = sbox.load_cap(&cap).unwrap();
        if mode == CallMode::Exit {
            // The directory is read without an exit: one call, LoadCap.
            assert_eq!(sbox.sandbox().exit_count(), exits + 1);
        }
        assert_eq!(module.hash.0, *blake3::hash(&wasm).as_bytes());
        assert_eq!(sbox.load(&wasm).unwrap(), module, "{mode:?}");
        sbox.instantiate(&module).unwrap();
        assert_eq!(sbox.call::<i32, i32>("fib", 12).unwrap(), 144);
        // Paged data is the same module; a CNode is not a module.
        let paged = Cap::paged(&wasm);
        assert_eq!(sbox.load_cap(&paged).unwrap(), module);
        let node = Cap::cnode(vec![Slot::Empty]);
        assert!(matches!(sbox.load_cap(&node), Err(WasmError::NotData)));
        // A cap the guest does not hold yet is sent first.
        let other =
            wat::parse_str(r#"(module (func (export "one") (result i32) i32.const 1))"#).unwrap();
        let other = sbox.load_cap(&Cap::inline(other)).unwrap();
        sbox.instantiate(&other).unwrap();
        assert_eq!(sbox.call::<(), i32>("one", ()).unwrap(), 1);
        // Bytes that are no module are a compile error; the sandbox lives.
        let junk = sbox.load_cap(&Cap::inline(b"not wasm".to_vec()));
        assert!(matches!(junk, Err(WasmError::Compile(_))), "{junk:?}");
        assert!(!sbox.sandbox().is_poisoned());
    }
}

#[test]
fn a_module_with_imports_fails_to_link_naming_the_import() {
    let mut sbox = sandbox(CallMode::Exit);
    let wasm =
        wat::parse_str(r#"(module (import "env" "log" (func (param i32))) (func (export "f")))"#)
            .unwrap();
    let module = sbox.load(&wasm).unwrap();
    assert_eq!(module.imports.len(), 1);
    let err = sbox.instantiate(&module).unwrap_err();
    assert!(
        matches!(err, WasmError::Link { ref module, ref name, .. } if module == "env" && name == "log"),
        "{err}"
    );
}

#[test]
fn hostile_module_bytes_get_typed_errors_and_the_sandbox_lives_on() {
    let mut sbox = sandbox(CallMode::Exit);
    let valid = wat::parse_str(FIB).unwrap();
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() - 3);
    let mut flipped = valid.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"\0asm".to_vec(),
        b"\0asm\x02\0\0\0".to_vec(),
        garbage,
        truncated,
        flipped,
    ];
    for bytes in &cases {
        match sbox.load(bytes) {
            Err(WasmError::Compile(_)) => {}
            // A flipped byte may still leave a valid module.
            Ok(_) if bytes == &cases[5] => {}
            other => panic!("{} bytes: {other:?}", bytes.len()),
        }
        assert!(!sbox.sandbox().is_poisoned());
    }
    // Huge declarations compile but cannot be instantiated.
    for wat in [
        "(module (memory 65536))",
        "(module (memory 20000 30000))",
        "(module (table 10000000 funcref))",
    ] {
        let module = sbox.load(&wat::parse_str(wat).unwrap()).unwrap();
        let err = sbox.instantiate(&module).unwrap_err();
        assert!(matches!(err, WasmError::Instantiate(_)), "{wat}: {err}");
    }
    // Growing a table far is refused (-1), not fatal.
    let grow = r#"(module (table 1 funcref)
        (func (export "grow") (param i32) (result i32) ref.null func local.get 0 table.grow))"#;
    let module = sbox.load(&wat::parse_str(grow).unwrap()).unwrap();
    sbox.instantiate(&module).unwrap();
    assert_eq!(sbox.call::<i32, i32>("grow", 50_000_000).unwrap(), -1);
    assert_eq!(sbox.call::<i32, i32>("grow", 10).unwrap(), 1);
    // After all that, real work still works.
    let module = sbox.load(&valid).unwrap();
    sbox.instantiate(&module).unwrap();
    assert_eq!(sbox.call::<i32, i32>("fib", 20).unwrap(), 6765);
}

#[test]
fn a_module_larger_than_the_default_ring_loads_and_a_too_large_one_is_refused() {
    let mut sbox = sandbox(CallMode::Exit);
    // 1 MiB of data: four times the sandbox's default input ring.
    let data: String = (0..(1 << 20))
        .map(|i| if i % 2 == 0 { 'a' } else { 'b' })
        .collect();
    let wat = format!(
        r#"(module (memory 17) (data (i32.const 0) "{data}")
            (func (export "at") (param i32) (result i32) local.get 0 i32.load8_u))"#
    );
    let module = sbox.load(&wat::parse_str(&wat).unwrap()).unwrap();
    sbox.instantiate(&module).unwrap();
    assert_eq!(
        sbox.call::<i32, i32>("at", (1 << 20) - 1).unwrap(),
        i32::from(b'b')
    );
    // Past the input ring: a typed error that does not poison.
    let huge = vec![0u8; usize::try_from(nub_wasm::DEFAULT_INPUT_RING_SIZE).unwrap()];
    let err = sbox.load(&huge).unwrap_err();
    assert!(
        matches!(
            err,
            WasmError::Sandbox(HyperlightError::PayloadTooLarge { .. })
        ),
        "{err}"
    );
    assert!(!sbox.sandbox().is_poisoned());
    assert_eq!(sbox.call::<i32, i32>("at", 0).unwrap(), i32::from(b'a'));
}

#[test]
fn unloading_modules_and_dropping_instances_frees_guest_heap() {
    let mut sbox = sandbox(CallMode::Exit);
    let cycle = |sbox: &mut nub_wasm::WasmSandbox, i: i32| {
        let wat = format!(
            r#"(module (memory 4) (func (export "f") (result i32) i32.const {i} i32.const 3 i32.mul))"#
        );
        let module = sbox.load(&wat::parse_str(&wat).unwrap()).unwrap();
        let instance = sbox.instantiate(&module).unwrap();
        assert_eq!(sbox.call::<(), i32>("f", ()).unwrap(), i * 3);
        sbox.drop_instance(instance).unwrap();
        assert!(sbox.unload(&module).unwrap());
    };
    for i in 0..20 {
        cycle(&mut sbox, i);
    }
    let before = sbox.sandbox_mut().heap_stats().unwrap().used;
    for i in 20..220 {
        cycle(&mut sbox, i);
    }
    let after = sbox.sandbox_mut().heap_stats().unwrap().used;
    // Each cycle's 256 KiB memory and its compiled code are given back;
    // what stays until the guest renews its engines is wasmi's
    // engine-wide bookkeeping of each distinct module (docs/wasm.md).
    assert!(
        after.saturating_sub(before) < 200 * 1024,
        "heap used after 20 cycles {before}, after 220 {after}"
    );
}

#[test]
fn loading_distinct_modules_for_ever_keeps_the_guest_heap_flat() {
    // wasmi keeps engine-wide data for each module an engine compiled
    // (0.7-1 KB here); the guest makes new engines every 256 compiles when
    // nothing is alive, so a load/unload loop (the bench row's) does not
    // grow the heap. 1,000 cycles would keep ~0.8 MB without it.
    let mut sbox = sandbox(CallMode::Exit);
    let cycle = |sbox: &mut nub_wasm::WasmSandbox, i: i32| {
        let wat = format!(
            r#"(module (memory 1) (global (mut i32) (i32.const {i}))
                (func (export "f") (result i32) i32.const {i} i32.const 3 i32.mul)
                (func (export "g") (param i64) (result i64) local.get 0))"#
        );
        let (module, instance) = sbox
            .load_and_instantiate(&wat::parse_str(&wat).unwrap())
            .unwrap();
        assert_eq!(sbox.call::<(), i32>("f", ()).unwrap(), i * 3);
        sbox.drop_instance(instance).unwrap();
        assert!(sbox.unload(&module).unwrap());
    };
    for i in 0..20 {
        cycle(&mut sbox, i);
    }
    let used = |sbox: &mut nub_wasm::WasmSandbox| sbox.sandbox_mut().heap_stats().unwrap().used;
    let before = used(&mut sbox);
    let (mut peak, mut previous, mut biggest_fall) = (before, before, 0);
    for i in 20..1020 {
        cycle(&mut sbox, i);
        let now = used(&mut sbox);
        peak = peak.max(now);
        biggest_fall = biggest_fall.max(previous.saturating_sub(now));
        previous = now;
    }
    // It grows by under 256 modules' worth between renewals, and falls at
    // each.
    assert!(
        peak <= before + 400 * 1024,
        "heap used after 20 cycles {before}, at most {peak} over 1,000 more"
    );
    assert!(
        biggest_fall > 100 * 1024,
        "no renewal freed the engines' data"
    );
}

#[test]
fn a_module_the_heap_cannot_compile_is_refused_before_it_exhausts_it() {
    // A 4 MiB heap cannot promise a compile of a 512 KiB module (16 bytes
    // of heap a byte, plus 1 MiB): a typed limit, not the allocator's abort.
    let config = nub_wasm::WasmSandbox::default_config().with_heap_size(4 << 20);
    let mut sbox = nub_wasm::WasmSandbox::with_config(config).unwrap();
    let data = "x".repeat(512 << 10);
    let wat = format!(r#"(module (memory 9) (data (i32.const 0) "{data}"))"#);
    let err = sbox.load(&wat::parse_str(&wat).unwrap()).unwrap_err();
    assert!(matches!(err, WasmError::Limit(_)), "{err}");
    assert!(!sbox.sandbox().is_poisoned());
    // A small module still loads.
    let small = sbox.load(&wat::parse_str("(module)").unwrap()).unwrap();
    sbox.instantiate(&small).unwrap();
}

const IMPORTS: &str = r#"
(module
  (import "env" "add" (func $add (param i32 i32) (result i32)))
  (import "env" "scale" (func $scale (param f64) (result f64 i64)))
  (func (export "sum_to") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    block
      loop
        local.get $i
        local.get $n
        i32.ge_u
        br_if 1
        local.get $acc
        local.get $i
        call $add
        local.set $acc
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $acc)
  (func (export "scale") (param f64) (result f64 i64)
    local.get 0
    call $scale))
"#;

fn define_imports(sbox: &mut nub_wasm::WasmSandbox) {
    sbox.define_import("env", "add", |args| match args {
        [Value::I32(a), Value::I32(b)] => Ok(vec![Value::I32(a.wrapping_add(*b))]),
        other => Err(format!("add got {other:?}")),
    })
    .unwrap();
    sbox.define_import("env", "scale", |args| match args {
        [Value::F64(x)] => {
            let x = f64::from_bits(*x);
            if x < 0.0 {
                return Err("negative".into());
            }
            Ok(vec![Value::F64((x * 2.5).to_bits()), Value::I64(x as i64)])
        }
        other => Err(format!("scale got {other:?}")),
    })
    .unwrap();
}

#[test]
fn imports_are_host_functions_in_both_call_modes() {
    for mode in modes() {
        let mut sbox = sandbox(mode);
        define_imports(&mut sbox);
        let module = sbox.load(&wat::parse_str(IMPORTS).unwrap()).unwrap();
        assert_eq!(module.imports.len(), 2);
        sbox.instantiate(&module).unwrap();
        // 1000 host calls inside one wasm call.
        assert_eq!(sbox.call::<i32, i32>("sum_to", 1000).unwrap(), 499_500);
        let (x, i) = sbox.call::<f64, (f64, i64)>("scale", 4.0).unwrap();
        assert_eq!((x, i), (10.0, 4));
    }
}

#[test]
fn a_failing_import_is_a_typed_error_naming_it_and_the_sandbox_lives() {
    let mut sbox = sandbox(CallMode::Exit);
    define_imports(&mut sbox);
    let module = sbox.load(&wat::parse_str(IMPORTS).unwrap()).unwrap();
    sbox.instantiate(&module).unwrap();
    let err = sbox.call::<f64, (f64, i64)>("scale", -1.0).unwrap_err();
    assert!(
        matches!(err, WasmError::Import { ref module, ref name, ref message }
            if module == "env" && name == "scale" && message == "negative"),
        "{err}"
    );
    assert!(!sbox.sandbox().is_poisoned());
    assert_eq!(sbox.call::<i32, i32>("sum_to", 10).unwrap(), 45);
    // A host function that answers the wrong types fails the call too.
    sbox.define_import("env", "add", |_| Ok(vec![Value::I64(1)]))
        .unwrap();
    sbox.instantiate(&module).unwrap();
    let err = sbox.call::<i32, i32>("sum_to", 3).unwrap_err();
    assert!(
        matches!(err, WasmError::Import { ref name, .. } if name == "add"),
        "{err}"
    );
    assert_eq!(
        sbox.call::<f64, (f64, i64)>("scale", 2.0).unwrap(),
        (5.0, 2)
    );
}

#[test]
fn an_unbound_or_non_function_import_fails_instantiation_naming_it() {
    let mut sbox = sandbox(CallMode::Exit);
    sbox.define_import("env", "add", |_| Ok(vec![Value::I32(0)]))
        .unwrap();
    let module = sbox.load(&wat::parse_str(IMPORTS).unwrap()).unwrap();
    let err = sbox.instantiate(&module).unwrap_err();
    assert!(
        matches!(err, WasmError::Link { ref name, .. } if name == "scale"),
        "{err}"
    );
    let memory = r#"(module (import "env" "mem" (memory 1)))"#;
    let module = sbox.load(&wat::parse_str(memory).unwrap()).unwrap();
    let err = sbox.instantiate(&module).unwrap_err();
    assert!(
        matches!(err, WasmError::Link { ref name, .. } if name == "mem"),
        "{err}"
    );
}

/// Ten parameters and ten results (more than `Values` holds inline), and
/// a function of two.
const WIDE: &str = r#"
(module
  (func (export "rev10")
    (param i32 i64 f32 f64 i32 i64 f32 f64 i32 i64)
    (result i64 i32 f64 f32 i64 i32 f64 f32 i64 i32)
    local.get 9 local.get 8 local.get 7 local.get 6 local.get 5
    local.get 4 local.get 3 local.get 2 local.get 1 local.get 0)
  (func (export "sub") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.sub)
  (global (export "g") i32 (i32.const 1)))
"#;

#[test]
fn load_and_instantiate_is_one_sandbox_call() {
    let mut sbox = sandbox(CallMode::Exit);
    let wasm = wat::parse_str(FIB).unwrap();
    // What one trivial sandbox call costs in exits.
    let before = sbox.sandbox().exit_count();
    sbox.limits().unwrap();
    let one_call = sbox.sandbox().exit_count() - before;
    let before = sbox.sandbox().exit_count();
    let (module, instance) = sbox.load_and_instantiate(&wasm).unwrap();
    assert_eq!(sbox.sandbox().exit_count() - before, one_call);
    assert_eq!(module.hash.0, *blake3::hash(&wasm).as_bytes());
    assert_eq!(sbox.current(), Some(instance));
    assert_eq!(sbox.call::<i32, i32>("fib", 10).unwrap(), 55);
    // Known bytes: only an instantiation (one call again), a new instance.
    let before = sbox.sandbox().exit_count();
    let (again, second) = sbox
        .load_and_instantiate_with(&wasm, InstanceOptions::default().with_fuel(1_000_000))
        .unwrap();
    assert_eq!(sbox.sandbox().exit_count() - before, one_call);
    assert_eq!(again, module);
    assert_ne!(second, instance);
    assert_eq!(sbox.call::<i32, i32>("fib", 12).unwrap(), 144);
    assert!(sbox.fuel_left(&second).unwrap().is_some());
    assert_eq!(sbox.fuel_left(&instance).unwrap(), None);
    // Bad bytes are a compile error, a bad start a typed one; the sandbox
    // lives on.
    let err = sbox.load_and_instantiate(b"\0asm garbage").unwrap_err();
    assert!(matches!(err, WasmError::Compile(_)), "{err}");
    let trap = wat::parse_str(r#"(module (func $s unreachable) (start $s))"#).unwrap();
    let err = sbox.load_and_instantiate(&trap).unwrap_err();
    assert_eq!(
        err.trap_code(),
        Some(TrapCode::UnreachableCodeReached),
        "{err}"
    );
    assert_eq!(sbox.call_in::<i32, i32>(&instance, "fib", 5).unwrap(), 5);
}

#[test]
fn calls_by_index_handle_wide_signatures_and_wrong_names() {
    for mode in modes() {
        let mut sbox = sandbox(mode);
        let mut native = Native::new(WIDE);
        let (_, instance) = sbox
            .load_and_instantiate(&wat::parse_str(WIDE).unwrap())
            .unwrap();
        let args = [
            Value::I32(-1),
            Value::I64(i64::MIN),
            Value::F32(0x7fc0_0001),
            Value::F64(f64::MIN_POSITIVE.to_bits()),
            Value::I32(5),
            Value::I64(6),
            Value::F32(1.5f32.to_bits()),
            Value::F64(f64::INFINITY.to_bits()),
            Value::I32(9),
            Value::I64(10),
        ];
        let got = sbox.call_values(&instance, "rev10", &args).unwrap();
        let want = native.call("rev10", &args).unwrap();
        assert_eq!(got, want);
        let reversed: Vec<Value> = args.iter().rev().copied().collect();
        assert_eq!(got, reversed, "NaN payloads cross unchanged");
        assert_eq!(sbox.call::<(i32, i32), i32>("sub", (7, 9)).unwrap(), -2);
        // Too few arguments, a global's name, an unknown name.
        let err = sbox
            .call_values(&instance, "rev10", &args[..9])
            .unwrap_err();
        assert!(matches!(err, WasmError::Signature { .. }), "{err}");
        for name in ["g", "nope"] {
            let err = sbox.call::<(), ()>(name, ()).unwrap_err();
            assert!(
                matches!(err, WasmError::NoSuchExport(ref n) if n == name),
                "{err}"
            );
        }
        // A dropped instance is unknown to the guest.
        sbox.drop_instance(instance).unwrap();
        let err = sbox
            .call_in::<(i32, i32), i32>(&instance, "sub", (1, 1))
            .unwrap_err();
        assert!(matches!(err, WasmError::Unknown(_)), "{err}");
    }
}

/// `greet` passes "hello" (in memory at 16) to `env.log`; `log_at` passes
/// any range the caller names, as a hostile module would.
const LOGGER: &str = r#"
(module
  (import "env" "log" (func $log (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (func (export "greet") (result i32)
    i32.const 16 i64.const 42 i32.const 5 call $log)
  (func (export "log_at") (param i32 i32) (result i32)
    local.get 0 i64.const 0 local.get 1 call $log))
"#;

/// Binds `env.log(ptr, tag, len)`: answers the sum of the bytes plus the
/// tag, and records what it saw.
fn define_logger(
    sbox: &mut nub_wasm::WasmSandbox,
) -> std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    sbox.define_import_with_memory("env", "log", &[(0, 2)], move |args| {
        let bytes = args.memory(0).ok_or("no range")?;
        assert_eq!(args.ranges(), 1);
        assert!(args.memory(1).is_none());
        let tag = match args.values() {
            [Value::I32(_), Value::I64(tag), Value::I32(_)] => *tag,
            other => return Err(format!("log got {other:?}")),
        };
        log.lock().unwrap().push(bytes.to_vec());
        let sum: i64 = bytes.iter().map(|b| i64::from(*b)).sum();
        Ok(vec![Value::I32((sum + tag) as i32)])
    })
    .unwrap();
    seen
}

#[test]
fn pointer_length_imports_see_the_callers_memory_in_both_call_modes() {
    for mode in modes() {
        let mut sbox = sandbox(mode);
        let seen = define_logger(&mut sbox);
        sbox.load_and_instantiate(&wat::parse_str(LOGGER).unwrap())
            .unwrap();
        let hello: i32 = b"hello".iter().map(|b| i32::from(*b)).sum();
        assert_eq!(sbox.call::<(), i32>("greet", ()).unwrap(), hello + 42);
        // An empty range anywhere in bounds, and the memory's last byte.
        assert_eq!(
            sbox.call::<(i32, i32), i32>("log_at", (65536, 0)).unwrap(),
            0
        );
        assert_eq!(
            sbox.call::<(i32, i32), i32>("log_at", (65535, 1)).unwrap(),
            0
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![b"hello".to_vec(), Vec::new(), vec![0]]
        );
        // Hostile ranges: past the end, wrapping, huge; each a typed error
        // naming the import, and the sandbox and the instance live on.
        for (ptr, len) in [
            (65535, 2),
            (65537, 0),
            (-1, 2),
            (16, -1),
            (0, 0x7fff_ffff),
            (0, 1 << 21),
        ] {
            let err = sbox
                .call::<(i32, i32), i32>("log_at", (ptr, len))
                .unwrap_err();
            assert!(
                matches!(err, WasmError::Import { ref module, ref name, .. }
                    if module == "env" && name == "log"),
                "({ptr}, {len}): {err}"
            );
            assert!(!sbox.sandbox().is_poisoned());
        }
        assert_eq!(seen.lock().unwrap().len(), 3, "the host never saw them");
        assert_eq!(sbox.call::<(), i32>("greet", ()).unwrap(), hello + 42);
    }
}

#[test]
fn pointer_length_imports_without_memory_or_with_bad_pairs_are_typed_errors() {
    let mut sbox = sandbox(CallMode::Exit);
    define_logger(&mut sbox);
    // No "memory" export: the call fails naming the import.
    let no_memory = r#"
    (module
      (import "env" "log" (func $log (param i32 i64 i32) (result i32)))
      (memory 1)
      (func (export "greet") (result i32)
        i32.const 0 i64.const 0 i32.const 1 call $log))"#;
    sbox.load_and_instantiate(&wat::parse_str(no_memory).unwrap())
        .unwrap();
    let err = sbox.call::<(), i32>("greet", ()).unwrap_err();
    assert!(
        matches!(err, WasmError::Import { ref name, ref message, .. }
            if name == "log" && message.contains("memory")),
        "{err}"
    );
    // A pair naming the i64 parameter, or one past the last: Link errors.
    for pairs in [[(0, 1)], [(0, 3)]] {
        sbox.define_import_with_memory("env", "log", &pairs, |_| Ok(vec![Value::I32(0)]))
            .unwrap();
        let err = sbox
            .load_and_instantiate(&wat::parse_str(LOGGER).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, WasmError::Link { ref name, .. } if name == "log"),
            "{pairs:?}: {err}"
        );
    }
    let too_many = [(0, 2); 9];
    let err = sbox
        .define_import_with_memory("env", "log", &too_many, |_| Ok(vec![]))
        .unwrap_err();
    assert!(matches!(err, WasmError::Limit(_)), "{err}");
    assert!(!sbox.sandbox().is_poisoned());
}
