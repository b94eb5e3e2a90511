//! Every input in `fuzz/regressions/<target>/` (seeds, and anything a fuzz
//! run ever crashed on) through the same entry point its fuzz target uses:
//! none may panic. Fuzzing itself runs with `cargo +nightly fuzz run
//! <target>` (see README).

use std::path::{Path, PathBuf};

use concordkv::testing::fuzzing::replay_regressions;

fn inputs(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target)
}

#[test]
fn request_inputs() {
    replay_regressions(&inputs("request"), concordkv_server::fuzzing::request);
}
