//! What keeps the log bounded: the manifest that lists the live files,
//! snapshots, compaction, and the paced background work that writes and
//! deletes their files without holding up appends.

pub mod background;
pub mod closing;
pub mod compaction;
pub mod manifest;
pub mod pacing;
pub mod single_flight;
pub mod snapshot;
