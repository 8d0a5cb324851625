//! The benchmark suite: the one catalogue of rows that `nub bench`, the
//! criterion benches (`tests/benches`) and the `measure` example
//! (`tests/examples/measure.rs`) all run, and how rows are measured. By
//! concern:
//!
//! - [`catalogue`]: the rows, their names (a contract), floors, units and
//!   groups, in run order; [`select`] for `nub bench FILTER`,
//!   [`select_groups`] for the criterion benches and `measure`;
//! - [`samplers`]: what each row times, and the state it sets up untimed;
//! - [`runner`]: the [`Budget`] that decides how many samples a row takes,
//!   and [`run`], which measures rows and summarizes their samples;
//! - [`stats`]: the median and p99 of a row's samples;
//! - [`error`]: why a row could not be measured.
//!
//! The report `nub bench` prints (table, JSON) and its progress bar belong
//! to the `nub` binary, not to this library.

pub mod catalogue;
pub mod error;
pub mod runner;
pub mod samplers;
pub mod stats;

pub use catalogue::{
    CREATE_EVOLVE, CYCLE, CYCLE_POOL, CallPath, ECHO_EMPTY, ECHO_EMPTY_RESIDENT, ECHO_LOADED,
    FLOOR_CPL0, FLOOR_CPL3, Group, HOST_CALL_RESIDENT, KILL_FLOOR, NATIVE_F64, NATIVE_FIB,
    NATIVE_LOAD, NATIVE_LOOP, PING_PONG_FLOOR, RSS_ROW, Row, Unit, VM_FLOOR, rows, select,
    select_groups,
};
pub use error::{BenchError, RowError};
pub use runner::{Budget, Progress, RowResult, run};
pub use samplers::Sampler;
