//! A segment file (header, framed records) as recovery reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concordkv::testing::fuzzing::segment(data));
