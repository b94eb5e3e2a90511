//! Every input in `fuzz/regressions/<target>/` (seeds, and anything a fuzz
//! run ever crashed on) through the same entry point its fuzz target uses:
//! none may panic. Fuzzing itself runs with `cargo +nightly fuzz run
//! <target>` (see README).

use std::path::{Path, PathBuf};

use concordkv::testing::fuzzing::replay_regressions;

fn inputs(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
}

#[test]
fn segment_inputs() {
    replay_regressions(&inputs("segment"), concordkv::testing::fuzzing::segment);
}

#[test]
fn snapshot_inputs() {
    replay_regressions(&inputs("snapshot"), concordkv::testing::fuzzing::snapshot);
}

#[test]
fn manifest_inputs() {
    replay_regressions(&inputs("manifest"), concordkv::testing::fuzzing::manifest);
}
