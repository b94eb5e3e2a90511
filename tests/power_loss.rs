//! Crash consistency under simulated power loss: thousands of random
//! workloads cut at random points of a simulated disk, with injected I/O
//! errors, each recovery checked against a model (see `concordkv::testing::torture`).
//! Longer runs: `concordkv torture --cycles N --seed S`.

use concordkv::testing::torture::{self, TortureOptions};

/// Seeds run here; each is a run of `CYCLES` power cuts on one disk.
const SEEDS: std::ops::Range<u64> = 1..9;
const CYCLES: u64 = 250;

#[test]
fn random_power_cuts_keep_every_guarantee() {
    let mut cycles = 0;
    let mut faults = 0;
    let mut torn = 0;
    let mut totals = [0u64; 6];
    for seed in SEEDS {
        let report = torture::run(&TortureOptions {
            seed,
            cycles: CYCLES,
            ops_per_cycle: 120,
            without: Vec::new(),
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.cycles, CYCLES);
        // The workload must really have reached the disk and been cut.
        assert!(
            report.ops_acknowledged > 0 && report.records_recovered > 0,
            "{report:?}"
        );
        cycles += report.cycles;
        faults += report.disk.faults.values().sum::<u64>();
        torn += report.disk.torn_writes;
        for (total, count) in totals.iter_mut().zip([
            report.disk.pages_out_of_order,
            report.disk.sector_tears,
            report.disk.slow_syncs,
            report.disk.limit_changes,
            report.disk.media_damage.values().sum(),
            report.ops_refused,
        ]) {
            *total += count;
        }
        eprint!("{}", report.table());
    }
    assert!(cycles >= 2000);
    assert!(faults > 0, "no injected fault ever fired");
    assert!(torn > 0, "no power cut ever tore a write");
    // Every fault kind must really have been injected.
    let names = [
        "pages written back out of order",
        "pages torn by sector",
        "slow syncs",
        "lowered limits",
        "media damage",
        "operations refused over a limit",
    ];
    for (name, total) in names.iter().zip(totals) {
        assert!(total > 0, "no {name} in {cycles} cycles");
    }
}
