//! The wasm rows' samplers: WebAssembly in [`nub_wasm::WasmSandbox`] (the
//! wasm guest, wasmi inside the VM) and their floors, the same wasmi
//! (2.0.0, the version the guest runs) natively on the host in this
//! process.
//!
//! The interpreter rows run [`nub_wasm::workloads`], the module the
//! crate's `speed` example times; the load, call and import rows run the
//! small modules below.

use nub_sandbox::CallMode;
use nub_wasm::{Value, WasmSandbox, workloads};

use super::{Sampler, timed};
use crate::suite::error::RowError;

/// A small module (two functions, a memory, a global): what the load rows
/// compile and instantiate.
const SMALL_WAT: &str = r#"
(module
  (memory 1)
  (global $calls (mut i32) (i32.const 0))
  (func (export "add") (param i32 i32) (result i32)
    global.get $calls
    i32.const 1
    i32.add
    global.set $calls
    local.get 0
    local.get 1
    i32.add)
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
        i64.add
        local.set $acc
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br 0
      end
    end
    local.get $acc))
"#;

/// An export with no parameters or results that does nothing.
const NOP_WAT: &str = r#"(module (func (export "nop")))"#;

/// An export that calls its import once: `call_import(x)` returns
/// `env.echo(x)`.
const IMPORT_WAT: &str = r#"
(module
  (import "env" "echo" (func $echo (param i32) (result i32)))
  (func (export "call_import") (param i32) (result i32)
    local.get 0
    call $echo))
"#;

/// `wat` as module bytes.
fn assemble(wat: &str) -> Result<Vec<u8>, RowError> {
    wat::parse_str(wat).map_err(|e| RowError::Native(format!("WAT: {e}")))
}

/// A wasmi failure on the host.
fn native(e: wasmi::Error) -> RowError {
    RowError::Native(e.to_string())
}

/// `base` with a custom section carrying `serial` appended: distinct bytes
/// (so a distinct hash for the guest's and the host's caches) for the
/// same module.
fn with_serial(base: &[u8], serial: u64) -> Vec<u8> {
    const NAME: &[u8] = b"nub#";
    let mut bytes = base.to_vec();
    // Section id 0 (custom), its size, then the name and the payload.
    bytes.push(0);
    bytes.push(u8::try_from(1 + NAME.len() + 8).unwrap_or(u8::MAX));
    bytes.push(u8::try_from(NAME.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(NAME);
    bytes.extend_from_slice(&serial.to_le_bytes());
    bytes
}

/// A wasm sandbox with the default configuration in `mode`.
fn wasm_sandbox(mode: CallMode) -> Result<WasmSandbox, RowError> {
    Ok(WasmSandbox::with_config(
        WasmSandbox::default_config().with_call_mode(mode),
    )?)
}

/// wasmi on the host: one store, one instance of `wasm`.
struct Native {
    store: wasmi::Store<()>,
    instance: wasmi::Instance,
}

impl Native {
    fn new(wasm: &[u8]) -> Result<Self, RowError> {
        let engine = wasmi::Engine::default();
        let module = wasmi::Module::new(&engine, wasm).map_err(native)?;
        let mut store = wasmi::Store::new(&engine, ());
        let instance = wasmi::Linker::<()>::new(&engine)
            .instantiate_and_start(&mut store, &module)
            .map_err(native)?;
        Ok(Self { store, instance })
    }

    /// Calls `export` with one i32 argument and one result.
    fn call(&mut self, export: &str, n: i32) -> Result<Value, RowError> {
        let func = self
            .instance
            .get_func(&self.store, export)
            .ok_or_else(|| RowError::Native(format!("no export {export}")))?;
        let ty = func.ty(&self.store);
        let mut out = match ty.results().first() {
            Some(wasmi::ValType::F64) => [wasmi::Val::F64(0.0.into())],
            _ => [wasmi::Val::I32(0)],
        };
        func.call(&mut self.store, &[wasmi::Val::I32(n)], &mut out)
            .map_err(native)?;
        match out[0] {
            wasmi::Val::I32(v) => Ok(Value::I32(v)),
            wasmi::Val::F64(v) => Ok(Value::F64(v.to_bits())),
            ref other => Err(RowError::Native(format!("{export} returned {other:?}"))),
        }
    }
}

/// One call of workload `(export, n)` of [`workloads::SPEED_WAT`] in
/// wasmi natively on the host.
pub fn native_workload((export, n): (&'static str, i32)) -> Result<Sampler, RowError> {
    let mut native = Native::new(&assemble(workloads::SPEED_WAT)?)?;
    native.call(export, n)?;
    Ok(Box::new(move || {
        let (answer, us) = timed(|| native.call(export, n));
        answer?;
        Ok(us)
    }))
}

/// One call of workload `(export, n)` of [`workloads::SPEED_WAT`] in a
/// wasm sandbox in exit mode, after checking its first answer is native
/// wasmi's (bit for bit).
pub fn guest_workload((export, n): (&'static str, i32)) -> Result<Sampler, RowError> {
    let wasm = assemble(workloads::SPEED_WAT)?;
    let want = Native::new(&wasm)?.call(export, n)?;
    let mut sbox = wasm_sandbox(CallMode::Exit)?;
    let module = sbox.load(&wasm)?;
    let instance = sbox.instantiate(&module)?;
    let args = [Value::I32(n)];
    let got = sbox.call_values(&instance, export, &args)?;
    if got != [want] {
        return Err(RowError::WrongAnswer(format!(
            "{export}({n}): {got:?} in the guest, {want:?} natively"
        )));
    }
    Ok(Box::new(move || {
        let (answer, us) = timed(|| sbox.call_values(&instance, export, &args));
        answer?;
        Ok(us)
    }))
}

/// `wasmi::Module::new` + instantiate (a new store) of [`SMALL_WAT`] on
/// the host, with the bytes the guest row loads (a serial in a custom
/// section).
pub fn native_load_small() -> Result<Sampler, RowError> {
    let base = assemble(SMALL_WAT)?;
    let engine = wasmi::Engine::default();
    let linker = wasmi::Linker::<()>::new(&engine);
    let mut serial = 0u64;
    Ok(Box::new(move || {
        serial += 1;
        let bytes = with_serial(&base, serial);
        let (instance, us) = timed(|| -> Result<_, wasmi::Error> {
            let module = wasmi::Module::new(&engine, &bytes[..])?;
            let mut store = wasmi::Store::new(&engine, ());
            let instance = linker.instantiate_and_start(&mut store, &module)?;
            Ok((store, instance))
        });
        drop(instance.map_err(native)?);
        Ok(us)
    }))
}

/// `WasmSandbox::load_and_instantiate` (one sandbox call: a real compile,
/// new bytes each sample, a serial in a custom section, and the
/// instantiation) of [`SMALL_WAT`] in a wasm sandbox in `mode`; the
/// instance's drop and the module's unload after each sample are not timed
/// (the guest's heap stays flat).
pub fn guest_load_small(mode: CallMode) -> Result<Sampler, RowError> {
    let base = assemble(SMALL_WAT)?;
    let mut sbox = wasm_sandbox(mode)?;
    let mut serial = 0u64;
    Ok(Box::new(move || {
        serial += 1;
        let bytes = with_serial(&base, serial);
        let (loaded, us) = timed(|| sbox.load_and_instantiate(&bytes));
        let (module, instance) = loaded?;
        sbox.drop_instance(instance)?;
        sbox.unload(&module)?;
        Ok(us)
    }))
}

/// One call of [`NOP_WAT`]'s `nop` (no arguments, no results) in a wasm
/// sandbox in `mode`.
pub fn call_empty_export(mode: CallMode) -> Result<Sampler, RowError> {
    let mut sbox = wasm_sandbox(mode)?;
    let module = sbox.load(&assemble(NOP_WAT)?)?;
    sbox.instantiate(&module)?;
    sbox.call::<(), ()>("nop", ())?;
    Ok(Box::new(move || {
        let (answer, us) = timed(|| sbox.call::<(), ()>("nop", ()));
        answer?;
        Ok(us)
    }))
}

/// One call of [`IMPORT_WAT`]'s `call_import`, which calls its import
/// `env.echo` (a host closure answering its argument) once, in a wasm
/// sandbox in `mode`: the whole call is timed, the export's call and the
/// one host call inside it.
pub fn import_call(mode: CallMode) -> Result<Sampler, RowError> {
    let mut sbox = wasm_sandbox(mode)?;
    sbox.define_import("env", "echo", |args| Ok(args.to_vec()))?;
    let module = sbox.load(&assemble(IMPORT_WAT)?)?;
    sbox.instantiate(&module)?;
    let got = sbox.call::<i32, i32>("call_import", 7)?;
    if got != 7 {
        return Err(RowError::WrongAnswer(format!(
            "call_import(7) answered {got}"
        )));
    }
    Ok(Box::new(move || {
        let (answer, us) = timed(|| sbox.call::<i32, i32>("call_import", 7));
        answer?;
        Ok(us)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_makes_distinct_valid_modules() {
        let base = assemble(SMALL_WAT).unwrap();
        let (a, b) = (with_serial(&base, 1), with_serial(&base, 2));
        assert_ne!(a, b);
        let engine = wasmi::Engine::default();
        for bytes in [a, b] {
            wasmi::Module::new(&engine, &bytes[..]).unwrap();
        }
    }
}
