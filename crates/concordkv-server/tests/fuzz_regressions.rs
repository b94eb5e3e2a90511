//! Every input in `fuzz/regressions/<target>/` (seeds, and anything a fuzz
//! run ever crashed on) through the same entry point its fuzz target uses:
//! none may panic. Fuzzing itself runs with `cargo +nightly fuzz run
//! <target>` (see README).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("regression inputs") {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("read input");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        // Prefixes too: the torn versions of each file.
        for cut in (0..data.len()).step_by(data.len().div_ceil(64).max(1)) {
            run(&data[..cut]);
        }
        inputs += 1;
    }
    assert!(inputs > 0, "no inputs in {}", dir.display());
}

#[test]
fn request_inputs() {
    replay("request", concordkv_server::fuzzing::request);
}
