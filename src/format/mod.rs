//! The on-disk format, byte by byte in `FORMAT.md`: the payload codec, the
//! record frame, the segment file and the manifest.

pub mod codec;
pub mod manifest;
pub mod record;
pub mod segment;
pub mod snapshot;

/// Whether every byte is zero. Folds whole blocks without an early exit per
/// byte, which the compiler vectorizes: recovery checks the preallocated
/// tail of a segment (up to 64 MiB) this way at every open.
pub fn all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64 * 1024)
        .all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}
