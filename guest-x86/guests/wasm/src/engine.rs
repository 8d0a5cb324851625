//! The guest's wasm state: the engines, the compiled-module cache, the
//! instances and the memory budget they share. Plain Rust over wasmi, so
//! it is unit-tested on the host (`cargo test` in `guest-x86/guests`).

use alloc::{
    collections::BTreeMap,
    format,
    rc::Rc,
    string::{String, ToString},
    vec::Vec,
};
use core::cell::Cell;

use wasmi_core::LimiterError;

use crate::wasi::{self, WasiState};
use nub_arch_x86::nub_interface;
use nub_wasm_abi::{
    CallArgs, Export, ExportCall, ExternKind, FuncSig, GuestLimits, INLINE_VALUES, Import,
    ImportBinding, ImportCall, InstanceId, InstantiateArgs, LoadInstantiateArgs, LoadedInstance,
    MAX_MEMORY_ARG_BYTES, MAX_MEMORY_ARGS, MemoryArg, MemoryImportArgsRef, MemoryImportCall,
    ModuleHash, ModuleInfo, RunOutcome, TrapCode, ValType, Value, Values, WasiCaptured, WasmError,
};
use wasmi::{
    Config, Engine, Extern, ExternType, Func, Instance, Linker, Module, ResourceLimiter, Store, Val,
};

/// Most instances alive at once.
const MAX_INSTANCES: usize = 64;
/// Most compiled modules cached at once (loading another evicts none: it
/// fails with [`WasmError::Limit`]; `Unload` makes room).
const MAX_MODULES: usize = 64;
/// Most elements in one table.
const MAX_TABLE_ELEMENTS: usize = 1 << 16;
/// Bytes one table element is charged against the budget.
const TABLE_ELEMENT_BYTES: usize = 16;
/// Most tables and memories per instance.
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 4;
/// wasmi's value stack limit (cells of 8 bytes) and call depth: deep
/// recursion is a `StackOverflow` trap long before the heap runs out.
const MAX_STACK_CELLS: usize = 256 * 1024;
const MAX_RECURSION_DEPTH: usize = 4096;
/// The budget used off the bare-metal target (host unit tests), where
/// `heap_stats` reports zeros.
const HOST_BUDGET: u64 = 16 << 20;

/// The budget for linear memories and tables: a third of the heap that is
/// free once the kernel and this guest's init have run. A third, because
/// growing a memory reallocates it (old and new live at once), and
/// compiled code, stores and the value stack need the rest.
pub fn budget_from_heap() -> u64 {
    let stats = nub_arch_x86::heap_stats();
    if stats.size == 0 {
        HOST_BUDGET
    } else {
        stats.free / 3
    }
}

/// Bytes of linear memory and tables left for every instance together.
/// Shared by the instances' limiters; an instance's charge is given back
/// when it is dropped.
#[derive(Debug, Clone)]
pub struct Budget {
    left: Rc<Cell<u64>>,
    total: u64,
}

impl Budget {
    fn new(total: u64) -> Self {
        Self {
            left: Rc::new(Cell::new(total)),
            total,
        }
    }

    fn take(&self, bytes: u64) -> bool {
        match self.left.get().checked_sub(bytes) {
            Some(rest) => {
                self.left.set(rest);
                true
            }
            None => false,
        }
    }

    fn give(&self, bytes: u64) {
        self.left
            .set(self.left.get().saturating_add(bytes).min(self.total));
    }
}

/// One instance's limiter: charges growth against the shared [`Budget`]
/// and answers "no" (so `memory.grow` returns -1, and instantiation of a
/// too-large memory fails) once it is spent.
pub struct Limiter {
    budget: Budget,
    charged: u64,
}

impl Limiter {
    fn charge(&mut self, current: usize, desired: usize) -> bool {
        let more = desired.saturating_sub(current) as u64;
        if self.budget.take(more) {
            self.charged = self.charged.saturating_add(more);
            true
        } else {
            false
        }
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.budget.give(self.charged);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(self.charge(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        Ok(self.charge(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// A store's data: its limiter and, for a WASI instance, its WASI state.
pub struct StoreData {
    limiter: Limiter,
    wasi: Option<WasiState>,
}

impl wasi::WasiData for StoreData {
    fn wasi(&mut self) -> Option<&mut WasiState> {
        self.wasi.as_mut()
    }
}

/// A compiled module and what the host is told about it.
struct Compiled {
    module: Module,
    /// The same module compiled by the metering engine, made on the first
    /// instantiation with fuel.
    metered: Option<Module>,
    /// The bytes, kept for the metering engine's compile.
    bytes: Vec<u8>,
    info: ModuleInfo,
}

/// A live instance.
struct Live {
    store: Store<StoreData>,
    instance: Instance,
    metered: bool,
    /// Its module's exports in [`ModuleInfo::exports`]' order, functions
    /// resolved once ([`Wasm::call_export`]); `None` for other kinds.
    funcs: Vec<Option<Resolved>>,
}

impl Live {
    /// Its WASI state (`id` is its id, for the error of an instance made
    /// without WASI).
    fn wasi(&mut self, id: InstanceId) -> Result<&mut WasiState, WasmError> {
        self.store
            .data_mut()
            .wasi
            .as_mut()
            .ok_or_else(|| WasmError::NotWasi(format!("instance {} was made without WASI", id.0)))
    }
}

/// A function export, resolved: the handle and its types.
struct Resolved {
    func: Func,
    params: Vec<wasmi::ValType>,
    results: Vec<wasmi::ValType>,
}

impl Resolved {
    fn new(func: Func, store: &Store<StoreData>) -> Self {
        let ty = func.ty(store);
        Self {
            func,
            params: ty.params().to_vec(),
            results: ty.results().to_vec(),
        }
    }

    /// `args` match the parameters and every result is a number; else
    /// the signature error the host is told (made only on a mismatch).
    fn check(&self, args: &[Value]) -> Result<(), WasmError> {
        let numeric = |t: &wasmi::ValType| {
            matches!(
                t,
                wasmi::ValType::I32
                    | wasmi::ValType::I64
                    | wasmi::ValType::F32
                    | wasmi::ValType::F64
            )
        };
        let matches = args.len() == self.params.len()
            && args
                .iter()
                .zip(&self.params)
                .all(|(v, t)| v.ty() == val_type(t))
            && self.results.iter().all(numeric);
        if matches {
            return Ok(());
        }
        Err(WasmError::Signature {
            expected: FuncSig {
                params: self.params.iter().map(val_type).collect(),
                results: self.results.iter().map(val_type).collect(),
            },
            given: args.iter().map(Value::ty).collect(),
        })
    }

    /// Calls it with `args` (checked first); up to [`INLINE_VALUES`]
    /// arguments and results take no heap.
    fn call(&self, store: &mut Store<StoreData>, args: &[Value]) -> Result<Values, WasmError> {
        self.check(args)?;
        let failed = |e: wasmi::Error| execution_error(&e, WasmError::Other);
        let not_a_number = || WasmError::Other("a result that is not a number".into());
        let (n, m) = (args.len(), self.results.len());
        // Stack buffers for up to INLINE_VALUES values, the heap past that.
        let mut params_inline: [Val; INLINE_VALUES] = core::array::from_fn(|_| Val::I32(0));
        let mut results_inline: [Val; INLINE_VALUES] = core::array::from_fn(|_| Val::I32(0));
        let (mut params_heap, mut results_heap) = (Vec::new(), Vec::new());
        let params = buffer(&mut params_inline, &mut params_heap, n);
        for (slot, v) in params.iter_mut().zip(args) {
            *slot = to_val(v);
        }
        let results = buffer(&mut results_inline, &mut results_heap, m);
        for (slot, t) in results.iter_mut().zip(&self.results) {
            *slot = Val::default_for_ty(*t);
        }
        self.func.call(store, params, results).map_err(failed)?;
        results
            .iter()
            .map(|v| from_val(v).ok_or_else(not_a_number))
            .collect()
    }
}

/// `len` values: the first `len` of `inline` when they fit, else `heap`
/// grown to `len`.
fn buffer<'a>(
    inline: &'a mut [Val; INLINE_VALUES],
    heap: &'a mut Vec<Val>,
    len: usize,
) -> &'a mut [Val] {
    if len <= INLINE_VALUES {
        &mut inline[..len]
    } else {
        heap.resize(len, Val::I32(0));
        heap
    }
}

/// `module`'s exports in its own order (the order of
/// [`ModuleInfo::exports`]), each function resolved in `instance`.
fn resolve_exports(
    module: &Module,
    instance: &Instance,
    store: &Store<StoreData>,
) -> Vec<Option<Resolved>> {
    module
        .exports()
        .map(|e| {
            instance
                .get_func(store, e.name())
                .map(|f| Resolved::new(f, store))
        })
        .collect()
}

/// Everything the guest's functions share.
pub struct Wasm {
    engine: Engine,
    /// The engine for instances with fuel (wasmi meters per engine).
    metered_engine: Engine,
    modules: BTreeMap<ModuleHash, Compiled>,
    instances: BTreeMap<u32, Live>,
    next_instance: u32,
    budget: Budget,
    /// Modules compiled since the engines were made ([`RENEW_AFTER_COMPILES`]).
    compiles: u32,
}

/// wasmi keeps engine-wide data for every module an engine compiled, after
/// the module is dropped (measured: 0.7–1 KB a small module), so a
/// sandbox that loads and unloads distinct modules would exhaust its heap.
/// After this many compiles, the next load that finds no module and no
/// instance alive makes new engines, which frees all of it.
pub const RENEW_AFTER_COMPILES: u32 = 256;
/// A load is refused with [`WasmError::Limit`] (instead of risking the
/// allocator's abort, which poisons the sandbox) unless the heap has this
/// much free beyond [`COMPILE_BYTES_PER_BYTE`] times the module's size.
const COMPILE_HEAP_MARGIN: u64 = 1 << 20;
/// Heap a compile may need per byte of module (wasmi's compiled form and
/// its bookkeeping, with room to spare).
const COMPILE_BYTES_PER_BYTE: u64 = 16;

fn config(fuel: bool) -> Config {
    let mut config = Config::default();
    config
        .consume_fuel(fuel)
        .set_max_stack_height(MAX_STACK_CELLS)
        .set_max_recursion_depth(MAX_RECURSION_DEPTH);
    config
}

fn val_type(ty: &wasmi::ValType) -> ValType {
    match ty {
        wasmi::ValType::I32 => ValType::I32,
        wasmi::ValType::I64 => ValType::I64,
        wasmi::ValType::F32 => ValType::F32,
        wasmi::ValType::F64 => ValType::F64,
        wasmi::ValType::V128 => ValType::V128,
        wasmi::ValType::FuncRef => ValType::FuncRef,
        wasmi::ValType::ExternRef => ValType::ExternRef,
    }
}

fn func_sig(ty: &wasmi::FuncType) -> FuncSig {
    FuncSig {
        params: ty.params().iter().map(val_type).collect(),
        results: ty.results().iter().map(val_type).collect(),
    }
}

fn extern_kind(ty: &ExternType) -> ExternKind {
    match ty {
        ExternType::Func(f) => ExternKind::Func(func_sig(f)),
        ExternType::Global(g) => ExternKind::Global {
            ty: val_type(&g.content()),
            mutable: g.mutability().is_mut(),
        },
        ExternType::Memory(m) => ExternKind::Memory {
            min: m.minimum(),
            max: m.maximum(),
        },
        ExternType::Table(t) => ExternKind::Table {
            min: t.minimum(),
            max: t.maximum(),
        },
    }
}

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
        #[allow(unreachable_patterns)]
        _ => TrapCode::Other,
    }
}

/// A host function bound to an import failed (carried through wasmi as
/// its host error, so the call's error names the import).
#[derive(Debug)]
struct ImportFailed {
    module: String,
    name: String,
    message: String,
}

impl core::fmt::Display for ImportFailed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "import {}.{}: {}", self.module, self.name, self.message)
    }
}

impl wasmi::errors::HostError for ImportFailed {}

/// Most bytes of an import's request encoded on the stack (larger ones,
/// many values, go on the heap): the signature, a length and up to
/// [`INLINE_VALUES`] values of at most 11 bytes each.
const INLINE_REQUEST: usize = 8 + 2 + INLINE_VALUES * 11;

/// Defines `import` in `linker` as a forwarder to host function
/// `binding.host_fn`: the arguments go out as [`ImportCall`]'s request
/// (or, with `binding.memory_args`, [`MemoryImportCall`]'s, carrying the
/// bytes of each `(pointer, length)` range of the caller's `"memory"`),
/// the results come back checked against the import's type. Up to
/// [`INLINE_VALUES`] values travel without a heap allocation on the way
/// out (the reply is one: `host_call`'s).
fn define_import(
    linker: &mut Linker<StoreData>,
    binding: &ImportBinding,
    ty: &wasmi::FuncType,
) -> Result<(), WasmError> {
    let host_fn = binding.host_fn;
    let (module, name) = (binding.module.clone(), binding.name.clone());
    let link_error = |reason: String| WasmError::Link {
        module: binding.module.clone(),
        name: binding.name.clone(),
        reason,
    };
    let memory_args = check_memory_args(&binding.memory_args, ty).map_err(link_error)?;
    let results_ty: Vec<ValType> = ty.results().iter().map(val_type).collect();
    let fail = move |message: String| {
        wasmi::Error::host(ImportFailed {
            module: module.clone(),
            name: name.clone(),
            message,
        })
    };
    linker
        .func_new(
            &binding.module,
            &binding.name,
            ty.clone(),
            move |caller, params, results| {
                let mut args = Values::new();
                for param in params {
                    args.push(
                        from_val(param)
                            .ok_or_else(|| fail("an argument that is not a number".into()))?,
                    );
                }
                let reply = if memory_args.is_empty() {
                    let mut buf = [0u8; INLINE_REQUEST];
                    match nub_interface::encode_args_into::<ImportCall>(&args, &mut buf) {
                        Some(n) => {
                            let request = buf.get(..n).unwrap_or(&[]);
                            nub_arch_x86::host_call(host_fn, request)
                        }
                        None => {
                            let request = nub_interface::encode_args::<ImportCall>(&args)
                                .map_err(|e| fail(e.to_string()))?;
                            nub_arch_x86::host_call(host_fn, &request)
                        }
                    }
                } else {
                    let request = memory_request(&caller, &memory_args, &args).map_err(&fail)?;
                    nub_arch_x86::host_call(host_fn, &request)
                }
                .map_err(|e| fail(e.to_string()))?;
                // Both declarations answer `Values | String`.
                let values = match nub_interface::decode_reply::<ImportCall>(&reply) {
                    Ok(Ok(values)) => values,
                    Ok(Err(message)) => return Err(fail(message)),
                    Err(e) => return Err(fail(e.to_string())),
                };
                let typed = values.len() == results_ty.len()
                    && values.len() == results.len()
                    && values.iter().zip(&results_ty).all(|(v, t)| v.ty() == *t);
                if !typed {
                    let returned: Vec<ValType> = values.iter().map(Value::ty).collect();
                    return Err(fail(format!(
                        "the host returned {returned:?}, the import's results are {results_ty:?}"
                    )));
                }
                for (slot, value) in results.iter_mut().zip(values.iter()) {
                    *slot = to_val(value);
                }
                Ok(())
            },
        )
        .map(drop)
        .map_err(|e| link_error(e.to_string()))
}

/// `memory_args` if each pair names two distinct `i32` parameters of `ty`
/// and there are at most [`MAX_MEMORY_ARGS`]; else why not.
fn check_memory_args(
    memory_args: &[MemoryArg],
    ty: &wasmi::FuncType,
) -> Result<Vec<MemoryArg>, String> {
    if memory_args.len() > MAX_MEMORY_ARGS {
        return Err(format!(
            "{} pointer/length pairs: at most {MAX_MEMORY_ARGS}",
            memory_args.len()
        ));
    }
    let params = ty.params();
    let is_i32 = |index: u32| {
        usize::try_from(index)
            .ok()
            .and_then(|i| params.get(i))
            .is_some_and(|t| *t == wasmi::ValType::I32)
    };
    for arg in memory_args {
        if arg.ptr == arg.len || !is_i32(arg.ptr) || !is_i32(arg.len) {
            return Err(format!(
                "pointer/length pair ({}, {}) does not name two i32 parameters of {:?}",
                arg.ptr,
                arg.len,
                func_sig(ty)
            ));
        }
    }
    Ok(memory_args.to_vec())
}

/// The `u32` (an `i32` read as unsigned) at parameter `index` of `args`.
fn u32_arg(args: &[Value], index: u32) -> Option<u32> {
    match args.get(usize::try_from(index).ok()?)? {
        Value::I32(x) => Some(u32::from_ne_bytes(x.to_ne_bytes())),
        _ => None,
    }
}

/// [`MemoryImportCall`]'s request for a call with `args`: each range of
/// `memory_args` read from the caller's exported `"memory"`, bounds
/// checked, at most [`MAX_MEMORY_ARG_BYTES`] in all; or why not.
fn memory_request(
    caller: &wasmi::Caller<'_, StoreData>,
    memory_args: &[MemoryArg],
    args: &[Value],
) -> Result<Vec<u8>, String> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| String::from("the calling instance exports no memory named \"memory\""))?;
    let data = memory.data(caller);
    let mut ranges: [&[u8]; MAX_MEMORY_ARGS] = [&[]; MAX_MEMORY_ARGS];
    let mut total: u32 = 0;
    for (slot, arg) in ranges.iter_mut().zip(memory_args) {
        let (Some(ptr), Some(len)) = (u32_arg(args, arg.ptr), u32_arg(args, arg.len)) else {
            return Err("a pointer or length that is not an i32".into());
        };
        total = total
            .checked_add(len)
            .filter(|t| *t <= MAX_MEMORY_ARG_BYTES)
            .ok_or_else(|| {
                format!(
                    "the ranges are longer than {MAX_MEMORY_ARG_BYTES} bytes (length {len:#x} at {ptr:#x})"
                )
            })?;
        let start = ptr as usize;
        *slot = start
            .checked_add(len as usize)
            .and_then(|end| data.get(start..end))
            .ok_or_else(|| {
                format!(
                    "the range {ptr:#x}..+{len:#x} is outside the memory's {:#x} bytes",
                    data.len()
                )
            })?;
    }
    let memory = ranges.get(..memory_args.len()).unwrap_or(&[]);
    nub_interface::encode_args_as::<MemoryImportCall, _>(&MemoryImportArgsRef {
        values: args,
        memory,
    })
    .map_err(|e| e.to_string())
}

/// An execution error as the host sees it: a trap with its code, a failed
/// import, a WASI `proc_exit`, else `otherwise(message)`.
fn execution_error(e: &wasmi::Error, otherwise: fn(String) -> WasmError) -> WasmError {
    if let Some(code) = e.i32_exit_status() {
        return WasmError::Exit(code);
    }
    if let Some(failed) = e.downcast_ref::<ImportFailed>() {
        return WasmError::Import {
            module: failed.module.clone(),
            name: failed.name.clone(),
            message: failed.message.clone(),
        };
    }
    match e.as_trap_code() {
        Some(code) => WasmError::Trap {
            code: trap_code(code),
            message: e.to_string(),
        },
        None => otherwise(e.to_string()),
    }
}

fn to_val(v: &Value) -> Val {
    match *v {
        Value::I32(x) => Val::I32(x),
        Value::I64(x) => Val::I64(x),
        Value::F32(bits) => Val::F32(wasmi::F32::from_bits(bits)),
        Value::F64(bits) => Val::F64(wasmi::F64::from_bits(bits)),
    }
}

fn from_val(v: &Val) -> Option<Value> {
    match v {
        Val::I32(x) => Some(Value::I32(*x)),
        Val::I64(x) => Some(Value::I64(*x)),
        Val::F32(x) => Some(Value::F32(x.to_bits())),
        Val::F64(x) => Some(Value::F64(x.to_bits())),
        _ => None,
    }
}

impl Wasm {
    /// An empty state whose instances share `budget` bytes of linear
    /// memory and tables.
    pub fn new(budget: u64) -> Self {
        Self {
            engine: Engine::new(&config(false)),
            metered_engine: Engine::new(&config(true)),
            modules: BTreeMap::new(),
            instances: BTreeMap::new(),
            next_instance: 1,
            budget: Budget::new(budget),
            compiles: 0,
        }
    }

    /// Makes new engines when [`RENEW_AFTER_COMPILES`] compiles have
    /// passed and nothing compiled by the old ones is alive.
    fn renew_engines_if_idle(&mut self) {
        if self.compiles >= RENEW_AFTER_COMPILES
            && self.modules.is_empty()
            && self.instances.is_empty()
        {
            self.engine = Engine::new(&config(false));
            self.metered_engine = Engine::new(&config(true));
            self.compiles = 0;
        }
    }

    /// Refuses a compile of `len` bytes the heap may not hold, and counts
    /// it otherwise.
    fn reserve_compile(&mut self, len: usize) -> Result<(), WasmError> {
        let stats = nub_arch_x86::heap_stats();
        let need = (len as u64)
            .saturating_mul(COMPILE_BYTES_PER_BYTE)
            .saturating_add(COMPILE_HEAP_MARGIN);
        // Off the bare-metal target (host unit tests) there is no guest heap.
        if stats.size != 0 && stats.free < need {
            return Err(WasmError::Limit(format!(
                "the guest heap has {} bytes free, too few to compile a module of {len} bytes: \
                 unload modules, drop instances, or give the sandbox a larger heap",
                stats.free
            )));
        }
        self.compiles = self.compiles.saturating_add(1);
        Ok(())
    }

    /// Compiles `bytes` (or finds them compiled).
    pub fn load(&mut self, bytes: &[u8]) -> Result<ModuleInfo, WasmError> {
        let hash = ModuleHash(*blake3::hash(bytes).as_bytes());
        if let Some(found) = self.lookup(&hash) {
            return Ok(found);
        }
        if self.modules.len() >= MAX_MODULES {
            return Err(WasmError::Limit(format!(
                "{MAX_MODULES} modules are loaded already: unload one first"
            )));
        }
        self.renew_engines_if_idle();
        self.reserve_compile(bytes.len())?;
        let module =
            Module::new(&self.engine, bytes).map_err(|e| WasmError::Compile(e.to_string()))?;
        let info = ModuleInfo {
            hash,
            cached: false,
            exports: module
                .exports()
                .map(|e| Export {
                    name: e.name().into(),
                    kind: extern_kind(e.ty()),
                })
                .collect(),
            imports: module
                .imports()
                .map(|i| Import {
                    module: i.module().into(),
                    name: i.name().into(),
                    kind: extern_kind(i.ty()),
                })
                .collect(),
        };
        self.modules.insert(
            hash,
            Compiled {
                module,
                metered: None,
                bytes: bytes.to_vec(),
                info: info.clone(),
            },
        );
        Ok(info)
    }

    /// [`Wasm::load`] and [`Wasm::instantiate`] in one: the bytes must
    /// hash to `args.instantiate.module`. A failed instantiation leaves the
    /// module compiled.
    pub fn load_instantiate(
        &mut self,
        args: LoadInstantiateArgs,
    ) -> Result<LoadedInstance, WasmError> {
        let module = self.load(&args.bytes)?;
        if module.hash != args.instantiate.module {
            return Err(WasmError::Other(
                "the module bytes do not hash to the module named".into(),
            ));
        }
        let instance = self.instantiate(args.instantiate)?;
        Ok(LoadedInstance { module, instance })
    }

    /// The module with this hash, if compiled (`cached` set).
    pub fn lookup(&self, hash: &ModuleHash) -> Option<ModuleInfo> {
        self.modules.get(hash).map(|c| ModuleInfo {
            cached: true,
            ..c.info.clone()
        })
    }

    /// Drops a compiled module; whether it was there.
    pub fn unload(&mut self, hash: &ModuleHash) -> bool {
        self.modules.remove(hash).is_some()
    }

    /// Instantiates a loaded module in a store of its own.
    pub fn instantiate(&mut self, args: InstantiateArgs) -> Result<InstanceId, WasmError> {
        if self.instances.len() >= MAX_INSTANCES {
            return Err(WasmError::Limit(format!(
                "{MAX_INSTANCES} instances are alive already: drop one first"
            )));
        }
        let compiled = self
            .modules
            .get_mut(&args.module)
            .ok_or(WasmError::NoSuchModule(args.module))?;
        let metered = args.fuel.is_some();
        let (engine, module) = if metered {
            if compiled.metered.is_none() {
                self.compiles = self.compiles.saturating_add(1);
                let m = Module::new(&self.metered_engine, &compiled.bytes[..])
                    .map_err(|e| WasmError::Compile(e.to_string()))?;
                compiled.metered = Some(m);
            }
            let module = compiled
                .metered
                .as_ref()
                .ok_or_else(|| WasmError::Other("metered module missing".into()))?;
            (&self.metered_engine, module)
        } else {
            (&self.engine, &compiled.module)
        };
        let is_wasi = args.wasi.is_some();
        let data = StoreData {
            limiter: Limiter {
                budget: self.budget.clone(),
                charged: 0,
            },
            wasi: args.wasi.map(WasiState::new).transpose()?,
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d: &mut StoreData| &mut d.limiter);
        if let Some(fuel) = args.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| WasmError::Other(e.to_string()))?;
        }
        let mut linker = Linker::<StoreData>::new(engine);
        // Every import must be a function the host bound.
        for import in module.imports() {
            let link_error = |reason: &str| WasmError::Link {
                module: import.module().into(),
                name: import.name().into(),
                reason: reason.into(),
            };
            let ExternType::Func(ty) = import.ty() else {
                return Err(link_error("only function imports can be bound"));
            };
            if is_wasi && import.module() == wasi::MODULE {
                wasi::define(&mut linker, import.name(), ty)?;
                continue;
            }
            let binding = args
                .imports
                .iter()
                .find(|b| b.module == import.module() && b.name == import.name())
                .ok_or_else(|| link_error("no host function is bound to it"))?;
            define_import(&mut linker, binding, ty)?;
        }
        let instance = linker
            .instantiate_and_start(&mut store, module)
            .map_err(|e| execution_error(&e, WasmError::Instantiate))?;
        // A WASI reactor (a library) is initialised once, before any other
        // export is called.
        if is_wasi && let Ok(init) = instance.get_typed_func::<(), ()>(&store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| execution_error(&e, WasmError::Instantiate))?;
        }
        let funcs = resolve_exports(module, &instance, &store);
        let id = self.next_instance;
        self.next_instance = self
            .next_instance
            .checked_add(1)
            .ok_or_else(|| WasmError::Limit("instance ids are exhausted".into()))?;
        self.instances.insert(
            id,
            Live {
                store,
                instance,
                metered,
                funcs,
            },
        );
        Ok(InstanceId(id))
    }

    fn live(&mut self, id: InstanceId) -> Result<&mut Live, WasmError> {
        self.instances
            .get_mut(&id.0)
            .ok_or(WasmError::NoSuchInstance(id))
    }

    /// Calls export `args.name` of instance `args.instance`.
    pub fn call(&mut self, args: CallArgs) -> Result<Vec<Value>, WasmError> {
        let live = self.live(args.instance)?;
        let func = live
            .instance
            .get_func(&live.store, &args.name)
            .ok_or_else(|| WasmError::NoSuchExport(args.name.clone()))?;
        let resolved = Resolved::new(func, &live.store);
        Ok(resolved.call(&mut live.store, &args.args)?.to_vec())
    }

    /// Calls the function export at index `call.export` of the instance's
    /// module's exports (resolved at instantiation: no name lookup).
    pub fn call_export(&mut self, call: ExportCall) -> Result<Values, WasmError> {
        let live = self.live(call.instance)?;
        let resolved = usize::try_from(call.export)
            .ok()
            .and_then(|i| live.funcs.get(i))
            .and_then(Option::as_ref)
            .ok_or_else(|| WasmError::NoSuchExport(format!("#{}", call.export)))?;
        resolved.call(&mut live.store, &call.args)
    }

    /// Runs a WASI instance's `_start`: its exit code (`proc_exit`'s, or 0
    /// when `_start` returns) and what it captured. A trap is an error; what
    /// the program wrote before it stays for [`Wasm::take_output`].
    pub fn run(&mut self, id: InstanceId) -> Result<RunOutcome, WasmError> {
        let live = self.live(id)?;
        live.wasi(id)?;
        let start = live
            .instance
            .get_typed_func::<(), ()>(&live.store, "_start")
            .map_err(|_| WasmError::NotWasi("the module exports no `_start` () -> ()".into()))?;
        let exit_code = match start.call(&mut live.store, ()) {
            Ok(()) => 0,
            Err(e) => match e.i32_exit_status() {
                Some(code) => code,
                None => return Err(execution_error(&e, WasmError::Other)),
            },
        };
        let output = self.take_output(id)?;
        Ok(RunOutcome { exit_code, output })
    }

    /// What a WASI instance captured since the last take.
    pub fn take_output(&mut self, id: InstanceId) -> Result<WasiCaptured, WasmError> {
        Ok(self.live(id)?.wasi(id)?.take_output())
    }

    /// An instance's exports.
    pub fn exports(&mut self, id: InstanceId) -> Result<Vec<Export>, WasmError> {
        let live = self.live(id)?;
        let exports = live
            .instance
            .exports(&live.store)
            .map(|e| {
                let name: String = e.name().into();
                (name, e.into_extern())
            })
            .collect::<Vec<(String, Extern)>>();
        Ok(exports
            .into_iter()
            .map(|(name, ext)| Export {
                kind: extern_kind(&ext.ty(&live.store)),
                name,
            })
            .collect())
    }

    /// Drops an instance, giving its memory back to the budget.
    pub fn drop_instance(&mut self, id: InstanceId) -> Result<(), WasmError> {
        self.instances
            .remove(&id.0)
            .map(drop)
            .ok_or(WasmError::NoSuchInstance(id))
    }

    /// The fuel left in an instance's store.
    pub fn fuel_left(&mut self, id: InstanceId) -> Result<Option<u64>, WasmError> {
        let live = self.live(id)?;
        if !live.metered {
            return Ok(None);
        }
        live.store
            .get_fuel()
            .map(Some)
            .map_err(|e| WasmError::Other(e.to_string()))
    }

    /// The guest's limits.
    pub fn limits(&self) -> GuestLimits {
        GuestLimits {
            memory_bytes: self.budget.total,
            table_elements: MAX_TABLE_ELEMENTS as u64,
            instances: MAX_INSTANCES as u32,
            modules: MAX_MODULES as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(module (memory 1) (func (export "grow") (param i32) (result i32)
    /// local.get 0 memory.grow))`, assembled.
    const GROW: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01,
        0x7f, 0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x08, 0x01, 0x04, 0x67,
        0x72, 0x6f, 0x77, 0x00, 0x00, 0x0a, 0x08, 0x01, 0x06, 0x00, 0x20, 0x00, 0x40, 0x00, 0x0b,
    ];

    fn call_grow(w: &mut Wasm, id: InstanceId, pages: i32) -> Vec<Value> {
        w.call(CallArgs {
            instance: id,
            name: "grow".into(),
            args: alloc::vec![Value::I32(pages)],
        })
        .unwrap()
    }

    #[test]
    fn loads_are_cached_by_hash() {
        let mut w = Wasm::new(1 << 20);
        let first = w.load(GROW).unwrap();
        assert!(!first.cached);
        let again = w.load(GROW).unwrap();
        assert!(again.cached);
        assert_eq!(first.hash, again.hash);
        assert_eq!(w.lookup(&first.hash), Some(again));
        assert!(matches!(w.load(b"nope"), Err(WasmError::Compile(_))));
    }

    #[test]
    fn the_budget_bounds_every_instance_together_and_comes_back() {
        // Two pages' worth: one instance with its page may grow one more.
        let mut w = Wasm::new(2 * 65536);
        let module = w.load(GROW).unwrap().hash;
        let args = InstantiateArgs {
            module,
            imports: Vec::new(),
            fuel: None,
            wasi: None,
        };
        let a = w.instantiate(args.clone()).unwrap();
        assert_eq!(call_grow(&mut w, a, 1), [Value::I32(1)]);
        assert_eq!(call_grow(&mut w, a, 1), [Value::I32(-1)]);
        assert!(matches!(
            w.instantiate(args.clone()),
            Err(WasmError::Instantiate(_))
        ));
        w.drop_instance(a).unwrap();
        let b = w.instantiate(args).unwrap();
        assert_ne!(a, b);
        assert_eq!(call_grow(&mut w, b, 1), [Value::I32(1)]);
        assert_eq!(w.budget.left.get(), 0);
    }

    #[test]
    fn wrong_arguments_and_unknown_ids_are_errors() {
        let mut w = Wasm::new(1 << 20);
        let module = w.load(GROW).unwrap().hash;
        let id = w
            .instantiate(InstantiateArgs {
                module,
                imports: Vec::new(),
                fuel: None,
                wasi: None,
            })
            .unwrap();
        let wrong = w.call(CallArgs {
            instance: id,
            name: "grow".into(),
            args: alloc::vec![Value::F64(0)],
        });
        assert!(matches!(wrong, Err(WasmError::Signature { .. })));
        assert!(matches!(
            w.exports(InstanceId(99)),
            Err(WasmError::NoSuchInstance(_))
        ));
        assert_eq!(w.fuel_left(id), Ok(None));
    }

    #[test]
    fn calls_by_index_agree_with_calls_by_name_and_bad_indices_are_errors() {
        let mut w = Wasm::new(4 * 65536);
        let bytes = nub_interface::Bytes::from(GROW.to_vec());
        let hash = ModuleHash(*blake3::hash(GROW).as_bytes());
        let instantiate = InstantiateArgs {
            module: hash,
            imports: Vec::new(),
            fuel: None,
            wasi: None,
        };
        let loaded = w
            .load_instantiate(LoadInstantiateArgs {
                bytes: bytes.clone(),
                instantiate: instantiate.clone(),
            })
            .unwrap();
        assert_eq!(loaded.module.hash, hash);
        let index = loaded
            .module
            .exports
            .iter()
            .position(|e| e.name == "grow")
            .unwrap() as u32;
        let by_index = |w: &mut Wasm, export: u32, args: &[Value]| {
            w.call_export(ExportCall {
                instance: loaded.instance,
                export,
                args: Values::from(args),
            })
        };
        assert_eq!(
            by_index(&mut w, index, &[Value::I32(0)])
                .unwrap()
                .as_slice(),
            call_grow(&mut w, loaded.instance, 0)
        );
        assert_eq!(
            by_index(&mut w, index, &[Value::I32(1)])
                .unwrap()
                .as_slice(),
            [Value::I32(1)]
        );
        assert!(matches!(
            by_index(&mut w, index, &[]),
            Err(WasmError::Signature { .. })
        ));
        for bad in [index + 1, u32::MAX] {
            assert!(matches!(
                by_index(&mut w, bad, &[Value::I32(0)]),
                Err(WasmError::NoSuchExport(_))
            ));
        }
        // Bytes that do not hash to the module named: refused, no instance.
        let wrong = w.load_instantiate(LoadInstantiateArgs {
            bytes,
            instantiate: InstantiateArgs {
                module: ModuleHash([7; 32]),
                ..instantiate
            },
        });
        assert!(matches!(wrong, Err(WasmError::Other(_))));
        assert_eq!(w.instances.len(), 1);
    }
}
