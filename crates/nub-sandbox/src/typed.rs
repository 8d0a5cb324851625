//! Typed calls over an interface declared with
//! `nub_interface::interface!` (docs/interfaces.md): [`MultiUseSandbox::call`]
//! calls a declared guest function with its argument type and returns its
//! result or its own error; [`TypedRegistrable::register_typed`] registers
//! a declared host function as a typed closure; [`HostFunctionSet`] builds
//! host functions once for many sandboxes. Underneath all is the raw
//! call (`call_raw`, `register_host_function`) with `nub_interface`'s wire
//! form in the payloads.

use std::sync::Arc;

use nub_interface::{Function, Kind, WireError};

use crate::{
    config::CallOptions,
    error::{HyperlightError, Result},
    host_functions::{HostResult, Registerable},
    sandbox::MultiUseSandbox,
};

/// Why a typed call did not return its result.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The guest function returned its own error: the sandbox is fine.
    #[error("guest function returned its error: {0:?}")]
    Guest(E),
    /// The call failed as a raw call can (a fault, a kill, a deadline…;
    /// [`HyperlightError::poisons`] says whether the sandbox survived).
    #[error(transparent)]
    Sandbox(#[from] HyperlightError),
    /// The bytes did not carry what the declaration says: host and guest
    /// were built from different declarations, the guest could not decode
    /// the argument, or its reply does not decode. The sandbox is fine.
    #[error("typed call of fn {fn_id}: {error}")]
    Wire {
        /// The function's id.
        fn_id: u32,
        /// What did not match.
        error: WireError,
    },
}

impl MultiUseSandbox {
    /// Calls guest function `F` with `args`: one raw call (one exit) whose
    /// payload is the signature and the postcard-encoded argument. `F` must
    /// be declared `guest` (a compile error otherwise).
    ///
    /// ```
    /// use nub_host_common::default_guest::typed::{AddPair, MathError, Pair};
    /// use nub_sandbox::typed::CallError;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// assert_eq!(sbox.call::<AddPair>(&Pair { a: 2, b: 3 }).unwrap(), 5);
    /// let err = sbox.call::<AddPair>(&Pair { a: u64::MAX, b: 1 }).unwrap_err();
    /// assert!(matches!(err, CallError::Guest(MathError::Overflow)));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn call<F: Function>(
        &mut self,
        args: &F::Args,
    ) -> std::result::Result<F::Ret, CallError<F::Err>> {
        self.call_with::<F>(args, CallOptions::default())
    }

    /// [`MultiUseSandbox::call`] with per-call `options` (a deadline for
    /// this call only, see [`CallOptions`]).
    pub fn call_with<F: Function>(
        &mut self,
        args: &F::Args,
        options: CallOptions,
    ) -> std::result::Result<F::Ret, CallError<F::Err>> {
        const {
            assert!(
                matches!(F::KIND, Kind::Guest),
                "a host function cannot be called on the sandbox"
            )
        };
        let wire = |error| CallError::Wire {
            fn_id: F::ID,
            error,
        };
        let request = nub_interface::encode_args::<F>(args).map_err(wire)?;
        let reply = self.call_with_options(F::ID, &request, options)?;
        match nub_interface::decode_reply::<F>(&reply) {
            Ok(Ok(ret)) => Ok(ret),
            Ok(Err(e)) => Err(CallError::Guest(e)),
            Err(error) => Err(wire(error)),
        }
    }
}

/// Registers declared host functions as typed closures, on anything that
/// registers raw ones ([`Registerable`]: both sandbox phases).
pub trait TypedRegistrable: Registerable {
    /// Registers `f` as host function `F`: the guest's
    /// `nub_arch_x86::call_host::<F>` reaches it, with the argument
    /// decoded (signature checked) and `f`'s result or own error sent
    /// back. `F` must be declared `host` (a compile error otherwise).
    fn register_typed<F: Function>(
        &mut self,
        f: impl FnMut(F::Args) -> std::result::Result<F::Ret, F::Err> + Send + 'static,
    ) -> Result<()> {
        const {
            assert!(
                matches!(F::KIND, Kind::Host),
                "a guest function cannot be registered on the host"
            )
        };
        let mut f = f;
        self.register_host_function(F::ID, move |payload: &[u8]| {
            Ok(nub_interface::serve::<F>(payload, &mut f))
        })
    }
}

impl<T: Registerable> TypedRegistrable for T {}

/// A shared host function: called from any sandbox the set is installed on.
type SharedFunction = Arc<dyn Fn(&[u8]) -> HostResult + Send + Sync>;

/// Host functions built once and installed on many sandboxes: each
/// install clones an `Arc` per function, so rebuilding a sandbox (a new
/// one after a failure, one from an image) re-registers nothing by hand
/// and copies no closure state. Functions are `Fn + Send + Sync` (shared
/// state goes behind a `Mutex` or atomics of the caller's).
///
/// ```
/// use nub_host_common::default_guest::typed::{AskHost, Double};
/// use nub_sandbox::typed::HostFunctionSet;
/// let set = HostFunctionSet::new().typed::<Double>(|n| Ok(n * 2));
/// for _ in 0..2 {
///     let mut uninit = nub_sandbox::UninitializedSandbox::new(
///         nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
///         None,
///     )?;
///     set.install(&mut uninit)?;
///     let mut sbox = uninit.evolve()?;
///     assert_eq!(sbox.call::<AskHost>(&21).unwrap(), 42);
/// }
/// # Ok::<(), nub_sandbox::HyperlightError>(())
/// ```
#[derive(Clone, Default)]
pub struct HostFunctionSet {
    functions: Vec<(u32, SharedFunction)>,
}

impl std::fmt::Debug for HostFunctionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFunctionSet")
            .field("ids", &self.ids())
            .finish()
    }
}

impl HostFunctionSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) raw host function `fn_id`.
    pub fn raw(
        mut self,
        fn_id: u32,
        f: impl Fn(&[u8]) -> HostResult + Send + Sync + 'static,
    ) -> Self {
        self.functions.retain(|(id, _)| *id != fn_id);
        self.functions.push((fn_id, Arc::new(f)));
        self
    }

    /// Adds (or replaces) declared host function `F` as a typed closure
    /// (see [`TypedRegistrable::register_typed`]).
    pub fn typed<F: Function>(
        self,
        f: impl Fn(F::Args) -> std::result::Result<F::Ret, F::Err> + Send + Sync + 'static,
    ) -> Self {
        const {
            assert!(
                matches!(F::KIND, Kind::Host),
                "a guest function cannot be registered on the host"
            )
        };
        self.raw(F::ID, move |payload| {
            Ok(nub_interface::serve::<F>(payload, &f))
        })
    }

    /// The ids in the set, ascending.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.functions.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Registers every function of the set on `target` (a sandbox of
    /// either phase), replacing what it had under those ids.
    pub fn install(&self, target: &mut impl Registerable) -> Result<()> {
        for (fn_id, f) in &self.functions {
            let f = Arc::clone(f);
            target.register_host_function(*fn_id, move |payload: &[u8]| f(payload))?;
        }
        Ok(())
    }
}
