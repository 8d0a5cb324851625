//! The library half of nub-cli: what the `nub` binary shares with the rest
//! of the workspace.
//!
//! - [`suite`]: the benchmark catalogue and its runner. `nub bench`, the
//!   criterion benches in `tests/benches` and the `measure` example
//!   (`tests/examples/measure.rs`) all take their rows from here, so a row
//!   is defined once, under one name.
//! - [`host_fns`]: the host functions `nub call` registers (the `host call`
//!   row calls one of them).
//! - [`DEFAULT_GUEST`]: the default guest's ELF, which the build script
//!   builds and this crate embeds.
//!
//! The command line itself (argument parsing, output, the CLI's error type)
//! lives in the binary, which depends on this library and never the other
//! way round.

pub mod host_fns;
pub mod suite;

/// The default guest's ELF, built by `build.rs` and embedded in `nub`.
pub static DEFAULT_GUEST: &[u8] = include_bytes!(env!("NUB_GUEST_NUB_DEFAULT_GUEST"));
