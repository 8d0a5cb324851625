//! Shared by the wasm tests: sandboxes in both call modes, and the
//! reference, wasmi natively on the host.

#![allow(dead_code)]

use std::time::Duration;

use nub_sandbox::CallMode;
use nub_wasm::{TrapCode, Value, WasmSandbox};

/// Both call modes.
pub fn modes() -> [CallMode; 2] {
    [
        CallMode::Exit,
        CallMode::Resident {
            spin: Duration::from_micros(100),
        },
    ]
}

/// A wasm sandbox in `mode`.
pub fn sandbox(mode: CallMode) -> WasmSandbox {
    WasmSandbox::with_config(WasmSandbox::default_config().with_call_mode(mode))
        .expect("the wasm guest boots")
}

/// A wasm sandbox with `wat` loaded and instantiated.
pub fn with_module(mode: CallMode, wat: &str) -> WasmSandbox {
    let mut sbox = sandbox(mode);
    let wasm = wat::parse_str(wat).expect("valid wat");
    let module = sbox.load(&wasm).expect("loads");
    sbox.instantiate(&module).expect("instantiates");
    sbox
}

/// What the guest's trap codes are called in wasmi's.
fn trap_code(code: wasmi::TrapCode) -> TrapCode {
    use wasmi::TrapCode as W;
    match code {
        W::UnreachableCodeReached => TrapCode::UnreachableCodeReached,
        W::MemoryOutOfBounds => TrapCode::MemoryOutOfBounds,
        W::TableOutOfBounds => TrapCode::TableOutOfBounds,
        W::IndirectCallToNull => TrapCode::IndirectCallToNull,
        W::IntegerDivisionByZero => TrapCode::IntegerDivisionByZero,
        W::IntegerOverflow => TrapCode::IntegerOverflow,
        W::BadConversionToInteger => TrapCode::BadConversionToInteger,
        W::StackOverflow => TrapCode::StackOverflow,
        W::BadSignature => TrapCode::BadSignature,
        W::OutOfFuel => TrapCode::OutOfFuel,
        W::GrowthOperationLimited => TrapCode::GrowthOperationLimited,
        W::OutOfSystemMemory => TrapCode::OutOfSystemMemory,
    }
}

/// wasmi natively on the host, one instance of one module.
pub struct Native {
    store: wasmi::Store<()>,
    instance: wasmi::Instance,
}

impl Native {
    /// `wat` instantiated on the host.
    pub fn new(wat: &str) -> Self {
        let wasm = wat::parse_str(wat).expect("valid wat");
        let engine = wasmi::Engine::default();
        let module = wasmi::Module::new(&engine, &wasm[..]).expect("compiles natively");
        let mut store = wasmi::Store::new(&engine, ());
        let instance = wasmi::Linker::<()>::new(&engine)
            .instantiate_and_start(&mut store, &module)
            .expect("instantiates natively");
        Self { store, instance }
    }

    /// Calls `name` with `args`: its results, or its trap code.
    pub fn call(&mut self, name: &str, args: &[Value]) -> Result<Vec<Value>, TrapCode> {
        let func = self
            .instance
            .get_func(&self.store, name)
            .expect("native export");
        let ty = func.ty(&self.store);
        let params: Vec<wasmi::Val> = args
            .iter()
            .map(|v| match *v {
                Value::I32(x) => wasmi::Val::I32(x),
                Value::I64(x) => wasmi::Val::I64(x),
                Value::F32(b) => wasmi::Val::F32(wasmi::F32::from_bits(b)),
                Value::F64(b) => wasmi::Val::F64(wasmi::F64::from_bits(b)),
            })
            .collect();
        let mut results: Vec<wasmi::Val> = ty
            .results()
            .iter()
            .map(|t| wasmi::Val::default_for_ty(*t))
            .collect();
        func.call(&mut self.store, &params, &mut results)
            .map_err(|e| trap_code(e.as_trap_code().expect("a trap")))?;
        Ok(results
            .iter()
            .map(|v| match v {
                wasmi::Val::I32(x) => Value::I32(*x),
                wasmi::Val::I64(x) => Value::I64(*x),
                wasmi::Val::F32(x) => Value::F32(x.to_bits()),
                wasmi::Val::F64(x) => Value::F64(x.to_bits()),
                other => panic!("not a number: {other:?}"),
            })
            .collect())
    }
}

/// Calls `name` with `args` in the guest and natively and asserts the same
/// outcome: equal results (NaNs equal to NaNs: the spec lets their payload
/// bits differ), or the same trap code. Returns the guest's.
pub fn same(
    sbox: &mut WasmSandbox,
    native: &mut Native,
    name: &str,
    args: &[Value],
) -> Result<Vec<Value>, TrapCode> {
    let instance = sbox.current().expect("an instance");
    let guest = match sbox.call_values(&instance, name, args) {
        Ok(values) => Ok(values),
        Err(e) => Err(e
            .trap_code()
            .unwrap_or_else(|| panic!("{name}{args:?}: not a trap: {e}"))),
    };
    let host = native.call(name, args);
    let equal = match (&guest, &host) {
        (Ok(g), Ok(h)) => g.len() == h.len() && g.iter().zip(h).all(|(a, b)| same_value(a, b)),
        (Err(g), Err(h)) => g == h,
        _ => false,
    };
    assert!(equal, "{name}{args:?}: guest {guest:?}, native {host:?}");
    guest
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => {
            x == y || (f32::from_bits(*x).is_nan() && f32::from_bits(*y).is_nan())
        }
        (Value::F64(x), Value::F64(y)) => {
            x == y || (f64::from_bits(*x).is_nan() && f64::from_bits(*y).is_nan())
        }
        _ => a == b,
    }
}
