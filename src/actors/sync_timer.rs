//! `SyncTimerActor`: the clock of the `batch` and `interval` sync modes. It
//! only ticks; the WAL actor decides whether anything needs syncing.

use std::time::Duration;

use actix::prelude::*;

use crate::actors::messages::SyncTick;
use crate::actors::wal::WalActor;
use crate::config::{SyncMode, WalConfig};

/// Sends `SyncTick` to the WAL actor every period.
pub struct SyncTimerActor {
    wal: Addr<WalActor>,
    period: Duration,
}

impl SyncTimerActor {
    /// The timer the sync mode needs, if any: `batch` bounds a record's wait
    /// by `batch_max_delay_ms`, `interval` syncs every `sync_interval_ms`.
    pub fn for_mode(config: &WalConfig, wal: Addr<WalActor>) -> Option<SyncTimerActor> {
        let period_ms = match config.sync_mode {
            SyncMode::Batch => config.batch_max_delay_ms,
            SyncMode::Interval => config.sync_interval_ms,
            SyncMode::Always | SyncMode::None => return None,
        };
        Some(SyncTimerActor {
            wal,
            period: Duration::from_millis(period_ms),
        })
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
