//! The nub wasm guest's library: compiles WebAssembly modules with wasmi, keeps them
//! and their instances in guest state between calls, and calls their
//! exports. Its functions are declared once in `nub_wasm_abi` (the host
//! side is the `nub-wasm` crate); docs/wasm.md describes the whole.
//!
//! - Compiled modules are cached by the blake3 hash of their bytes, which
//!   the guest computes itself (a load of bytes already compiled compiles
//!   nothing).
//! - Each instance has a store of its own: its limits, its fuel.
//! - Linear memory and tables are charged against a budget below the
//!   guest heap ([`engine::Budget`]), so `memory.grow` past it returns -1 instead of
//!   exhausting the heap (which would abort the guest and poison the
//!   sandbox).
//! - A trap is a `WasmError::Trap` with its code: an ordinary typed
//!   error, after which the sandbox and the instance stay usable.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod engine;
pub mod wasi;

use nub_arch_x86::{Registry, State};
use nub_wasm_abi::functions as f;

/// Registers the guest's functions (`nub_wasm_abi::functions`) over one
/// shared [`engine::Wasm`] state: the guest's `init`, and what host-side
/// harnesses (`nub_arch_x86::testing`, the fuzz target) run.
pub fn init(registry: &mut Registry) {
    let state = State::new(engine::Wasm::new(engine::budget_from_heap()));
    let ok = registry
        .typed_with::<f::Load, _>(&state, |w, bytes| w.load(&bytes))
        .is_ok()
        && registry
            .typed_with::<f::Lookup, _>(&state, |w, hash| Ok(w.lookup(&hash)))
            .is_ok()
        && registry
            .typed_with::<f::Instantiate, _>(&state, engine::Wasm::instantiate)
            .is_ok()
        && registry
            .typed_with::<f::Call, _>(&state, engine::Wasm::call)
            .is_ok()
        && registry
            .typed_with::<f::Exports, _>(&state, |w, id| w.exports(id))
            .is_ok()
        && registry
            .typed_with::<f::DropInstance, _>(&state, |w, id| w.drop_instance(id))
            .is_ok()
        && registry
            .typed_with::<f::Unload, _>(&state, |w, hash| Ok(w.unload(&hash)))
            .is_ok()
        && registry
            .typed_with::<f::Limits, _>(&state, |w, ()| Ok(w.limits()))
            .is_ok()
        && registry
            .typed_with::<f::FuelLeft, _>(&state, |w, id| w.fuel_left(id))
            .is_ok()
        && registry
            .typed_with::<f::LoadCap, _>(&state, |w, cap| {
                // Compiled from the directory's own copy: no bytes move.
                let hash = nub_arch_x86::javm_cap::CapHash::from_bytes(cap);
                nub_arch_x86::caps::with_data(&hash, |bytes| w.load(bytes))
                    .unwrap_or(Err(nub_wasm_abi::WasmError::NoSuchCap(cap)))
            })
            .is_ok()
        && registry
            .typed_with::<f::Run, _>(&state, |w, id| w.run(id))
            .is_ok()
        && registry
            .typed_with::<f::TakeOutput, _>(&state, |w, id| w.take_output(id))
            .is_ok()
        && registry
            .typed_with::<f::LoadInstantiate, _>(&state, engine::Wasm::load_instantiate)
            .is_ok()
        && registry
            .typed_with::<f::CallExport, _>(&state, engine::Wasm::call_export)
            .is_ok();
    if !ok {
        nub_arch_x86::abort(1, "the wasm guest's fn ids collide");
    }
}
