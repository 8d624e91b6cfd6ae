//! Leases: grant, revoke, renew, attached keys, the expiry queue and checkpoints.
//! Time is always an argument, never read from a clock here.
