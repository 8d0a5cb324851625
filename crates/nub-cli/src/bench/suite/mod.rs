//! The suite behind `nub bench`, by concern:
//!
//! - [`catalogue`]: the rows, their names (a contract), floors and units,
//!   in run order, and [`select`] for `nub bench FILTER`;
//! - [`samplers`]: what each row times, and the state it sets up untimed;
//! - [`runner`]: the [`Budget`] that decides how many samples a row takes,
//!   and [`run`], which measures rows and summarizes their samples;
//! - [`error`]: why a row could not be measured.

pub mod catalogue;
pub mod error;
pub mod runner;
pub mod samplers;

pub use catalogue::{Unit, rows, select};
pub use error::BenchError;
pub use runner::{Budget, Progress, RowResult, run};
