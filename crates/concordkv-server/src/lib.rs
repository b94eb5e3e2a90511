//! The `concordkv` command's library: a Redis-protocol server on a
//! [`concordkv::Store`], and the `bench` and fuzzing support the command and
//! its tests share. Everything here uses the store through its public API.

pub mod bench;
pub mod fuzzing;
pub mod server;
