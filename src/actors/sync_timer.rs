//! `SyncTimerActor`: the clock of the `batch` and `interval` sync modes. It
//! only ticks; the WAL actor decides whether anything needs syncing.

use std::time::Duration;

use actix::prelude::*;

use crate::actors::messages::SyncTick;
use crate::actors::supervised::Watch;
use crate::actors::wal::WalActor;
use crate::config::{SyncMode, WalConfig};

/// Sends `SyncTick` to the WAL actor every period.
pub struct SyncTimerActor {
    wal: Addr<WalActor>,
    period: Duration,
    _watch: Watch,
}

impl SyncTimerActor {
    /// The period of the timer the sync mode needs, if any: `batch` bounds
    /// a record's wait by `batch_max_delay_ms`, `interval` syncs every
    /// `sync_interval_ms`.
    pub(crate) fn period(config: &WalConfig) -> Option<Duration> {
        let period_ms = match config.sync_mode {
            SyncMode::Batch => config.batch_max_delay_ms,
            SyncMode::Interval => config.sync_interval_ms,
            SyncMode::Always | SyncMode::None => return None,
        };
        Some(Duration::from_millis(period_ms))
    }

    /// A timer ticking `wal` every `period` (see [`SyncTimerActor::period`]).
    pub(crate) fn new(wal: Addr<WalActor>, period: Duration, watch: Watch) -> SyncTimerActor {
        SyncTimerActor {
            wal,
            period,
            _watch: watch,
        }
    }
}

impl Actor for SyncTimerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.period, |timer, ctx| {
            if timer.wal.try_send(SyncTick).is_err() && !timer.wal.connected() {
                ctx.stop();
            }
        });
    }
}

#[cfg(feature = "testing")]
impl Handler<crate::actors::messages::Crash> for SyncTimerActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::actors::messages::Crash, _ctx: &mut Context<Self>) {
        panic!("a crash injected into SyncTimerActor");
    }
}
