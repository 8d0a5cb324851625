//! Typed guest functions and host calls over an interface declared with
//! `nub_interface::interface!` (docs/interfaces.md): [`Registry::typed`]
//! and [`Registry::typed_with`] serve a declared guest function with an
//! ordinary Rust function, [`State`] is a value the kernel keeps for them
//! between calls (no `static`), and [`call_host`] calls a declared host
//! function. Requests and replies are `nub_interface`'s wire form: a
//! request whose signature or argument does not match the declaration is
//! refused with a typed reply, never decoded into garbage.

use alloc::rc::Rc;
use core::{cell::RefCell, fmt};

use nub_interface::{Function, Kind, WireError};

use crate::{
    dispatch::{Registry, RegistryError},
    hostcall::{HostCallError, host_call},
};

/// A guest's state, owned by the functions registered with it
/// ([`Registry::typed_with`]) and handed to each call as `&mut S`. Clone
/// the handle to register several functions on one state.
pub struct State<S>(Rc<RefCell<S>>);

impl<S> State<S> {
    /// A state holding `value`.
    pub fn new(value: S) -> Self {
        Self(Rc::new(RefCell::new(value)))
    }
}

impl<S> Clone for State<S> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<S> fmt::Debug for State<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("State")
    }
}

/// A typed guest function that works on a state `S`, as a plain `fn`
/// ([`Registry::typed_with`] also takes closures).
pub type StatefulFn<F, S> =
    fn(&mut S, <F as Function>::Args) -> Result<<F as Function>::Ret, <F as Function>::Err>;

impl Registry {
    /// Registers `f` as guest function `F` (its id, its types): a request
    /// is decoded (signature and argument checked), `f` runs, and its
    /// result or its own error goes back to the host's `call::<F>`. `F`
    /// must be declared `guest` (a compile error otherwise).
    pub fn typed<F: Function>(
        &mut self,
        f: impl Fn(F::Args) -> Result<F::Ret, F::Err> + 'static,
    ) -> Result<(), RegistryError> {
        const {
            assert!(
                matches!(F::KIND, Kind::Guest),
                "a host function cannot be registered in the guest"
            )
        };
        self.register_entry(
            F::ID,
            Rc::new(move |payload, out| {
                let result = match nub_interface::decode_args::<F>(payload) {
                    Ok(args) => f(args),
                    Err(why) => return out.write(&nub_interface::encode_refusal::<F>(why)),
                };
                // Straight into the response frame; a reply too large for
                // the ring (or one that does not encode) is made on the
                // heap, where `write` reports how large it was.
                if out.write_in_place(|space| nub_interface::encode_reply_into::<F>(&result, space))
                {
                    return Ok(());
                }
                out.write(&nub_interface::encode_reply::<F>(&result))
            }),
        )
    }

    /// Registers `f` as guest function `F`, handed `&mut` the value in
    /// `state` on each call.
    pub fn typed_with<F: Function, S: 'static>(
        &mut self,
        state: &State<S>,
        f: impl Fn(&mut S, F::Args) -> Result<F::Ret, F::Err> + 'static,
    ) -> Result<(), RegistryError> {
        let state = state.clone();
        self.typed::<F>(move |args| match state.0.try_borrow_mut() {
            Ok(mut value) => f(&mut value, args),
            // Unreachable: the guest is single-threaded and a host call
            // never calls back into the guest; a refusal, not a panic.
            Err(_) => Err(busy::<F>()),
        })
    }
}

/// The error of a state already in use: there is none to give, so the
/// function's own error type cannot express it. Never reached (see
/// [`Registry::typed_with`]); aborts the guest rather than panicking.
fn busy<F: Function>() -> F::Err {
    crate::abort(1, "a guest state was borrowed twice")
}

/// Why a typed host call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallHostError<E> {
    /// The host function returned its own error.
    Host(E),
    /// The call itself failed (no such host function, no host, too large).
    Call(HostCallError),
    /// The bytes did not carry what the declaration says (the two sides
    /// were built from different declarations, or the reply is garbage).
    Wire(WireError),
}

impl<E: fmt::Debug> fmt::Display for CallHostError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(e) => write!(f, "host function failed: {e:?}"),
            Self::Call(e) => write!(f, "{e}"),
            Self::Wire(e) => write!(f, "{e}"),
        }
    }
}

/// Calls host function `F` with `args` (one exit, as [`host_call`]).
/// `F` must be declared `host` (a compile error otherwise).
pub fn call_host<F: Function>(args: &F::Args) -> Result<F::Ret, CallHostError<F::Err>> {
    const {
        assert!(
            matches!(F::KIND, Kind::Host),
            "a guest function cannot be called as a host function"
        )
    };
    let request = nub_interface::encode_args::<F>(args).map_err(CallHostError::Wire)?;
    let reply = host_call(F::ID, &request).map_err(CallHostError::Call)?;
    match nub_interface::decode_reply::<F>(&reply) {
        Ok(Ok(ret)) => Ok(ret),
        Ok(Err(e)) => Err(CallHostError::Host(e)),
        Err(e) => Err(CallHostError::Wire(e)),
    }
}
