//! The kv guest: the functions of `nub-kv-interface` over a sorted map kept
//! in a [`State`], each write stamped with the host's clock ([`kv::Now`]).
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

extern crate alloc;

use alloc::{collections::BTreeMap, format, string::String, vec::Vec};

use nub_arch_x86::nub_interface::{Bytes, Never};
use nub_arch_x86::{Registry, State, call_host, caps, javm_cap::CapHash};
use nub_kv_interface::{KvError, MAX_VALUE, Stored, kv};

/// The store: each key's value and its write time.
#[derive(Debug, Default)]
struct Store(BTreeMap<String, Stored>);

impl Store {
    /// Stores `value` under `key`; returns the value it replaced.
    fn insert(&mut self, key: String, value: Bytes, time: u64) -> Result<Option<Bytes>, KvError> {
        log::debug!("put {key:?}: {} bytes", value.len());
        if value.len() > MAX_VALUE {
            return Err(KvError::TooLarge(value.len() as u64));
        }
        let old = self.0.insert(key, Stored { value, time });
        Ok(old.map(|old| old.value))
    }

    fn get(&mut self, key: String) -> Result<Stored, KvError> {
        self.0.get(&key).cloned().ok_or(KvError::NotFound)
    }

    fn delete(&mut self, key: String) -> Result<Bytes, KvError> {
        Ok(self.0.remove(&key).ok_or(KvError::NotFound)?.value)
    }

    fn list(&mut self, prefix: String) -> Result<Vec<String>, KvError> {
        let keys = self.0.range(prefix.clone()..).map(|(k, _)| k.clone());
        Ok(keys.take_while(|k| k.starts_with(&prefix)).collect())
    }

    fn import(&mut self, (key, hash): (String, [u8; 32])) -> Result<Option<Bytes>, KvError> {
        let bytes = caps::data(&CapHash::from_bytes(hash)).ok_or(KvError::NoSuchCap)?;
        self.insert(key, Bytes::from(bytes), now()?)
    }
}

/// The host's clock.
fn now() -> Result<u64, KvError> {
    call_host::<kv::Now>(&()).map_err(|e| KvError::Clock(format!("{e}")))
}

/// Loops forever: what a bug looks like to the host's deadline.
fn spin((): ()) -> Result<(), Never> {
    loop {
        core::hint::spin_loop();
    }
}

/// Registers the functions of [`kv`] on a fresh store (run at boot).
fn init(registry: &mut Registry) {
    let store = State::new(Store::default());
    (registry.typed_with::<kv::Put, _>(&store, |s, (k, v)| s.insert(k, v, now()?)))
        .and(registry.typed_with::<kv::Get, _>(&store, Store::get))
        .and(registry.typed_with::<kv::Delete, _>(&store, Store::delete))
        .and(registry.typed_with::<kv::List, _>(&store, Store::list))
        .and(registry.typed_with::<kv::Import, _>(&store, Store::import))
        .and(registry.typed::<kv::Spin>(spin))
        .expect("`interface!` checked that the ids are distinct");
}

nub_arch_x86::guest_main!(init);

#[cfg(test)]
mod tests;
