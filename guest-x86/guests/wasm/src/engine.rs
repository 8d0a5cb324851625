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
    CallArgs, Export, ExternKind, FuncSig, GuestLimits, Import, ImportBinding, ImportCall,
    InstanceId, InstantiateArgs, ModuleHash, ModuleInfo, RunOutcome, TrapCode, ValType, Value,
    WasiCaptured, WasmError,
};
use wasmi::{
    Config, Engine, Extern, ExternType, Instance, Linker, Module, ResourceLimiter, Store, Val,
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
    pub(crate) wasi: Option<WasiState>,
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
}

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

/// Defines `import` in `linker` as a forwarder to host function
/// `binding.host_fn`: the arguments go out as [`ImportCall`]'s request,
/// the results come back checked against the import's type.
fn define_import(
    linker: &mut Linker<StoreData>,
    binding: &ImportBinding,
    ty: &wasmi::FuncType,
) -> Result<(), WasmError> {
    let host_fn = binding.host_fn;
    let (module, name) = (binding.module.clone(), binding.name.clone());
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
            move |_caller, params, results| {
                let args = params
                    .iter()
                    .map(from_val)
                    .collect::<Option<Vec<Value>>>()
                    .ok_or_else(|| fail("an argument that is not a number".into()))?;
                let request = nub_interface::encode_args::<ImportCall>(&args)
                    .map_err(|e| fail(e.to_string()))?;
                let reply =
                    nub_arch_x86::host_call(host_fn, &request).map_err(|e| fail(e.to_string()))?;
                let values = match nub_interface::decode_reply::<ImportCall>(&reply) {
                    Ok(Ok(values)) => values,
                    Ok(Err(message)) => return Err(fail(message)),
                    Err(e) => return Err(fail(e.to_string())),
                };
                let returned: Vec<ValType> = values.iter().map(Value::ty).collect();
                if returned != results_ty || values.len() != results.len() {
                    return Err(fail(format!(
                        "the host returned {returned:?}, the import's results are {results_ty:?}"
                    )));
                }
                for (slot, value) in results.iter_mut().zip(&values) {
                    *slot = to_val(value);
                }
                Ok(())
            },
        )
        .map(drop)
        .map_err(|e| WasmError::Link {
            module: binding.module.clone(),
            name: binding.name.clone(),
            reason: e.to_string(),
        })
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
        }
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
        let ty = func.ty(&live.store);
        let sig = func_sig(&ty);
        let given: Vec<ValType> = args.args.iter().map(Value::ty).collect();
        let numeric =
            |t: &ValType| matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64);
        if given != sig.params || !sig.results.iter().all(numeric) {
            return Err(WasmError::Signature {
                expected: sig,
                given,
            });
        }
        let params: Vec<Val> = args.args.iter().map(to_val).collect();
        let mut results: Vec<Val> = ty
            .results()
            .iter()
            .map(|t| Val::default_for_ty(*t))
            .collect();
        func.call(&mut live.store, &params, &mut results)
            .map_err(|e| execution_error(&e, WasmError::Other))?;
        results
            .iter()
            .map(|v| {
                from_val(v).ok_or_else(|| WasmError::Other("a result that is not a number".into()))
            })
            .collect()
    }

    /// Runs a WASI instance's `_start`: its exit code (`proc_exit`'s, or 0
    /// when `_start` returns) and what it captured. A trap is an error; what
    /// the program wrote before it stays for [`Wasm::take_output`].
    pub fn run(&mut self, id: InstanceId) -> Result<RunOutcome, WasmError> {
        let live = self.live(id)?;
        if live.store.data().wasi.is_none() {
            return Err(WasmError::NotWasi(format!(
                "instance {} was made without WASI",
                id.0
            )));
        }
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
        let live = self.live(id)?;
        live.store
            .data_mut()
            .wasi
            .as_mut()
            .map(WasiState::take_output)
            .ok_or_else(|| WasmError::NotWasi(format!("instance {} was made without WASI", id.0)))
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
}
