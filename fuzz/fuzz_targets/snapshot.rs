//! A snapshot file (header, entries) as recovery loads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concordkv::testing::fuzzing::snapshot(data));
