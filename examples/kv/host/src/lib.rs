//! A typed key-value service whose store runs in a nub micro-VM: [`Kv`] boots
//! the guest built from `../guest` and calls it through `nub-kv-interface`.

pub use nub_kv_interface::{KvError, MAX_VALUE, Stored, kv};
use nub_sandbox::nub_interface::{Bytes, Function};
pub use nub_sandbox::{CallError, HostFunctionSet};
use nub_sandbox::{CallOptions, GuestBinary, MultiUseSandbox, UninitializedSandbox};

/// The guest's ELF, built and embedded by build.rs.
static GUEST: &[u8] = include_bytes!(env!("KV_GUEST"));

/// A store in its own sandbox. The data lives in the guest: a call that
/// poisons the sandbox (a fault, a missed deadline) loses it, and the next
/// call runs in a new, empty sandbox with the same host functions.
#[derive(Debug)]
pub struct Kv {
    sandbox: Option<MultiUseSandbox>,
    fns: HostFunctionSet,
}

impl Kv {
    /// A store whose sandboxes, built on first use, all get `fns` (answering [`kv::Now`]).
    pub fn new(fns: HostFunctionSet) -> Self {
        Self { sandbox: None, fns }
    }

    /// The sandbox; a new one if the last call poisoned the old one.
    pub fn sandbox(&mut self) -> nub_sandbox::Result<&mut MultiUseSandbox> {
        let sandbox = match self.sandbox.take() {
            Some(sandbox) if !sandbox.is_poisoned() => sandbox,
            _ => {
                let mut uninit = UninitializedSandbox::new(GuestBinary::Static(GUEST), None)?;
                self.fns.install(&mut uninit)?;
                uninit.evolve()?
            }
        };
        Ok(self.sandbox.insert(sandbox))
    }

    /// Calls guest function `F`, stopping it if it runs for over a second.
    pub fn call<F: Function>(&mut self, args: &F::Args) -> Result<F::Ret, CallError<F::Err>> {
        let options = CallOptions::default().with_deadline(std::time::Duration::from_secs(1));
        self.sandbox()?.call_with::<F>(args, options)
    }

    /// Stores `value` under `key`; returns the value it replaced.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, CallError<KvError>> {
        let old = self.call::<kv::Put>(&(key.into(), Bytes::from(value)))?;
        Ok(old.map(Bytes::into_vec))
    }

    /// The value under `key`, and when it was written.
    pub fn get(&mut self, key: &str) -> Result<Stored, CallError<KvError>> {
        self.call::<kv::Get>(&key.into())
    }

    /// Removes `key`; returns its value.
    pub fn delete(&mut self, key: &str) -> Result<Vec<u8>, CallError<KvError>> {
        Ok(self.call::<kv::Delete>(&key.into())?.into_vec())
    }

    /// The keys that start with `prefix`, sorted.
    pub fn list(&mut self, prefix: &str) -> Result<Vec<String>, CallError<KvError>> {
        self.call::<kv::List>(&prefix.into())
    }
}
