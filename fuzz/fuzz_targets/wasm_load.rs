//! The wasm guest's load path (`nub_wasm_guest`, wasmi 2.0.0) on arbitrary
//! module bytes, run on the host through `nub_arch_x86::testing` exactly as
//! the sandbox dispatches it: the input goes through `Load` (fn 1) as
//! `nub_interface::Bytes`, encoded as the host encodes it. A module that
//! compiles is then instantiated with fuel (so a start function that
//! loops ends) and WASI (so modules importing `wasi_snapshot_preview1`
//! link, and their calls reach the guest's WASI functions with whatever
//! pointers they pass), its exports listed (fns 3 and 5), `_start` run if
//! it has one (fn 11), each exported function called once with zero
//! arguments (fn 4, same fuel), and its captured output taken (fn 12).
//!
//! Every guest error must come back as a typed `WasmError`; a panic, an
//! abort, a harness error or a reply that does not decode is a finding.
//! Checked beyond that: the guest's hash is the blake3 of the bytes, a
//! second load is answered from the cache with the same exports, the
//! instance exports the names the module declares, and captured output
//! stays within its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_arch_x86::{Registry, testing::Harness};
use nub_interface::Bytes;
use nub_wasm_abi::{
    CallArgs, ExternKind, InstanceId, InstantiateArgs, ModuleInfo, ValType, Value, WasiCaptured,
    WasiConfig, WasiOutput, WasiStdin, WasmError, functions as f, wasi_host::WasiClock,
};

/// Fuel for the instance: its start function and every call draw from it.
const FUEL: u64 = 100_000;

/// What the instance may keep of stdout and of stderr between two takes.
const CAPTURE_LIMIT: u32 = 256;

/// The instance's WASI environment (small capture limits, so truncation
/// is reached).
fn wasi() -> WasiConfig {
    WasiConfig {
        args: vec!["fuzz".into(), "an arg".into()],
        env: vec!["KEY=value".into()],
        stdin: WasiStdin::Bytes(b"some stdin bytes".to_vec()),
        stdout: WasiOutput::Capture {
            limit: CAPTURE_LIMIT,
        },
        stderr: WasiOutput::Capture {
            limit: CAPTURE_LIMIT,
        },
        seed: [7; 32],
    }
}

/// Output taken from a WASI instance is within its limits.
fn check_captured(captured: &WasiCaptured) {
    let limit = CAPTURE_LIMIT as usize;
    assert!(captured.stdout.len() <= limit && captured.stderr.len() <= limit);
}

/// One typed call; a failure of the call itself (not the guest's typed
/// error) is a finding.
fn call<F: nub_interface::Function>(
    h: &mut Harness,
    registry: &Registry,
    args: &F::Args,
) -> Result<F::Ret, F::Err> {
    match h.call_typed_in::<F>(registry, args) {
        Ok(result) => result,
        Err(e) => panic!("fn {} failed outside the guest's typed errors: {e}", F::ID),
    }
}

/// The zero value of a parameter type, if a call can pass one.
fn zero(ty: &ValType) -> Option<Value> {
    match ty {
        ValType::I32 => Some(Value::I32(0)),
        ValType::I64 => Some(Value::I64(0)),
        ValType::F32 => Some(Value::F32(0)),
        ValType::F64 => Some(Value::F64(0)),
        ValType::V128 | ValType::FuncRef | ValType::ExternRef => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut registry = Registry::new();
    nub_wasm_guest::init(&mut registry);
    // The clocks are host calls: a fixed answer per clock keeps runs
    // reproducible.
    let mut h = Harness::new()
        .ring_sizes(1 << 20, 1 << 20)
        .host_typed::<WasiClock>(|clock| Ok(u64::from(clock) * 1_000_000_007));
    let bytes = Bytes::from(data.to_vec());
    let info: ModuleInfo = match call::<f::Load>(&mut h, &registry, &bytes) {
        Ok(info) => info,
        Err(WasmError::Compile(_)) => return,
        Err(e) => panic!("a load fails only to compile, not with {e:?}"),
    };
    assert_eq!(info.hash.0, *blake3::hash(data).as_bytes());
    assert!(!info.cached);
    let again = call::<f::Load>(&mut h, &registry, &bytes).expect("a cached module loads");
    assert!(again.cached);
    assert_eq!(again.exports, info.exports);
    let instance: InstanceId = match call::<f::Instantiate>(
        &mut h,
        &registry,
        &InstantiateArgs {
            module: info.hash,
            imports: Vec::new(),
            fuel: Some(FUEL),
            wasi: Some(wasi()),
        },
    ) {
        Ok(id) => id,
        // `Exit`: a reactor's `_initialize` called `proc_exit`.
        Err(
            WasmError::Link { .. }
            | WasmError::Instantiate(_)
            | WasmError::Trap { .. }
            | WasmError::Limit(_)
            | WasmError::Exit(_),
        ) => return,
        Err(e) => panic!("instantiation failed with {e:?}"),
    };
    let exports = call::<f::Exports>(&mut h, &registry, &instance).expect("the instance is alive");
    let mut names: Vec<&str> = exports.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    let declared: Vec<&str> = info.exports.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names, declared,
        "the instance exports what the module declares"
    );
    for export in &exports {
        let ExternKind::Func(sig) = &export.kind else {
            continue;
        };
        let Some(args) = sig.params.iter().map(zero).collect::<Option<Vec<Value>>>() else {
            continue;
        };
        let args = CallArgs {
            instance,
            name: export.name.clone(),
            args,
        };
        match call::<f::Call>(&mut h, &registry, &args) {
            Ok(_)
            | Err(
                WasmError::Trap { .. }
                | WasmError::Signature { .. }
                | WasmError::Limit(_)
                | WasmError::Exit(_)
                | WasmError::Other(_),
            ) => {}
            Err(e) => panic!("calling {:?} failed with {e:?}", export.name),
        }
    }
    let captured = call::<f::TakeOutput>(&mut h, &registry, &instance)
        .expect("a WASI instance has output to take");
    check_captured(&captured);
    call::<f::DropInstance>(&mut h, &registry, &instance).expect("the instance drops");
});
