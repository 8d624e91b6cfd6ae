//! The history checker (owned by the checker work; placeholder so the crate builds).
