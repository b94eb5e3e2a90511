//! A MANIFEST as opening a store decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concordkv::testing::fuzzing::manifest(data));
