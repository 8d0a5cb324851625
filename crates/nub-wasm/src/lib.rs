//! Run WebAssembly modules in a nub sandbox (docs/wasm.md).
//!
//! A [`WasmSandbox`] is a [`MultiUseSandbox`] booted from the wasm guest
//! (`guest-x86/guests/wasm`, embedded in this crate as [`GUEST`]). The
//! guest runs wasmi: it compiles modules and keeps them, and their
//! instances, in its memory between calls, so a call into an export costs
//! one sandbox call (one VM exit, or none in resident mode).
//!
//! ```
//! use nub_wasm::WasmSandbox;
//!
//! let wasm = wat::parse_str(r#"(module (func (export "add") (param i32 i64) (result i64)
//!     local.get 1 local.get 0 i64.extend_i32_s i64.add))"#)?;
//! let mut sbox = WasmSandbox::new()?;
//! let module = sbox.load(&wasm)?;
//! sbox.instantiate(&module)?;
//! assert_eq!(sbox.call::<(i32, i64), i64>("add", (2, 40))?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`WasmSandbox::load`] compiles a module's bytes in the guest (cached
//!   by their blake3 hash on both sides: loading the same bytes again
//!   sends nothing).
//! - [`WasmSandbox::instantiate`] makes an instance (its own store,
//!   limits and optional fuel) and makes it the default for
//!   [`WasmSandbox::call`]; [`WasmSandbox::call_in`] names one.
//! - A trap is [`WasmError::Trap`] with its [`TrapCode`]: the sandbox and
//!   the instance stay usable. A deadline ([`CallOptions::with_deadline`],
//!   or the configuration's `max_execution_time`) stops an endless loop;
//!   that poisons the sandbox, like every failure of the sandbox itself
//!   ([`WasmError::Sandbox`]).
//! - Linear memory is limited below the guest's heap, so `memory.grow`
//!   past the limit returns -1 instead of exhausting the guest.
//! - Function imports are host closures ([`WasmSandbox::define_import`]),
//!   each call one host call; an import nothing is bound to fails
//!   instantiation with [`WasmError::Link`], naming it.

mod values;
pub mod wasi;
pub mod workloads;

use std::{collections::HashMap, sync::Arc};

pub use nub_sandbox;
use nub_sandbox::{
    CallError, CallOptions, GuestBinary, HyperlightError, MultiUseSandbox, SandboxConfiguration,
    SandboxImage, UninitializedSandbox,
};
pub use nub_wasm_abi as abi;
use nub_wasm_abi::functions as f;
pub use nub_wasm_abi::{
    Export, ExternKind, FuncSig, GuestLimits, Import, InstanceId, MAX_MEMORY_ARG_BYTES,
    MAX_MEMORY_ARGS, MemoryArg, ModuleHash, TrapCode, ValType, Value, Values,
};
pub use values::{WasmParams, WasmResults, WasmType};
pub use wasi::{RunOutcome, Stdio, Wasi, WasiCaptured, WasiOutput, WasiStdin};

/// The wasm guest's ELF, built by this crate's build script.
pub static GUEST: &[u8] = include_bytes!(env!("NUB_WASM_GUEST"));

/// The guest heap [`WasmSandbox::new`] configures: linear memories,
/// compiled code and wasmi's stacks all live there.
pub const DEFAULT_HEAP_SIZE: u64 = 32 << 20;

/// The input ring [`WasmSandbox::new`] configures: a module's bytes travel
/// in one call, so this bounds the size of a module (a larger one fails
/// with [`HyperlightError::PayloadTooLarge`], which does not poison).
pub const DEFAULT_INPUT_RING_SIZE: u64 = 4 << 20;

/// The output ring [`WasmSandbox::new`] configures (results and export
/// lists).
pub const DEFAULT_OUTPUT_RING_SIZE: u64 = 256 << 10;

/// The result of this crate's operations.
pub type Result<T, E = WasmError> = std::result::Result<T, E>;

/// Why a wasm operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The execution trapped (the sandbox and the instance stay usable).
    #[error("wasm trap {code:?}: {message}")]
    Trap {
        /// The trap's code.
        code: TrapCode,
        /// The interpreter's message.
        message: String,
    },
    /// The module's bytes did not parse, validate or compile.
    #[error("the module did not compile: {0}")]
    Compile(String),
    /// An import could not be satisfied.
    #[error("import {module}.{name} cannot be linked: {reason}")]
    Link {
        /// The import's module name.
        module: String,
        /// The import's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Instantiation failed (a memory or table beyond the limits, a start
    /// function that failed).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// The instance exports no function of that name.
    #[error("no exported function {0:?}")]
    NoSuchExport(String),
    /// The arguments do not match the function's parameters, or its
    /// results are not numbers.
    #[error("signature mismatch: the function is {expected:?}, the arguments were {given:?}")]
    Signature {
        /// The function's signature.
        expected: FuncSig,
        /// The argument types given.
        given: Vec<ValType>,
    },
    /// The results do not have the types the caller asked for.
    #[error("result type mismatch: expected {expected:?}, the function returned {returned:?}")]
    ResultTypes {
        /// What the caller's [`WasmResults`] type wants.
        expected: Vec<ValType>,
        /// What came back.
        returned: Vec<ValType>,
    },
    /// [`WasmSandbox::load_cap`] of a CNode: a module is a Data cap.
    #[error("a module is a Data cap, not a CNode")]
    NotData,
    /// [`WasmSandbox::call`] before any [`WasmSandbox::instantiate`].
    #[error("no instance: instantiate a module first")]
    NoInstance,
    /// The module or instance named is not in the guest (dropped, or from
    /// another sandbox).
    #[error("{0}")]
    Unknown(String),
    /// A host function bound to an import failed (its message), or
    /// answered values that are not the import's result types.
    #[error("import {module}.{name} failed: {message}")]
    Import {
        /// The import's module name.
        module: String,
        /// The import's name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A limit of the guest's was reached (instances, modules).
    #[error("guest limit: {0}")]
    Limit(String),
    /// The program called WASI `proc_exit` during a call other than
    /// [`WasmSandbox::run`] (the instance stays usable).
    #[error("the program exited with code {0}")]
    Exit(i32),
    /// A WASI operation on an instance made without WASI, or
    /// [`WasmSandbox::run`] of a module with no `_start`.
    #[error("not a WASI program: {0}")]
    NotWasi(String),
    /// Another failure of the interpreter.
    #[error("wasm guest: {0}")]
    Guest(String),
    /// The sandbox call itself failed (a deadline, a kill, a guest abort;
    /// [`HyperlightError::poisons`] says whether the sandbox survived).
    #[error(transparent)]
    Sandbox(#[from] HyperlightError),
    /// The guest's reply did not carry what the interface declares (a
    /// guest built from another version of `nub-wasm-abi`).
    #[error("wire error in fn {fn_id}: {error}")]
    Wire {
        /// The function's id.
        fn_id: u32,
        /// What did not match.
        error: nub_interface::WireError,
    },
}

impl WasmError {
    /// The trap code, if this is a trap.
    pub fn trap_code(&self) -> Option<TrapCode> {
        match self {
            Self::Trap { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<nub_wasm_abi::WasmError> for WasmError {
    fn from(e: nub_wasm_abi::WasmError) -> Self {
        use nub_wasm_abi::WasmError as W;
        match e {
            W::Compile(m) => Self::Compile(m),
            W::Link {
                module,
                name,
                reason,
            } => Self::Link {
                module,
                name,
                reason,
            },
            W::Instantiate(m) => Self::Instantiate(m),
            W::Trap { code, message } => Self::Trap { code, message },
            W::NoSuchModule(h) => Self::Unknown(format!("no module {} in the guest", hex(&h.0))),
            W::NoSuchCap(h) => Self::Unknown(format!("no Data cap {} in the guest", hex(&h))),
            W::NoSuchInstance(i) => Self::Unknown(format!("no instance {} in the guest", i.0)),
            W::NoSuchExport(n) => Self::NoSuchExport(n),
            W::Signature { expected, given } => Self::Signature { expected, given },
            W::Import {
                module,
                name,
                message,
            } => Self::Import {
                module,
                name,
                message,
            },
            W::Limit(m) => Self::Limit(m),
            W::Exit(code) => Self::Exit(code),
            W::NotWasi(m) => Self::NotWasi(m),
            W::Other(m) => Self::Guest(m),
        }
    }
}

impl<E: Into<WasmError>> From<CallError<E>> for WasmError {
    fn from(e: CallError<E>) -> Self {
        match e {
            CallError::Guest(e) => e.into(),
            CallError::Sandbox(e) => Self::Sandbox(e),
            CallError::Wire { fn_id, error } => Self::Wire { fn_id, error },
        }
    }
}

impl From<nub_interface::Never> for WasmError {
    fn from(never: nub_interface::Never) -> Self {
        match never {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A module compiled in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The blake3 hash of its bytes.
    pub hash: ModuleHash,
    /// Its exports, sorted by name.
    pub exports: Vec<Export>,
    /// Its imports, in the module's order.
    pub imports: Vec<Import>,
}

/// An instance in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Its id in the guest.
    pub id: InstanceId,
}

/// How to instantiate a module.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct InstanceOptions {
    /// Fuel for the instance (`None`, the default: unmetered). Every call
    /// draws from what is left; running out is a
    /// [`TrapCode::OutOfFuel`] trap. A metered instance runs a second
    /// compile of its module, with metering.
    pub fuel: Option<u64>,
    /// WASI preview 1 for the module's `wasi_snapshot_preview1` imports
    /// (`None`, the default: they are unbound, unless
    /// [`WasmSandbox::define_import`] bound them).
    pub wasi: Option<Wasi>,
}

impl InstanceOptions {
    /// With `fuel` units of fuel.
    pub fn with_fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// With WASI preview 1 in environment `wasi`: its
    /// `wasi_snapshot_preview1` imports are served by the guest (a module
    /// that exports `_initialize`, a reactor, has it called once here).
    pub fn with_wasi(mut self, wasi: Wasi) -> Self {
        self.wasi = Some(wasi);
        self
    }
}

/// The first host function id [`WasmSandbox::define_import`] gives an
/// import; each further import takes the next. Keep your own host
/// functions below it.
pub const IMPORT_FN_BASE: u32 = 0x5741_0000;

/// What a host closure bound with [`WasmSandbox::define_import_with_memory`]
/// is handed: the import's argument values and the bytes the guest copied
/// out of the calling instance's memory, one slice per `(pointer, length)`
/// pair, in the order the pairs were given.
#[derive(Debug, Clone, Copy)]
pub struct ImportArgs<'a> {
    values: &'a [Value],
    memory: &'a [nub_interface::Bytes],
}

impl<'a> ImportArgs<'a> {
    /// Every argument value (pointers and lengths included).
    pub fn values(&self) -> &'a [Value] {
        self.values
    }

    /// The bytes of the `pair`th `(pointer, length)` range (`None` past
    /// the last pair).
    pub fn memory(&self, pair: usize) -> Option<&'a [u8]> {
        self.memory.get(pair).map(|b| &b[..])
    }

    /// How many ranges there are (the number of pairs bound).
    pub fn ranges(&self) -> usize {
        self.memory.len()
    }
}

/// A sandbox running the wasm guest.
pub struct WasmSandbox {
    sandbox: MultiUseSandbox,
    modules: HashMap<ModuleHash, Module>,
    /// Each cached module's exports in the guest's order (what
    /// [`nub_wasm_abi::CallExport`] indexes), shared with its instances.
    export_lists: HashMap<ModuleHash, Arc<[Export]>>,
    /// The export list of each instance this wrapper made (calls by name
    /// become calls by index); instances it does not know are called by
    /// name.
    instances: HashMap<InstanceId, Arc<[Export]>>,
    current: Option<Instance>,
    imports: Vec<nub_wasm_abi::ImportBinding>,
    /// Host function ids given to imports so far (never reused).
    next_import: u32,
    /// The streams behind WASI's host-streamed stdio.
    stdio: wasi::SharedStdio,
}

impl std::fmt::Debug for WasmSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSandbox")
            .field("modules", &self.modules.len())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl WasmSandbox {
    /// The configuration [`WasmSandbox::new`] uses: the default one with a
    /// [`DEFAULT_HEAP_SIZE`] heap and rings of [`DEFAULT_INPUT_RING_SIZE`]
    /// and [`DEFAULT_OUTPUT_RING_SIZE`].
    pub fn default_config() -> SandboxConfiguration {
        SandboxConfiguration::default()
            .with_heap_size(DEFAULT_HEAP_SIZE)
            .with_ring_sizes(DEFAULT_INPUT_RING_SIZE, DEFAULT_OUTPUT_RING_SIZE)
    }

    /// The wasm guest as a [`GuestBinary`], for building sandboxes
    /// yourself (then [`WasmSandbox::from_sandbox`]).
    pub fn guest_binary() -> GuestBinary {
        GuestBinary::Static(GUEST)
    }

    /// A sandbox booted with [`WasmSandbox::default_config`].
    pub fn new() -> Result<Self> {
        Self::with_config(Self::default_config())
    }

    /// A sandbox booted with `config` (either call mode; give it a heap
    /// large enough for the modules it will run).
    pub fn with_config(config: SandboxConfiguration) -> Result<Self> {
        let sandbox = UninitializedSandbox::new(Self::guest_binary(), Some(config))?.evolve()?;
        Self::from_sandbox(sandbox)
    }

    /// Wraps a sandbox booted from [`WasmSandbox::guest_binary`] (calls
    /// into any other guest fail with typed errors), registering the WASI
    /// host functions on it ([`abi::WASI_FN_BASE`] and the next two ids;
    /// the process's own streams behind them until
    /// [`WasmSandbox::set_stdio`]).
    pub fn from_sandbox(mut sandbox: MultiUseSandbox) -> Result<Self> {
        let stdio = Arc::new(std::sync::Mutex::new(Stdio::inherit()));
        wasi::register(&mut sandbox, &stdio)?;
        Ok(Self {
            sandbox,
            modules: HashMap::new(),
            export_lists: HashMap::new(),
            instances: HashMap::new(),
            current: None,
            imports: Vec::new(),
            next_import: 0,
            stdio,
        })
    }

    /// Captures this sandbox as an image
    /// ([`MultiUseSandbox::capture_image`]): the guest's compiled modules
    /// and live instances (their memories, globals, WASI state) are in its
    /// heap, so every sandbox started from the image
    /// ([`WasmSandbox::from_image`]) has them without compiling anything.
    pub fn capture_image(&mut self) -> Result<Arc<SandboxImage>> {
        Ok(self.sandbox.capture_image()?)
    }

    /// A wasm sandbox started from an image of one
    /// ([`WasmSandbox::capture_image`], or [`SandboxImage::load`] of a
    /// saved file): no boot, no compile. The instances the captured sandbox
    /// had go on, each where it was: call them through the [`Instance`]s
    /// the captured sandbox returned (they are plain ids), or make one the
    /// default with [`WasmSandbox::set_current`]. A module's hash is known
    /// to the guest, so [`WasmSandbox::load`] of its bytes compiles
    /// nothing. Host closures are not in images: the WASI host functions
    /// are registered here, and imports bound with
    /// [`WasmSandbox::define_import`] must be defined again, in the same
    /// order (their host function ids are given out in order), before the
    /// instances that use them call them.
    pub fn from_image(
        image: &Arc<SandboxImage>,
        config: Option<SandboxConfiguration>,
    ) -> Result<Self> {
        Self::from_sandbox(MultiUseSandbox::from_image(image, config)?)
    }

    /// Sets the streams behind [`WasiStdin::Host`] and [`WasiOutput::Host`]
    /// (every instance of this sandbox shares them).
    pub fn set_stdio(&mut self, stdio: Stdio) {
        // A poisoned lock held only streams: replace them all the same.
        let mut slot = self
            .stdio
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = stdio;
    }

    /// Binds the function import `module.name` of modules instantiated
    /// from now on to `f`, which gets the arguments and returns the
    /// results (their types must be the import's; the guest checks) or a
    /// message that fails the wasm call with [`WasmError::Import`]. Each
    /// call of the import is one host call (one exit, none in resident
    /// mode). Defining a name again replaces it for later instances. The
    /// closure runs on the thread that makes the wasm call.
    pub fn define_import(
        &mut self,
        module: &str,
        name: &str,
        mut f: impl FnMut(&[Value]) -> std::result::Result<Vec<Value>, String> + Send + 'static,
    ) -> Result<()> {
        self.bind_import(module, name, Vec::new(), move |payload: &[u8]| {
            nub_interface::serve::<nub_wasm_abi::ImportCall>(payload, |args| {
                f(&args).map(Values::from)
            })
        })
    }

    /// [`WasmSandbox::define_import`] for an import with pointer/length
    /// arguments: each `(ptr, len)` of `pairs` names two `i32` parameters
    /// of the import (by index) that are a range of the calling instance's
    /// exported `"memory"`. On each call the guest copies those ranges out
    /// (bounds checked, [`MAX_MEMORY_ARG_BYTES`] in all, and the request
    /// must fit in the output ring) and `f` sees them with the values in
    /// [`ImportArgs`]. A range outside the memory, longer than the limit,
    /// or a caller without a `"memory"` export fails the wasm call with
    /// [`WasmError::Import`] naming the import (the sandbox and the
    /// instance stay usable); a pair that does not name two `i32`
    /// parameters fails instantiation with [`WasmError::Link`]. At most
    /// [`MAX_MEMORY_ARGS`] pairs ([`WasmError::Limit`] otherwise).
    pub fn define_import_with_memory(
        &mut self,
        module: &str,
        name: &str,
        pairs: &[(u32, u32)],
        mut f: impl FnMut(&ImportArgs<'_>) -> std::result::Result<Vec<Value>, String> + Send + 'static,
    ) -> Result<()> {
        if pairs.len() > MAX_MEMORY_ARGS {
            return Err(WasmError::Limit(format!(
                "{} pointer/length pairs: at most {MAX_MEMORY_ARGS}",
                pairs.len()
            )));
        }
        let memory_args: Vec<MemoryArg> = pairs
            .iter()
            .map(|&(ptr, len)| MemoryArg { ptr, len })
            .collect();
        let expected = pairs.len();
        self.bind_import(module, name, memory_args, move |payload: &[u8]| {
            nub_interface::serve::<nub_wasm_abi::MemoryImportCall>(payload, |args| {
                // The guest's request is not trusted: one range per pair.
                if args.memory.len() != expected {
                    return Err(format!(
                        "the guest sent {} ranges for {expected} pointer/length pairs",
                        args.memory.len()
                    ));
                }
                f(&ImportArgs {
                    values: &args.values,
                    memory: &args.memory,
                })
                .map(Values::from)
            })
        })
    }

    /// Registers `serve` under the next import id and binds `module.name`
    /// to it.
    fn bind_import(
        &mut self,
        module: &str,
        name: &str,
        memory_args: Vec<MemoryArg>,
        mut serve: impl FnMut(&[u8]) -> Vec<u8> + Send + 'static,
    ) -> Result<()> {
        let host_fn = IMPORT_FN_BASE
            .checked_add(self.next_import)
            // Ids from 0x8000_0000 are nub's system range.
            .filter(|id| *id < 0x8000_0000)
            .ok_or_else(|| WasmError::Limit("too many imports defined".into()))?;
        nub_sandbox::Registerable::register_host_function(
            &mut self.sandbox,
            host_fn,
            move |payload: &[u8]| Ok(serve(payload)),
        )?;
        self.imports
            .retain(|b| !(b.module == module && b.name == name));
        self.imports.push(nub_wasm_abi::ImportBinding {
            module: module.to_owned(),
            name: name.to_owned(),
            host_fn,
            memory_args,
        });
        self.next_import += 1;
        Ok(())
    }

    /// The sandbox underneath.
    pub fn sandbox(&self) -> &MultiUseSandbox {
        &self.sandbox
    }

    /// The sandbox underneath, mutably (for its interrupt handle, stats).
    pub fn sandbox_mut(&mut self) -> &mut MultiUseSandbox {
        &mut self.sandbox
    }

    /// The sandbox underneath, dropping what this wrapper knows.
    pub fn into_sandbox(self) -> MultiUseSandbox {
        self.sandbox
    }

    /// Compiles a module in the guest, unless these bytes were loaded into
    /// this sandbox before (their blake3 hash is known: nothing is sent).
    pub fn load(&mut self, bytes: &[u8]) -> Result<Module> {
        let hash = ModuleHash(*blake3::hash(bytes).as_bytes());
        if let Some(m) = self.modules.get(&hash) {
            return Ok(m.clone());
        }
        let info = self
            .sandbox
            .call::<f::Load>(&nub_interface::Bytes::from(bytes.to_vec()))?;
        self.remember(hash, info)
    }

    /// Compiles the module whose bytes are the Data cap `cap` (content
    /// addressed): a module compiled before costs no call, and a cap the
    /// guest's directory holds already is not sent again
    /// (`put_cap_with_hash`, which checks the directory without an exit);
    /// the guest compiles from its directory's copy. A CNode is refused
    /// with [`WasmError::NotData`].
    pub fn load_cap(&mut self, cap: &nub_sandbox::javm_cap::Cap) -> Result<Module> {
        let nub_sandbox::javm_cap::Cap::Data(content) = cap else {
            return Err(WasmError::NotData);
        };
        let bytes = match content {
            nub_sandbox::javm_cap::DataContent::Inline(bytes) => {
                std::borrow::Cow::Borrowed(&bytes[..])
            }
            paged => std::borrow::Cow::Owned(paged.to_vec()),
        };
        let hash = ModuleHash(*blake3::hash(&bytes).as_bytes());
        if let Some(m) = self.modules.get(&hash) {
            return Ok(m.clone());
        }
        let cap_hash = cap.hash();
        self.sandbox.put_cap_with_hash(cap_hash, cap)?;
        let info = self.sandbox.call::<f::LoadCap>(&cap_hash.to_bytes())?;
        self.remember(hash, info)
    }

    /// Checks that the guest hashed a module's bytes as the host did, and
    /// caches what it reported.
    fn remember(&mut self, hash: ModuleHash, info: nub_wasm_abi::ModuleInfo) -> Result<Module> {
        if info.hash != hash {
            return Err(WasmError::Guest(format!(
                "the guest hashed the module as {}, not {}",
                hex(&info.hash.0),
                hex(&hash.0)
            )));
        }
        let module = Module {
            hash: info.hash,
            exports: info.exports,
            imports: info.imports,
        };
        self.export_lists
            .insert(hash, Arc::from(module.exports.as_slice()));
        self.modules.insert(hash, module.clone());
        Ok(module)
    }

    /// Drops a compiled module from the guest's cache (its instances live
    /// on); whether it was there.
    pub fn unload(&mut self, module: &Module) -> Result<bool> {
        self.modules.remove(&module.hash);
        self.export_lists.remove(&module.hash);
        Ok(self.sandbox.call::<f::Unload>(&module.hash)?)
    }

    /// Instantiates `module` (running its start function, if any) and
    /// makes it the instance [`WasmSandbox::call`] uses.
    pub fn instantiate(&mut self, module: &Module) -> Result<Instance> {
        self.instantiate_with(module, InstanceOptions::default())
    }

    /// [`WasmSandbox::instantiate`] with options (fuel).
    pub fn instantiate_with(
        &mut self,
        module: &Module,
        options: InstanceOptions,
    ) -> Result<Instance> {
        let id = self
            .sandbox
            .call::<f::Instantiate>(&self.instantiate_args(module.hash, options))?;
        Ok(self.made(module.hash, id))
    }

    /// [`WasmSandbox::load`] and [`WasmSandbox::instantiate`] in one
    /// sandbox call (the bytes compiled, unless loaded before, and
    /// instantiated in the guest's one function `LoadInstantiate`); bytes
    /// this sandbox loaded before are not sent again (one `Instantiate`).
    /// A failed instantiation leaves the module compiled in the guest.
    pub fn load_and_instantiate(&mut self, bytes: &[u8]) -> Result<(Module, Instance)> {
        self.load_and_instantiate_with(bytes, InstanceOptions::default())
    }

    /// [`WasmSandbox::load_and_instantiate`] with options (fuel).
    pub fn load_and_instantiate_with(
        &mut self,
        bytes: &[u8],
        options: InstanceOptions,
    ) -> Result<(Module, Instance)> {
        let hash = ModuleHash(*blake3::hash(bytes).as_bytes());
        if let Some(module) = self.modules.get(&hash).cloned() {
            let instance = self.instantiate_with(&module, options)?;
            return Ok((module, instance));
        }
        let loaded =
            self.sandbox
                .call::<f::LoadInstantiate>(&nub_wasm_abi::LoadInstantiateArgs {
                    bytes: nub_interface::Bytes::from(bytes.to_vec()),
                    instantiate: self.instantiate_args(hash, options),
                })?;
        let module = self.remember(hash, loaded.module)?;
        let instance = self.made(hash, loaded.instance);
        Ok((module, instance))
    }

    /// What `Instantiate` is sent for `module` with `options`.
    fn instantiate_args(
        &self,
        module: ModuleHash,
        options: InstanceOptions,
    ) -> nub_wasm_abi::InstantiateArgs {
        nub_wasm_abi::InstantiateArgs {
            module,
            imports: self.imports.clone(),
            fuel: options.fuel,
            wasi: options.wasi.map(Wasi::into_config),
        }
    }

    /// Records instance `id` of `module` (its export list, for calls by
    /// index) and makes it current.
    fn made(&mut self, module: ModuleHash, id: InstanceId) -> Instance {
        if let Some(exports) = self.export_lists.get(&module) {
            self.instances.insert(id, Arc::clone(exports));
        }
        let instance = Instance { id };
        self.current = Some(instance);
        instance
    }

    /// The instance [`WasmSandbox::call`] uses (the last one made).
    pub fn current(&self) -> Option<Instance> {
        self.current
    }

    /// Makes `instance` the one [`WasmSandbox::call`] uses.
    pub fn set_current(&mut self, instance: Instance) {
        self.current = Some(instance);
    }

    /// Calls export `name` of the current instance with typed arguments
    /// and results: `sbox.call::<(i32, i64), f64>("f", (1, 2))`.
    pub fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, args: P) -> Result<R> {
        let instance = self.current.ok_or(WasmError::NoInstance)?;
        self.call_in(&instance, name, args)
    }

    /// [`WasmSandbox::call`] on a given instance.
    pub fn call_in<P: WasmParams, R: WasmResults>(
        &mut self,
        instance: &Instance,
        name: &str,
        args: P,
    ) -> Result<R> {
        self.call_in_with(instance, name, args, CallOptions::default())
    }

    /// [`WasmSandbox::call_in`] with per-call options (a deadline).
    pub fn call_in_with<P: WasmParams, R: WasmResults>(
        &mut self,
        instance: &Instance,
        name: &str,
        args: P,
        options: CallOptions,
    ) -> Result<R> {
        let values = self.call_raw(instance, name, &args.into_values(), options)?;
        R::from_values(&values).ok_or_else(|| WasmError::ResultTypes {
            expected: R::types(),
            returned: values.iter().map(Value::ty).collect(),
        })
    }

    /// Calls export `name` of `instance` with untyped values.
    pub fn call_values(
        &mut self,
        instance: &Instance,
        name: &str,
        args: &[Value],
    ) -> Result<Vec<Value>> {
        self.call_values_with(instance, name, args, CallOptions::default())
    }

    /// [`WasmSandbox::call_values`] with per-call options (a deadline).
    pub fn call_values_with(
        &mut self,
        instance: &Instance,
        name: &str,
        args: &[Value],
        options: CallOptions,
    ) -> Result<Vec<Value>> {
        Ok(self.call_raw(instance, name, args, options)?.to_vec())
    }

    /// Calls export `name`: by its index (`CallExport`: no name sent or
    /// looked up in the guest) on an instance this wrapper made, by name
    /// (`Call`) otherwise.
    fn call_raw(
        &mut self,
        instance: &Instance,
        name: &str,
        args: &[Value],
        options: CallOptions,
    ) -> Result<Values> {
        let index = self.instances.get(&instance.id).and_then(|exports| {
            exports
                .iter()
                .position(|e| e.name == name && matches!(e.kind, ExternKind::Func(_)))
        });
        match index.and_then(|i| u32::try_from(i).ok()) {
            Some(export) => {
                let call = nub_wasm_abi::ExportCall {
                    instance: instance.id,
                    export,
                    args: Values::from(args),
                };
                Ok(self.sandbox.call_with::<f::CallExport>(&call, options)?)
            }
            None => {
                let call = nub_wasm_abi::CallArgs {
                    instance: instance.id,
                    name: name.to_owned(),
                    args: args.to_vec(),
                };
                Ok(Values::from(
                    self.sandbox.call_with::<f::Call>(&call, options)?,
                ))
            }
        }
    }

    /// Runs a WASI command's `_start` in `instance` (made with
    /// [`InstanceOptions::with_wasi`]): its exit code (`proc_exit`'s, or 0
    /// when `_start` returned) and what it captured. A trap is
    /// [`WasmError::Trap`] (what the program wrote before it stays for
    /// [`WasmSandbox::take_output`]); an instance without WASI, or a module
    /// without `_start`, is [`WasmError::NotWasi`].
    pub fn run(&mut self, instance: &Instance) -> Result<RunOutcome> {
        self.run_with(instance, CallOptions::default())
    }

    /// [`WasmSandbox::run`] with per-call options (a deadline).
    pub fn run_with(&mut self, instance: &Instance, options: CallOptions) -> Result<RunOutcome> {
        Ok(self.sandbox.call_with::<f::Run>(&instance.id, options)?)
    }

    /// What a WASI instance captured ([`WasiOutput::Capture`]) since the
    /// last take (or run).
    pub fn take_output(&mut self, instance: &Instance) -> Result<WasiCaptured> {
        Ok(self.sandbox.call::<f::TakeOutput>(&instance.id)?)
    }

    /// An instance's exports and their types.
    pub fn exports(&mut self, instance: &Instance) -> Result<Vec<Export>> {
        Ok(self.sandbox.call::<f::Exports>(&instance.id)?)
    }

    /// Fuel left in `instance` (`None`: unmetered).
    pub fn fuel_left(&mut self, instance: &Instance) -> Result<Option<u64>> {
        Ok(self.sandbox.call::<f::FuelLeft>(&instance.id)?)
    }

    /// Drops an instance, freeing its memory in the guest.
    pub fn drop_instance(&mut self, instance: Instance) -> Result<()> {
        if self.current == Some(instance) {
            self.current = None;
        }
        self.instances.remove(&instance.id);
        Ok(self.sandbox.call::<f::DropInstance>(&instance.id)?)
    }

    /// The guest's limits (linear memory budget, instances, modules).
    pub fn limits(&mut self) -> Result<GuestLimits> {
        Ok(self.sandbox.call::<f::Limits>(&())?)
    }
}
