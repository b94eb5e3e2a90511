//! A `Log` under simulated power loss: random concurrent workloads of
//! appends, batch appends, truncations, purges, metadata writes, reads and
//! a subscriber, cut at random points of a simulated disk, with injected
//! I/O errors and media damage; every recovery and everything read back is
//! checked against a model (see `concordkv::testing::torture::log`): a
//! record a truncation dropped never comes back, an acknowledged one is
//! never lost beyond its sync mode's bound, and a truncation, purge or
//! metadata write cut in the middle is found done whole or not at all.
//! Longer runs: `concordkv torture --log --cycles N --seed S`.

use std::collections::BTreeMap;

use concordkv::testing::torture::log::{self, LogTortureReport};
use concordkv::testing::torture::TortureOptions;

/// Seeds run here; each is a run of `CYCLES` power cuts on one disk.
const SEEDS: std::ops::Range<u64> = 1..4;
const CYCLES: u64 = 100;

#[test]
fn random_power_cuts_keep_every_guarantee_of_a_log() {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in SEEDS {
        let report = log::run(&TortureOptions {
            seed,
            cycles: CYCLES,
            ops_per_cycle: 120,
            without: Vec::new(),
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.cycles, CYCLES);
        eprint!("{}", report.table());
        for (what, n) in coverage(&report) {
            *totals.entry(what).or_default() += n;
        }
    }
    // The workload must really have reached the disk, and the cuts must
    // have landed inside calls that were then found done and not done.
    for (what, total) in totals {
        assert!(total > 0, "no {what} in {} seeds", SEEDS.end - SEEDS.start);
    }
}

/// What the runs together must have seen at least once.
fn coverage(r: &LogTortureReport) -> [(&'static str, u64); 14] {
    let calls = [&r.truncations, &r.purges, &r.metadata_writes];
    let ending = |what: &str| r.read_endings.get(what).copied().unwrap_or(0);
    [
        ("acknowledged append", r.appends_acknowledged),
        ("recovered record", r.records_recovered),
        (
            "unacknowledged record recovered",
            r.unacknowledged_recovered,
        ),
        ("acknowledged truncation", r.truncations.acknowledged),
        ("refused truncation", r.truncations.refused),
        ("acknowledged purge", r.purges.acknowledged),
        (
            "call cut inside and found done",
            calls.iter().map(|c| c.cut_inside_done).sum(),
        ),
        (
            "call cut inside and found not done",
            calls.iter().map(|c| c.cut_inside_not_done).sum(),
        ),
        ("record read back", r.records_read + r.records_delivered),
        (
            "read ended by a truncation",
            ending("read: truncated") + ending("subscription: truncated"),
        ),
        ("injected fault that fired", r.disk.faults.values().sum()),
        ("torn write", r.disk.torn_writes),
        ("media damage", r.disk.media_damage.values().sum()),
        ("reopen with lowered limits", r.disk.limit_changes),
    ]
}
