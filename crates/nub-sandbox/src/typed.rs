//! Typed calls over an interface declared with
//! `nub_interface::interface!` (docs/interfaces.md): [`MultiUseSandbox::call`]
//! calls a declared guest function with its argument type and returns its
//! result or its own error; [`TypedRegistrable::register_typed`] registers
//! a declared host function as a typed closure. Underneath both is the raw
//! call (`call_raw`, `register_host_function`) with `nub_interface`'s wire
//! form in the payloads.

use nub_interface::{Function, Kind, WireError};

use crate::{
    error::{HyperlightError, Result},
    host_functions::Registerable,
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
        let reply = self.call_raw(F::ID, &request)?;
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
