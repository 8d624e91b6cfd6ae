//! Scenario tests on the harness, the Ready-order test, and the random schedules.

mod random;
mod ready_order;
mod scenarios;
mod wal;
