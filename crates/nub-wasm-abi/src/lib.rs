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
/// `module.name` become host call `host_fn`, in [`ImportCall`]'s wire form
/// (or [`MemoryImportCall`]'s, when `memory_args` is not empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImportBinding {
    /// The import's module name.
    pub module: String,
    /// The import's name.
    pub name: String,
    /// The host function id that serves it.
    pub host_fn: u32,
    /// Parameter pairs that are `(pointer, length)` into the calling
    /// instance's exported `"memory"`: the guest copies each range out
    /// (bounds checked) and sends it with the values
    /// ([`MemoryImportCall`]). At most [`MAX_MEMORY_ARGS`].
    pub memory_args: Vec<MemoryArg>,
}

/// One `(pointer, length)` parameter pair of an import
/// ([`ImportBinding::memory_args`]): both are `i32` parameters (indices
/// into the import's parameter list), read as unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoryArg {
    /// The index of the parameter holding the range's start.
    pub ptr: u32,
    /// The index of the parameter holding the range's length in bytes.
    pub len: u32,
}

/// Most `(pointer, length)` pairs one import may have.
pub const MAX_MEMORY_ARGS: usize = 8;

/// Most bytes one call of an import may copy out of linear memory, all
/// its ranges together (the request must also fit in the output ring).
pub const MAX_MEMORY_ARG_BYTES: u32 = 1 << 20;

/// Most values a [`Values`] holds without allocating.
pub const INLINE_VALUES: usize = 8;

/// A list of [`Value`]s that holds up to [`INLINE_VALUES`] in place (no
/// heap) and more on the heap. On the wire it is exactly a `Vec<Value>`
/// (a length, then the values).
#[derive(Clone)]
pub struct Values {
    inline: [Value; INLINE_VALUES],
    len: usize,
    /// Every value, when there are more than [`INLINE_VALUES`].
    heap: Vec<Value>,
}

impl Default for Values {
    fn default() -> Self {
        Self::new()
    }
}

impl Values {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            inline: [Value::I32(0); INLINE_VALUES],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// Appends `value` (on the heap from the [`INLINE_VALUES`]th on).
    pub fn push(&mut self, value: Value) {
        if !self.heap.is_empty() {
            self.heap.push(value);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = value;
            self.len += 1;
        } else {
            let mut heap = Vec::with_capacity(INLINE_VALUES * 2);
            heap.extend_from_slice(&self.inline);
            heap.push(value);
            self.heap = heap;
            self.len = 0;
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[Value] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or(&[])
        } else {
            &self.heap
        }
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl core::ops::Deref for Values {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        self.as_slice()
    }
}

impl core::fmt::Debug for Values {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Values {}

impl From<&[Value]> for Values {
    fn from(values: &[Value]) -> Self {
        values.iter().copied().collect()
    }
}

impl From<Vec<Value>> for Values {
    fn from(values: Vec<Value>) -> Self {
        if values.len() > INLINE_VALUES {
            Self {
                heap: values,
                ..Self::new()
            }
        } else {
            Self::from(&values[..])
        }
    }
}

impl FromIterator<Value> for Values {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        let mut values = Self::new();
        for value in iter {
            values.push(value);
        }
        values
    }
}

impl Serialize for Values {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Values;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a sequence of wasm values")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Values, A::Error> {
                // No preallocation from the claimed length: a hostile
                // length fails at the first missing value instead.
                let mut values = Values::new();
                while let Some(value) = seq.next_element()? {
                    values.push(value);
                }
                Ok(values)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// [`MemoryImportCall`]'s argument: the import's values and the bytes of
/// each of its [`ImportBinding::memory_args`] ranges, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryImportArgs {
    /// Every argument value (pointers and lengths included).
    pub values: Values,
    /// The bytes of each `(pointer, length)` range, in the binding's order.
    pub memory: Vec<nub_interface::Bytes>,
}

/// The guest's borrowed form of [`MemoryImportArgs`]: the same wire form,
/// with the ranges borrowed from linear memory (no copy before the
/// encoding).
#[derive(Debug, Clone, Copy)]
pub struct MemoryImportArgsRef<'a> {
    /// Every argument value.
    pub values: &'a [Value],
    /// The ranges' bytes.
    pub memory: &'a [&'a [u8]],
}

impl Serialize for MemoryImportArgsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Ranges<'a>(&'a [&'a [u8]]);
        impl Serialize for Ranges<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                struct Range<'a>(&'a [u8]);
                impl Serialize for Range<'_> {
                    fn serialize<S: serde::Serializer>(
                        &self,
                        serializer: S,
                    ) -> Result<S::Ok, S::Error> {
                        serializer.serialize_bytes(self.0)
                    }
                }
                serializer.collect_seq(self.0.iter().map(|r| Range(r)))
            }
        }
        let mut s = serializer.serialize_struct("MemoryImportArgs", 2)?;
        s.serialize_field("values", self.values)?;
        s.serialize_field("memory", &Ranges(self.memory))?;
        s.end()
    }
}

/// [`LoadInstantiate`]'s argument: a module's bytes and how to
/// instantiate it. `instantiate.module` must be the blake3 hash of
/// `bytes` (the host computes it for its own cache; the guest checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadInstantiateArgs {
    /// The module's bytes.
    pub bytes: nub_interface::Bytes,
    /// The instantiation, as [`Instantiate`] takes it.
    pub instantiate: InstantiateArgs,
}

/// What [`LoadInstantiate`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedInstance {
    /// The module, as [`Load`] answers it.
    pub module: ModuleInfo,
    /// The new instance.
    pub instance: InstanceId,
}

/// [`CallExport`]'s argument: an export named by its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCall {
    /// The instance.
    pub instance: InstanceId,
    /// The export's index in its module's [`ModuleInfo::exports`].
    pub export: u32,
    /// Its arguments, matching its parameter types.
    pub args: Values,
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
        /// [`Load`] and [`Instantiate`] in one call: compiles the bytes
        /// (or finds them compiled) and instantiates them. A failed
        /// instantiation leaves the module compiled.
        guest LoadInstantiate = 13 (LoadInstantiateArgs) -> LoadedInstance | WasmError;
        /// Calls the function export at this index of the instance's
        /// module's [`ModuleInfo::exports`]: no name travels or is looked
        /// up (the guest resolves each instance's function exports once),
        /// and up to [`INLINE_VALUES`] arguments and results take no heap.
        guest CallExport = 14 (ExportCall) -> Values | WasmError;
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
        host ImportCall = 0x7fff_0000 (Values) -> Values | String;
        /// An import with [`ImportBinding::memory_args`]: its arguments
        /// and the bytes of its `(pointer, length)` ranges in, its results
        /// (or the host's message) out.
        host MemoryImportCall = 0x7fff_0001 (MemoryImportArgs) -> Values | String;
    }
}

pub use imports::{ImportCall, MemoryImportCall};

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use nub_interface::Function;

    #[test]
    fn values_are_a_vec_of_values_on_the_wire() {
        for n in [0usize, 1, INLINE_VALUES, INLINE_VALUES + 1, 40] {
            let list: Vec<Value> = (0..n)
                .map(|i| match i % 4 {
                    0 => Value::I32(i as i32),
                    1 => Value::I64(-(i as i64)),
                    2 => Value::F32(i as u32),
                    _ => Value::F64(u64::MAX - i as u64),
                })
                .collect();
            let values = Values::from(list.clone());
            assert_eq!(values.as_slice(), &list[..]);
            assert_eq!(Values::from(&list[..]), values);
            let args = nub_interface::encode_args::<ImportCall>(&values).unwrap();
            let reply = nub_interface::serve::<ImportCall>(&args, |v| {
                assert_eq!(v.as_slice(), &list[..]);
                Ok(v)
            });
            assert_eq!(
                nub_interface::decode_reply::<ImportCall>(&reply),
                Ok(Ok(values.clone()))
            );
            // The same bytes as a Vec<Value> (postcard's sequence).
            let as_vec = nub_interface::encode_args_as::<ImportCall, _>(&list).unwrap();
            assert_eq!(as_vec, args);
            let mut buf = [0u8; 1024];
            let n = nub_interface::encode_args_into::<ImportCall>(&values, &mut buf).unwrap();
            assert_eq!(buf.get(..n), Some(&args[..]));
        }
    }

    #[test]
    fn hostile_values_do_not_decode_or_allocate_their_claimed_length() {
        let mut request = ImportCall::SIGNATURE.to_le_bytes().to_vec();
        // A claimed length of u32::MAX values, then one value.
        request.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 2]);
        assert!(nub_interface::decode_args::<ImportCall>(&request).is_err());
    }

    #[test]
    fn the_borrowed_memory_args_encode_as_the_owned_ones() {
        let values = [Value::I32(16), Value::I32(3), Value::I64(9)];
        let ranges: [&[u8]; 2] = [b"abc", b""];
        let borrowed = MemoryImportArgsRef {
            values: &values,
            memory: &ranges,
        };
        let request = nub_interface::encode_args_as::<MemoryImportCall, _>(&borrowed).unwrap();
        let owned = nub_interface::decode_args::<MemoryImportCall>(&request).unwrap();
        assert_eq!(owned.values.as_slice(), &values);
        assert_eq!(
            owned.memory,
            vec![
                nub_interface::Bytes::from(b"abc".to_vec()),
                nub_interface::Bytes::new()
            ]
        );
        assert_eq!(
            nub_interface::encode_args::<MemoryImportCall>(&owned).unwrap(),
            request
        );
    }
}
