//! The tasks of a cycle's workload: appenders, the maintenance task
//! (truncations, purges, syncs), the metadata writer, the reader and the
//! subscriber, each journalling what it saw.

use std::cell::RefCell;
use std::fmt;
use std::ops::Bound;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_rt::time::timeout;
use rand::rngs::StdRng;
use rand::Rng;

use super::journal::{
    describe_metadata, Appended, Call, Journal, Outcome, ReadSeen, SubscriptionSeen, Tick,
    LABEL_END,
};
use super::live::describe_range;
use crate::entry::Seq;
use crate::error::Error;
use crate::format::manifest::MAX_METADATA_BYTES;
use crate::rawlog::{Log, RAW_ENCODING_OVERHEAD};
use crate::testing::sim_fs::SimFs;
use crate::testing::torture::ANSWER_LIMIT;

/// Records the log keeps before the purges are steered to trim it: every
/// open replays the whole log, so a log that only grew would make a long
/// run quadratic.
pub(super) const KEEP_RECORDS: u64 = 300;
/// Subscriptions a cycle's subscriber makes at most (it subscribes again
/// after each `Truncated` or `Purged`).
pub(super) const SUBSCRIPTIONS: usize = 16;
/// Payloads in one batch, at most.
pub(super) const BATCH_MAX: usize = 6;

/// Makes the payloads of one writer: each labelled, some with long runs
/// of zeros (whole zero sectors and pages inside a record are user data,
/// not evidence of a lost write), some at, just under and just over the
/// limit.
pub(super) struct PayloadMaker {
    pub(super) rng: StdRng,
    pub(super) tag: String,
    pub(super) counter: u64,
    /// The largest payload the limits allow.
    pub(super) limit: usize,
}

impl PayloadMaker {
    pub(super) fn label(&mut self) -> String {
        self.counter += 1;
        format!("{}n{}", self.tag, self.counter)
    }

    pub(super) fn payload(&mut self, label: &str) -> Vec<u8> {
        let mut payload = label.as_bytes().to_vec();
        payload.push(LABEL_END);
        let head = payload.clone();
        let mut at_limit = false;
        match self.rng.random_range(0..20) {
            0 | 1 => {
                let run = self.rng.random_range(256..=1500);
                payload.resize(head.len() + run, 0);
                payload.extend_from_slice(&head);
            }
            2 => {
                payload.resize(head.len() + 4096, 0);
                payload.extend_from_slice(&head);
            }
            3 => {
                at_limit = true;
                let size = match self.rng.random_range(0..8) {
                    0 => self.limit + 1,
                    1 => self.limit.saturating_sub(1),
                    _ => self.limit,
                };
                payload.resize(size.max(head.len()), 0);
                let end = payload.len();
                payload[end - head.len()..].copy_from_slice(&head);
            }
            _ => {
                let pad = self.rng.random_range(0..200);
                payload.extend(std::iter::repeat_n(b'p', pad));
            }
        }
        if !at_limit && payload.len() > self.limit && self.rng.random_bool(0.8) {
            // Keep most payloads within the limit, so that most are written.
            payload.truncate(self.limit.max(head.len()));
        }
        payload
    }
}

/// The shared pieces every task of a cycle gets.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) log: Log,
    pub(super) journal: Rc<Journal>,
    pub(super) fs: SimFs,
    /// `limits.max_record_bytes`.
    pub(super) record_limit: u64,
}

impl Ctx {
    pub(super) fn over_limit(&self, payload: &[u8]) -> bool {
        payload.len() as u64 + RAW_ENCODING_OVERHEAD > self.record_limit
    }

    /// Whether the power is off or an injected fault fired: errors are
    /// then expected.
    pub(super) fn troubled(&self) -> bool {
        self.fs.is_dead() || !self.fs.stats().faults.is_empty()
    }
}

/// Awaits `call`, failing the run if it goes unanswered too long.
pub(super) async fn answered<T>(
    what: impl FnOnce() -> String,
    call: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    timeout(ANSWER_LIMIT, call)
        .await
        .map_err(|_| format!("{} went unanswered for {ANSWER_LIMIT:?}", what()))
}

/// One appender: single payloads (`submit`, whose queueing it sees
/// exactly, and `append`) and batches.
pub(super) async fn write(
    ctx: Ctx,
    mut maker: PayloadMaker,
    quota: usize,
    mut pause: Option<u64>,
) -> Result<(), String> {
    let mut left = quota;
    while left > 0 {
        if let Some(max_micros) = pause {
            let micros = maker.rng.random_range(0..=max_micros);
            actix_rt::time::sleep(Duration::from_micros(micros)).await;
        }
        let kind = maker.rng.random_range(0..20);
        let ok = if kind < 4 {
            let n = if maker.rng.random_bool(0.05) {
                0
            } else {
                maker.rng.random_range(1..=BATCH_MAX.min(left))
            };
            left -= n.max(1);
            append_batch(&ctx, &mut maker, n).await?
        } else {
            left -= 1;
            append_one(&ctx, &mut maker, kind < 6).await?
        };
        if !ok {
            // No more pauses once the log refuses appends (the power is
            // out): they would only stretch the run.
            pause = None;
        }
    }
    Ok(())
}

/// Appends one payload through `append` (`plain`) or `submit`; `false`
/// when the log answered with an error other than a refusal.
pub(super) async fn append_one(
    ctx: &Ctx,
    maker: &mut PayloadMaker,
    plain: bool,
) -> Result<bool, String> {
    let journal = &ctx.journal;
    let label = maker.label();
    let payload = maker.payload(&label);
    let over = ctx.over_limit(&payload);
    let len = payload.len();
    let index = journal.register(Appended {
        label: label.clone(),
        payload: payload.clone(),
        batch: None,
        queued: None,
        invalid: false,
        acked: None,
        maybe_acked: false,
        submitted_at: Instant::now(),
        acked_at: None,
    });
    let answer = if plain {
        let called = journal.tick();
        let answer = answered(|| format!("append of {label}"), ctx.log.append(payload)).await?;
        let at = journal.tick();
        if !matches!(answer, Err(Error::InvalidRequest(_))) {
            journal.appends.borrow_mut()[index].queued = Some((called, at));
        }
        answer
    } else {
        let submitted = answered(|| format!("submit of {label}"), ctx.log.submit(payload)).await?;
        match submitted {
            Ok(pending) => {
                // `submit` queues in the poll that returns, and nothing
                // else runs on this thread in between.
                let at = journal.tick();
                journal.appends.borrow_mut()[index].queued = Some((at, at));
                answered(|| format!("the append of {label}"), pending).await?
            }
            Err(e) => Err(e),
        }
    };
    match answer {
        Ok(seq) => {
            if over {
                return Err(format!(
                    "{label}, {len} bytes, over limits.max_record_bytes = {}, was accepted",
                    ctx.record_limit
                ));
            }
            let mut appends = journal.appends.borrow_mut();
            appends[index].acked = Some(seq);
            appends[index].acked_at = Some(Instant::now());
            Ok(true)
        }
        Err(Error::InvalidRequest(reason)) => {
            if !over {
                return Err(format!(
                    "{label}, {len} bytes, within limits.max_record_bytes = {}, was refused: {reason}",
                    ctx.record_limit
                ));
            }
            journal.appends.borrow_mut()[index].invalid = true;
            Ok(true)
        }
        Err(_) => {
            journal.failed();
            Ok(false)
        }
    }
}

/// Appends a batch of `n` payloads (0: an empty batch, which must be
/// refused); `false` when the log answered with an error other than a
/// refusal.
pub(super) async fn append_batch(
    ctx: &Ctx,
    maker: &mut PayloadMaker,
    n: usize,
) -> Result<bool, String> {
    let journal = &ctx.journal;
    let batch = journal.batches.get();
    journal.batches.set(batch + 1);
    let base = maker.label();
    let mut indexes = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    for i in 0..n {
        let label = format!("{base}b{i}");
        let payload = maker.payload(&label);
        indexes.push(journal.register(Appended {
            label,
            payload: payload.clone(),
            batch: Some((batch, i)),
            queued: None,
            invalid: false,
            acked: None,
            maybe_acked: false,
            submitted_at: Instant::now(),
            acked_at: None,
        }));
        payloads.push(payload);
    }
    let invalid = n == 0 || payloads.iter().any(|p| ctx.over_limit(p));
    let called = journal.tick();
    let answer = answered(
        || format!("append_batch of {base}"),
        ctx.log.append_batch(payloads),
    )
    .await?;
    let at = journal.tick();
    let mut appends = journal.appends.borrow_mut();
    match answer {
        Ok(first) => {
            if invalid {
                return Err(format!(
                    "append_batch of {n} payloads ({base}), empty or with one over limits.max_record_bytes = {}, was accepted",
                    ctx.record_limit
                ));
            }
            for (i, index) in indexes.into_iter().enumerate() {
                let a = &mut appends[index];
                a.queued = Some((called, at));
                a.acked = Some(first + i as Seq);
                a.acked_at = Some(Instant::now());
            }
            Ok(true)
        }
        Err(Error::InvalidRequest(reason)) => {
            if !invalid {
                return Err(format!(
                    "append_batch of {n} payloads ({base}), each within limits.max_record_bytes = {}, was refused: {reason}",
                    ctx.record_limit
                ));
            }
            for index in indexes {
                appends[index].invalid = true;
            }
            Ok(true)
        }
        Err(_) => {
            for index in indexes {
                let a = &mut appends[index];
                a.queued = Some((called, at));
                a.maybe_acked = true;
            }
            journal.failed();
            Ok(false)
        }
    }
}

/// A point around the log's ends: below `first_seq`, at its ends, inside
/// an acknowledged batch, or anywhere in between.
pub(super) fn pick_point(rng: &mut StdRng, first: Seq, last: Seq, batches: &[(Seq, u64)]) -> Seq {
    match rng.random_range(0..10) {
        0 => first.saturating_sub(rng.random_range(1..=3)),
        1 => first,
        2 => last,
        3 => last + rng.random_range(1..=3),
        4 | 5 if !batches.is_empty() => {
            let (start, count) = batches[rng.random_range(0..batches.len())];
            start + rng.random_range(0..count)
        }
        _ => rng.random_range(first.min(last)..=last.max(first)),
    }
}

/// Truncates, purges and syncs, one at a time (a purge and a truncation
/// exclude each other in the log anyway).
pub(super) async fn maintain(ctx: Ctx, mut rng: StdRng, rounds: usize) -> Result<(), String> {
    let journal = &ctx.journal;
    for _ in 0..rounds {
        actix_rt::time::sleep(Duration::from_micros(rng.random_range(0..3000))).await;
        let (first, last) = (ctx.log.first_seq(), ctx.log.last_seq());
        let batches = journal.acked_batches();
        match rng.random_range(0..10) {
            0..=3 => {
                let point = pick_point(&mut rng, first, last, &batches);
                // `first - 1` drops every record; below it is refused.
                let after = point.saturating_sub(1);
                let (outcome, _) = call(&ctx, &journal.truncations, after, last, || {
                    ctx.log.truncate_after(after)
                })
                .await?;
                let refuse = after + 1 < first;
                if (outcome == Outcome::Refused) != refuse {
                    return Err(format!(
                        "truncate_after({after}) with first_seq {first} was {outcome:?}"
                    ));
                }
            }
            4..=7 => {
                let before = if last + 1 - first.min(last + 1) > KEEP_RECORDS {
                    last + 1 - rng.random_range(0..KEEP_RECORDS / 3)
                } else {
                    pick_point(&mut rng, first, last + 1, &batches)
                };
                let (outcome, answer_tick) = call(&ctx, &journal.purges, before, last, || {
                    ctx.log.purge_before(before)
                })
                .await?;
                // The end only grows while this runs (no truncation can).
                if outcome == Outcome::Refused && before <= last + 1 {
                    return Err(format!(
                        "purge_before({before}) was refused though last_seq was {last}"
                    ));
                }
                if outcome == Outcome::Acked {
                    let now = ctx.log.first_seq();
                    if now != first.max(before) {
                        return Err(format!(
                            "after purge_before({before}) from {first} (answered at tick {answer_tick}), first_seq is {now}"
                        ));
                    }
                }
            }
            _ => {
                call(&ctx, &journal.syncs, (), last, || async {
                    ctx.log.sync().await.map(drop)
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// Makes a call that changes the log's ends or its metadata (or a sync),
/// journalling it in `list`; returns its outcome and the tick of its
/// answer.
pub(super) async fn call<
    T: Clone + fmt::Debug,
    F: std::future::Future<Output = crate::Result<()>>,
>(
    ctx: &Ctx,
    list: &RefCell<Vec<Call<T>>>,
    arg: T,
    last: Seq,
    make: impl FnOnce() -> F,
) -> Result<(Outcome, Tick), String> {
    let journal = &ctx.journal;
    let alive = !ctx.fs.is_dead();
    let index = {
        let mut list = list.borrow_mut();
        list.push(Call {
            arg: arg.clone(),
            called: journal.tick(),
            answered: None,
            outcome: Outcome::Pending,
            cut_inside: false,
            last,
        });
        list.len() - 1
    };
    let answer = answered(|| format!("a call with {arg:?}"), make()).await?;
    let at = journal.tick();
    let outcome = match answer {
        Ok(()) => Outcome::Acked,
        Err(Error::InvalidRequest(_)) => Outcome::Refused,
        // An actor's panic is no excuse: the one that took the call answers
        // it, and one that died before taking it hands it to its successor.
        Err(e) if !ctx.troubled() => {
            return Err(format!(
                "a call with {arg:?} failed with no fault fired and the power on: {e}"
            ));
        }
        Err(_) => {
            journal.failed();
            Outcome::Failed
        }
    };
    let mut list = list.borrow_mut();
    let entry = &mut list[index];
    entry.answered = Some(at);
    entry.outcome = outcome;
    entry.cut_inside = alive && outcome == Outcome::Failed && ctx.fs.is_dead();
    Ok((outcome, at))
}

/// Metadata of a random size: empty, one byte, a few, or at and around
/// the limit.
pub(super) fn random_metadata(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0 => 0,
        1 => 1,
        2 => MAX_METADATA_BYTES - 1,
        3 => MAX_METADATA_BYTES,
        4 => MAX_METADATA_BYTES + 1,
        _ => rng.random_range(2..200),
    };
    (0..len).map(|_| rng.random()).collect()
}

/// Sets the metadata now and then; each value must read back at once.
pub(super) async fn set_metadata(ctx: Ctx, mut rng: StdRng, rounds: usize) -> Result<(), String> {
    for _ in 0..rounds {
        actix_rt::time::sleep(Duration::from_micros(rng.random_range(0..4000))).await;
        let value = random_metadata(&mut rng);
        let len = value.len();
        let last = ctx.log.last_seq();
        let (outcome, _) = call(&ctx, &ctx.journal.metadata, value.clone(), last, || {
            ctx.log.set_metadata(value.clone())
        })
        .await?;
        if (outcome == Outcome::Refused) != (len > MAX_METADATA_BYTES) {
            return Err(format!("set_metadata of {len} bytes was {outcome:?}"));
        }
        if outcome == Outcome::Acked && ctx.log.metadata().as_deref() != Some(&value[..]) {
            return Err(format!(
                "set_metadata of {len} bytes was acknowledged, but the metadata reads {}",
                describe_metadata(ctx.log.metadata().as_deref())
            ));
        }
    }
    Ok(())
}

/// A random range around the log's ends.
pub(super) fn random_range(rng: &mut StdRng, first: Seq, last: Seq) -> (Bound<Seq>, Bound<Seq>) {
    let low = first.saturating_sub(2);
    let a = rng.random_range(low..=last + 2);
    let b = rng.random_range(low..=last + 2);
    match rng.random_range(0..6) {
        0 => (Bound::Unbounded, Bound::Unbounded),
        1 => (Bound::Included(a), Bound::Unbounded),
        2 => (Bound::Included(a.min(b)), Bound::Included(a.max(b))),
        3 => (Bound::Included(a), Bound::Excluded(b)),
        4 => (Bound::Unbounded, Bound::Included(b)),
        _ => (Bound::Excluded(a), Bound::Included(b)),
    }
}

/// Reads random ranges, each on a blocking thread as an application
/// would.
pub(super) async fn read(ctx: Ctx, mut rng: StdRng, rounds: usize) -> Result<(), String> {
    let journal = &ctx.journal;
    for _ in 0..rounds {
        actix_rt::time::sleep(Duration::from_micros(rng.random_range(0..3000))).await;
        let (first_before, last_before) = (ctx.log.first_seq(), ctx.log.last_seq());
        let range = random_range(&mut rng, first_before, last_before);
        let called = journal.tick();
        let entries = ctx.log.read(range);
        let first_after = ctx.log.first_seq();
        let mut seen = ReadSeen {
            range,
            called,
            first_before,
            first_after,
            last_before,
            end: None,
            records: Vec::new(),
            error: None,
            finished: called,
            troubled: false,
        };
        match entries {
            Err(e) => seen.error = Some(e),
            Ok(entries) => {
                seen.end = Some(entries.end());
                let reading = actix_rt::task::spawn_blocking(move || {
                    let mut records = Vec::new();
                    for record in entries {
                        match record {
                            Ok(record) => records.push(record),
                            Err(e) => return (records, Some(e)),
                        }
                    }
                    (records, None)
                });
                let what = || format!("read({})", describe_range(&range));
                let (records, error) = answered(what, reading)
                    .await?
                    .map_err(|e| format!("a read's task failed: {e}"))?;
                seen.records = records;
                seen.error = error;
                seen.finished = journal.tick();
            }
        }
        seen.troubled = ctx.troubled();
        journal.reads.borrow_mut().push(seen);
    }
    Ok(())
}

/// Follows the log until it shuts down, subscribing again after each
/// `Truncated` or `Purged`.
pub(super) async fn follow(ctx: Ctx, mut from: Seq) {
    let journal = &ctx.journal;
    for _ in 0..SUBSCRIPTIONS {
        let mut seen = SubscriptionSeen {
            from,
            called: journal.tick(),
            records: Vec::new(),
            end: None,
            troubled: false,
        };
        let mut subscription = ctx.log.subscribe(from);
        let again = loop {
            match subscription.next().await {
                Some(Ok((seq, payload))) => seen.records.push((seq, payload, journal.tick())),
                Some(Err(e)) => {
                    let again = match &e {
                        Error::Truncated { after } => Some(after + 1),
                        Error::Purged { upto } => Some(upto + 1),
                        _ => None,
                    };
                    seen.end = Some((Some(e), journal.tick()));
                    break again;
                }
                None => {
                    seen.end = Some((None, journal.tick()));
                    break None;
                }
            }
        };
        seen.troubled = ctx.troubled();
        journal.subscriptions.borrow_mut().push(seen);
        match again {
            Some(next) => from = next,
            None => return,
        }
    }
}
