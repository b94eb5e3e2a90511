//! The log itself: segment files and their writer, the one frame reader and
//! the scan that decides what stops it (shared by recovery and `verify`),
//! the appenders' inbox and the bound on it, the sync thread and its
//! failure marker, the recovery that reads it all back, and the readers
//! that read it back while it runs (`read`, `subscription`).

pub mod admission;
pub mod inbox;
pub mod read;
pub mod reader;
pub mod recovery;
pub mod scan;
pub mod segment;
pub mod subscription;
pub mod sync_failure;
pub mod sync_worker;
