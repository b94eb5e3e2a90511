//! The on-disk format, byte by byte in `FORMAT.md`: the payload codec, the
//! record frame and the segment file.

pub mod codec;
pub mod record;
pub mod segment;
