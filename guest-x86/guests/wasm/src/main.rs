//! The nub wasm guest's entry: the kernel boots and runs
//! [`nub_wasm_guest::init`] (`src/lib.rs` holds the guest; docs/wasm.md).
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

nub_arch_x86::guest_main!(nub_wasm_guest::init);
