//! The interface between the nub wasm guest (`guest-x86/guests/wasm`,
//! package `nub-wasm-guest`) and its host crate (`nub-wasm`), declared once
//! with [`nub_interface::interface!`] for both sides (docs/wasm.md).
//!
//! The guest keeps compiled modules (keyed by the blake3 hash of their
//! bytes, [`ModuleHash`]) and instances ([`InstanceId`]) in its state
//! between calls. Values cross as [`Value`]s: `f32`/`f64` travel as their
//! bit patterns, so NaN payloads survive the trip unchanged.
//!
//! This crate is `no_std` + `alloc`: the guest builds it for bare metal.
//! Imports are host functions: [`InstantiateArgs::imports`] binds a
//! module's function imports to host function ids, and each call of one
//! is a host call carrying [`ImportCall`]'s wire form; an import without a
//! binding fails instantiation, naming it.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::{string::String, vec::Vec};

use serde::{Deserialize, Serialize};

/// The blake3 hash of a module's bytes: the key of the guest's compiled
/// module cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleHash(pub [u8; 32]);

/// An instance the guest holds (ids are never reused within a sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId(pub u32);

/// A WebAssembly number value. Floats are bit patterns ([`f32::to_bits`],
/// [`f64::to_bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `f32`, as its bits.
    F32(u32),
    /// `f64`, as its bits.
    F64(u64),
}

impl Value {
    /// The value's type.
    pub fn ty(&self) -> ValType {
        match self {
            Self::I32(_) => ValType::I32,
            Self::I64(_) => ValType::I64,
            Self::F32(_) => ValType::F32,
            Self::F64(_) => ValType::F64,
        }
    }
}

/// A WebAssembly value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValType {
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `v128` (the guest is built without SIMD: never callable).
    V128,
    /// `funcref` (not passable through [`Call`]).
    FuncRef,
    /// `externref` (not passable through [`Call`]).
    ExternRef,
}

/// A function signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct FuncSig {
    /// Parameter types, in order.
    pub params: Vec<ValType>,
    /// Result types, in order.
    pub results: Vec<ValType>,
}

/// What an export is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExternKind {
    /// A function and its signature.
    Func(FuncSig),
    /// A global of that type (`mutable` or not).
    Global {
        /// The global's type.
        ty: ValType,
        /// Whether it is mutable.
        mutable: bool,
    },
    /// A linear memory of `min` pages (at most `max`).
    Memory {
        /// Initial pages.
        min: u64,
        /// Maximum pages, if declared.
        max: Option<u64>,
    },
    /// A table of `min` elements (at most `max`).
    Table {
        /// Initial elements.
        min: u64,
        /// Maximum elements, if declared.
        max: Option<u64>,
    },
}

/// One export of a module.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Export {
    /// The export's name.
    pub name: String,
    /// What it is.
    pub kind: ExternKind,
}

/// One import of a module.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Import {
    /// The import's module name.
    pub module: String,
    /// The import's name.
    pub name: String,
    /// What it is.
    pub kind: ExternKind,
}

/// What [`Load`] answers: the module's hash (its handle), exports and
/// imports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// The blake3 hash of the module's bytes, computed by the guest.
    pub hash: ModuleHash,
    /// Whether the guest had it compiled already (this load compiled
    /// nothing).
    pub cached: bool,
    /// Its exports, sorted by name.
    pub exports: Vec<Export>,
    /// Its imports, in the module's order.
    pub imports: Vec<Import>,
}

/// An import the host satisfies: calls to the function import
/// `module.name` become host call `host_fn`, in [`ImportCall`]'s wire form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImportBinding {
    /// The import's module name.
    pub module: String,
    /// The import's name.
    pub name: String,
    /// The host function id that serves it.
    pub host_fn: u32,
}

/// [`Instantiate`]'s argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstantiateArgs {
    /// The module (loaded before with [`Load`]).
    pub module: ModuleHash,
    /// Host functions for the module's imports.
    pub imports: Vec<ImportBinding>,
    /// Fuel for the instance's store (`None`: unmetered). Each call is
    /// metered against what is left; running out is [`TrapCode::OutOfFuel`].
    pub fuel: Option<u64>,
    /// WASI preview 1 for the module's `wasi_snapshot_preview1` imports
    /// (`None`: such imports are unbound, and instantiation fails naming
    /// them).
    pub wasi: Option<WasiConfig>,
}

/// Where a WASI program's stdin comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WasiStdin {
    /// At end of file from the start.
    Empty,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// Each `fd_read` is host call [`WASI_READ_FN`] (an empty answer is end
    /// of file).
    Host,
}

/// Where a WASI program's stdout or stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WasiOutput {
    /// Dropped (the writes succeed).
    Discard,
    /// Kept in the guest, up to `limit` bytes (the rest is dropped and
    /// [`WasiCaptured::truncated`] says so), and returned by [`Run`] or
    /// [`TakeOutput`].
    Capture {
        /// Most bytes kept between two takes.
        limit: u32,
    },
    /// Each `fd_write` is host call [`WASI_WRITE_FN`].
    Host,
}

/// A WASI instance's environment (docs/wasm.md, *WASI*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasiConfig {
    /// `argv`, the program's name first.
    pub args: Vec<String>,
    /// `environ`, as `KEY=VALUE`.
    pub env: Vec<String>,
    /// Its stdin (fd 0).
    pub stdin: WasiStdin,
    /// Its stdout (fd 1).
    pub stdout: WasiOutput,
    /// Its stderr (fd 2).
    pub stderr: WasiOutput,
    /// The seed of `random_get`'s stream (blake3 in keyed XOF mode): the
    /// same seed gives the same bytes.
    pub seed: [u8; 32],
}

/// Output a WASI instance captured ([`WasiOutput::Capture`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WasiCaptured {
    /// What it wrote to stdout since the last take.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr since the last take.
    pub stderr: Vec<u8>,
    /// Whether either stream passed its limit (bytes were dropped).
    pub truncated: bool,
}

/// What [`Run`] answers: how the program ended and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Its exit code: `proc_exit`'s, or 0 when `_start` returned.
    pub exit_code: i32,
    /// Its captured output.
    pub output: WasiCaptured,
}

/// The first host function id of the WASI host functions the host
/// registers for every wasm sandbox ([`WASI_CLOCK_FN`], [`WASI_READ_FN`],
/// [`WASI_WRITE_FN`]).
pub const WASI_FN_BASE: u32 = 0x5740_0000;

nub_interface::interface! {
    /// The host functions behind WASI's clocks and streamed stdio.
    pub mod wasi_host {
        /// `clock_time_get`: the clock's id (0 realtime, 1 monotonic) in,
        /// nanoseconds out (realtime since the Unix epoch; monotonic since
        /// an arbitrary origin that never goes back).
        host WasiClock = 0x5740_0000 (u32) -> u64 | nub_interface::Never;
        /// `fd_read` on a [`WasiStdin::Host`] stdin: at most this many
        /// bytes in, the bytes out (empty: end of file).
        host WasiRead = 0x5740_0001 (u32) -> nub_interface::Bytes | String;
        /// `fd_write` on a [`WasiOutput::Host`] stream: the fd (1 or 2)
        /// and the bytes.
        host WasiWrite = 0x5740_0002 ((u32, nub_interface::Bytes)) -> () | String;
    }
}

/// [`wasi_host::WasiClock`]'s id.
pub const WASI_CLOCK_FN: u32 = WASI_FN_BASE;
/// [`wasi_host::WasiRead`]'s id.
pub const WASI_READ_FN: u32 = WASI_FN_BASE + 1;
/// [`wasi_host::WasiWrite`]'s id.
pub const WASI_WRITE_FN: u32 = WASI_FN_BASE + 2;

/// [`Call`]'s argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallArgs {
    /// The instance.
    pub instance: InstanceId,
    /// The exported function's name.
    pub name: String,
    /// Its arguments, matching its parameter types.
    pub args: Vec<Value>,
}

/// Why a WebAssembly execution trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrapCode {
    /// `unreachable` was executed.
    UnreachableCodeReached,
    /// A load or store outside linear memory.
    MemoryOutOfBounds,
    /// A table access out of bounds.
    TableOutOfBounds,
    /// `call_indirect` on a null entry.
    IndirectCallToNull,
    /// Integer division or remainder by zero.
    IntegerDivisionByZero,
    /// Integer overflow (`i32.div_s` of `MIN / -1`).
    IntegerOverflow,
    /// A float to int conversion out of range or of NaN.
    BadConversionToInteger,
    /// The wasm call stack is exhausted (deep recursion).
    StackOverflow,
    /// `call_indirect` with the wrong signature.
    BadSignature,
    /// The instance's fuel ran out.
    OutOfFuel,
    /// A growth operation was refused by the limits.
    GrowthOperationLimited,
    /// The interpreter could not allocate what the execution needed.
    OutOfSystemMemory,
    /// A trap the guest's interpreter reports that this list does not
    /// know (a newer interpreter); its message is in [`WasmError::Trap`].
    Other,
}

/// Limits the guest enforces, fixed at its build (reported by [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLimits {
    /// Most bytes of linear memory one instance may hold (`memory.grow`
    /// past it returns -1).
    pub memory_bytes: u64,
    /// Most table elements one table may hold.
    pub table_elements: u64,
    /// Most instances alive at once.
    pub instances: u32,
    /// Most compiled modules cached at once.
    pub modules: u32,
}

/// An error of the wasm guest's functions (the sandbox survives every one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WasmError {
    /// The module bytes did not parse, validate or compile.
    Compile(String),
    /// Instantiation failed on an import the guest cannot satisfy.
    Link {
        /// The import's module name.
        module: String,
        /// The import's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Instantiation failed otherwise (a start function trap, limits).
    Instantiate(String),
    /// The execution trapped.
    Trap {
        /// The trap's code.
        code: TrapCode,
        /// The interpreter's message.
        message: String,
    },
    /// No module with that hash is loaded.
    NoSuchModule(ModuleHash),
    /// The guest's directory holds no Data cap with that cap hash.
    NoSuchCap([u8; 32]),
    /// No instance with that id.
    NoSuchInstance(InstanceId),
    /// The instance has no function export of that name.
    NoSuchExport(String),
    /// The arguments do not match the function's parameters.
    Signature {
        /// The function's signature.
        expected: FuncSig,
        /// The argument types given.
        given: Vec<ValType>,
    },
    /// A host function bound to an import failed, or answered values of
    /// the wrong types.
    Import {
        /// The import's module name.
        module: String,
        /// The import's name.
        name: String,
        /// The host function's message, or what was wrong with its answer.
        message: String,
    },
    /// A limit of the guest's was reached (too many instances, a module
    /// too large).
    Limit(String),
    /// The program called WASI `proc_exit` with this code during a call
    /// other than [`Run`] (the instance stays usable).
    Exit(i32),
    /// The instance has no WASI configuration ([`TakeOutput`]), or its
    /// module no `_start` ([`Run`]).
    NotWasi(String),
    /// Any other failure of the interpreter.
    Other(String),
}

nub_interface::interface! {
    /// The wasm guest's functions.
    pub mod functions {
        /// Compiles a module (or finds it compiled, by its blake3 hash).
        guest Load = 1 (nub_interface::Bytes) -> ModuleInfo | WasmError;
        /// Whether a module with this hash is compiled in the guest, and
        /// its exports if so (a load that sends no bytes).
        guest Lookup = 2 (ModuleHash) -> Option<ModuleInfo> | WasmError;
        /// Instantiates a loaded module (runs its start function).
        guest Instantiate = 3 (InstantiateArgs) -> InstanceId | WasmError;
        /// Calls an exported function with arguments; its results.
        guest Call = 4 (CallArgs) -> Vec<Value> | WasmError;
        /// An instance's exports with their signatures.
        guest Exports = 5 (InstanceId) -> Vec<Export> | WasmError;
        /// Drops an instance (its memory is freed).
        guest DropInstance = 6 (InstanceId) -> () | WasmError;
        /// Drops a compiled module from the cache (its instances live on).
        guest Unload = 7 (ModuleHash) -> bool | WasmError;
        /// The guest's limits.
        guest Limits = 8 (()) -> GuestLimits | nub_interface::Never;
        /// Fuel left in an instance's store (`None`: unmetered).
        guest FuelLeft = 9 (InstanceId) -> Option<u64> | WasmError;
        /// Compiles the module whose bytes are the Data cap with this cap
        /// hash in the guest's directory (`put_cap`): content-addressed, so
        /// a module the directory holds is never sent again.
        guest LoadCap = 10 ([u8; 32]) -> ModuleInfo | WasmError;
        /// Runs a WASI instance's `_start`: its exit code and captured
        /// output.
        guest Run = 11 (InstanceId) -> RunOutcome | WasmError;
        /// The output a WASI instance captured since the last take.
        guest TakeOutput = 12 (InstanceId) -> WasiCaptured | WasmError;
    }
}

pub use functions::*;

nub_interface::interface! {
    /// The wire form of a call to an import: the guest sends the
    /// arguments and gets the results back, through host call
    /// [`ImportBinding::host_fn`] (each binding has an id of its own, so
    /// this declaration's id is never used on the wire: only its types and
    /// signature are).
    pub mod imports {
        /// An import's arguments in, its results (or the host's message)
        /// out.
        host ImportCall = 0x7fff_0000 (Vec<Value>) -> Vec<Value> | String;
    }
}

pub use imports::ImportCall;
