//! The interpreter workloads the `speed` example and `nub bench`'s wasm
//! rows time, in the guest and in wasmi natively on the host: one module
//! whose exports are fib (recursive, i32), a loop of integer ops and a
//! loop of f64 ops.

/// The workloads' module, in the WebAssembly text format: `fib(n: i32) ->
/// i32`, `loop(n: i32) -> i32` (`n` iterations of xor and add) and
/// `f64loop(n: i32) -> f64` (`n` iterations of mul, add, sqrt and div).
pub const SPEED_WAT: &str = r#"
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

/// fib(25), the recursive row: export, argument.
pub const FIB_25: (&str, i32) = ("fib", 25);
/// The integer loop of 10M iterations: export, argument.
pub const LOOP_10M: (&str, i32) = ("loop", 10_000_000);
/// The f64 loop of 1M iterations: export, argument.
pub const F64_1M: (&str, i32) = ("f64loop", 1_000_000);
