//! Bytes from a client, as the server parses requests off them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| concordkv_server::fuzzing::request(data));
