//! `cargo xtask chaos`: a real cluster whose peer links run through proxies the harness owns, a
//! nemesis injecting faults, clients recording a history, and a checker that proves the history
//! linearizable and the watch streams complete.

pub mod check;
pub mod history;
