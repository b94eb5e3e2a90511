//! One job of a kind at a time. A client that asks for compactions or
//! snapshots in a tight loop (3,000 pipelined `BGREWRITEAOF`s) must not
//! start a thread and force a segment rotation for each; while one asked
//! for earlier is running, the next is refused at once instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A kind of job of which at most one runs.
#[derive(Debug)]
pub(crate) struct SingleFlight {
    what: &'static str,
    busy: Arc<AtomicBool>,
}

/// The right to run the job; released when dropped.
#[derive(Debug)]
pub(crate) struct Flight(Arc<AtomicBool>);

impl SingleFlight {
    /// Nothing running yet; `what` names the job in the refusal.
    pub(crate) fn new(what: &'static str) -> SingleFlight {
        SingleFlight {
            what,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Claims the right to run, or [`Error::InProgress`] if another holds it.
    pub(crate) fn claim(&self) -> Result<Flight> {
        if self.busy.swap(true, Ordering::AcqRel) {
            Err(Error::InProgress(self.what))
        } else {
            Ok(Flight(Arc::clone(&self.busy)))
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_until_the_first_ends() {
        let flight = SingleFlight::new("compaction");
        let first = flight.claim().expect("free");
        assert!(matches!(
            flight.claim(),
            Err(Error::InProgress("compaction"))
        ));
        drop(first);
        assert!(flight.claim().is_ok());
    }
}
