//! Host functions the guest can call, and [`Registerable`].
//!
//! Both sandbox phases hold a [`HostFunctions`] registry; `evolve()` hands
//! the uninitialized sandbox's registry to the new `MultiUseSandbox`.
//! Registering an id that is already registered **replaces** the earlier
//! function. Ids in the reserved system range are refused with
//! [`HyperlightError::ReservedFunctionId`].

use std::collections::HashMap;

use nub_host_common::rpc::is_system_fn_id;

use crate::error::{HyperlightError, Result};

/// What a failed host function returns: any error of its own. The guest
/// receives its message (`Display`) as `HostCallError::Host`; the call goes
/// on and the sandbox stays healthy.
pub type HostFunctionError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a host function returns: the answer, or its own error.
pub type HostResult = std::result::Result<Vec<u8>, HostFunctionError>;

/// A host function: takes the guest's payload, returns the answer or an
/// error (whose message the guest receives).
pub type HostFunction = Box<dyn FnMut(&[u8]) -> HostResult + Send + 'static>;

/// A registry of host functions by fn id.
#[derive(Default)]
pub struct HostFunctions {
    functions: HashMap<u32, HostFunction>,
}

impl std::fmt::Debug for HostFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.functions.keys().collect();
        ids.sort();
        f.debug_struct("HostFunctions").field("ids", &ids).finish()
    }
}

impl HostFunctions {
    /// Registers (or replaces) `f` under `fn_id`.
    pub fn register(&mut self, fn_id: u32, f: HostFunction) -> Result<()> {
        if is_system_fn_id(fn_id) {
            return Err(HyperlightError::ReservedFunctionId { fn_id });
        }
        self.functions.insert(fn_id, f);
        Ok(())
    }

    /// The registered fn ids, ascending.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.functions.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The function registered under `fn_id`.
    pub fn get_mut(&mut self, fn_id: u32) -> Option<&mut HostFunction> {
        self.functions.get_mut(&fn_id)
    }
}

/// Sandboxes that accept host functions.
pub trait Registerable {
    /// Registers `f` as host function `fn_id`, callable from the guest with
    /// `nub_arch_x86::host_call(fn_id, bytes)`. The function runs on the
    /// thread that made the guest call. Registering an id again replaces the
    /// earlier function; ids in the reserved system range (`>= 0x8000_0000`)
    /// are refused.
    ///
    /// ```no_run
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use nub_sandbox::{GuestBinary, Registerable, UninitializedSandbox};
    ///
    /// let mut sbox = UninitializedSandbox::new(GuestBinary::FilePath("guest".into()), None)?;
    /// let calls = Arc::new(AtomicU64::new(0));
    /// let seen = Arc::clone(&calls);
    /// sbox.register_host_function(100, move |payload: &[u8]| {
    ///     seen.fetch_add(1, Ordering::Relaxed);
    ///     Ok(payload.to_ascii_uppercase())
    /// })?;
    /// let mut sbox = sbox.evolve()?;
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    fn register_host_function<F>(&mut self, fn_id: u32, f: F) -> Result<()>
    where
        F: FnMut(&[u8]) -> HostResult + Send + 'static;
}
