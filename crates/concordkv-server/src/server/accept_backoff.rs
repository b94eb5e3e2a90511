//! Pausing after a failed `accept`. Out of descriptors (`EMFILE`), the
//! pending connection stays in the backlog and `accept` fails again at once:
//! retrying without a pause spins a core and floods the log. So each
//! failure in a row doubles the pause, from a few milliseconds to a second,
//! and only the first failure of a streak is logged.

use std::time::Duration;

/// The first pause after a failure.
const FIRST: Duration = Duration::from_millis(5);
/// The longest pause.
const MAX: Duration = Duration::from_secs(1);

/// The pauses of the current streak of failed accepts.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Failures in a row.
    streak: u32,
}

impl AcceptBackoff {
    /// Records a failure; returns how long to pause, and whether it starts
    /// a streak (the one failure worth a log line).
    pub fn failed(&mut self) -> (Duration, bool) {
        self.streak = self.streak.saturating_add(1);
        let pause = FIRST
            .saturating_mul(1 << (self.streak - 1).min(16))
            .min(MAX);
        (pause, self.streak == 1)
    }

    /// Records a success; returns how many failures the streak it ends had.
    pub fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.streak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second_and_only_a_streak_s_first_failure_is_logged() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<(Duration, bool)> = (0..12).map(|_| backoff.failed()).collect();
        assert_eq!(pauses[0], (FIRST, true));
        assert_eq!(pauses[1], (FIRST * 2, false));
        assert_eq!(pauses[2], (FIRST * 4, false));
        assert!(pauses.windows(2).all(|w| w[1].0 >= w[0].0));
        assert!(pauses.iter().skip(1).all(|(_, log)| !log));
        assert_eq!(pauses[11].0, MAX);
        assert_eq!(backoff.succeeded(), 12);
        assert_eq!(backoff.failed(), (FIRST, true), "a new streak starts over");
    }
}
