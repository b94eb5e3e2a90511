//! Expiry commands: `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (with
//! `NX|XX|GT|LT`), `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`,
//! `GETEX`, `SETEX`, `PSETEX`, and the deadlines `SET` takes. Deadlines are logged as absolute
//! times (milliseconds since the Unix epoch), so a replay never extends a
//! key's life; a deadline already past deletes the key, as Redis does.
//! Each writing command is a plan over a [`View`], as in [`super::modify`].

use bytes::Bytes;

use super::error;
use super::modify::{integer, not_an_integer, put_op, Plan};
use crate::server::db::View;
use crate::server::expiry::now_ms;
use crate::server::frame::Frame;
use crate::server::in_flight::Stored;
use concordkv::Op;

/// What a deadline argument counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

/// From when a deadline argument counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// From now (`EX`, `PX`, `EXPIRE`, `PEXPIRE`).
    Now,
    /// From the Unix epoch (`EXAT`, `PXAT`, `EXPIREAT`, `PEXPIREAT`).
    Epoch,
}

fn invalid_expire_time(command: &str) -> Frame {
    error(format!("invalid expire time in '{command}' command"))
}

/// The deadline `when` names, in milliseconds since the epoch; `None` if
/// it overflows (Redis's checks, in its order).
fn deadline(when: i64, unit: Unit, base: Base, now: u64) -> Option<i64> {
    let ms = match unit {
        Unit::Seconds => when.checked_mul(1000)?,
        Unit::Millis => when,
    };
    match base {
        Base::Now => ms.checked_add(i64::try_from(now).ok()?),
        Base::Epoch => Some(ms),
    }
}

/// The deadline of `SET … EX|PX|EXAT|PXAT n` and `GETEX`: `n` must be a
/// positive integer.
pub fn option_deadline(
    arg: &Bytes,
    unit: Unit,
    base: Base,
    command: &str,
    now: u64,
) -> Result<i64, Frame> {
    let when = integer(arg).ok_or_else(not_an_integer)?;
    if when <= 0 {
        return Err(invalid_expire_time(command));
    }
    deadline(when, unit, base, now).ok_or_else(|| invalid_expire_time(command))
}

/// The operation that gives `key` the value `value` until `at`: a deletion
/// if `at` has already passed.
pub fn expiring_op(key: &[u8], value: Vec<u8>, at: i64, now: u64) -> Op {
    match u64::try_from(at) {
        Ok(at) if at > now => Op::SetExpiring {
            key: key.to_vec(),
            value,
            expires_at: at,
        },
        _ => Op::Delete { key: key.to_vec() },
    }
}

/// `EXPIRE key n [NX|XX|GT|LT]` and its siblings: 1 if the deadline was
/// set (or the key deleted, the deadline being past), 0 if the key is
/// missing or a condition held it back.
pub fn expire(
    view: &dyn View,
    key: &Bytes,
    when: &Bytes,
    options: &[Bytes],
    unit: Unit,
    base: Base,
    command: &str,
) -> Plan {
    let refuse = |frame| (Vec::new(), frame);
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return refuse(error(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(option)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return refuse(error(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return refuse(error(
            "GT and LT options at the same time are not compatible",
        ));
    }
    let Some(when) = integer(when) else {
        return refuse(not_an_integer());
    };
    let now = now_ms();
    let Some(at) = deadline(when, unit, base, now) else {
        return refuse(invalid_expire_time(command));
    };
    let Some(Stored { value, expires_at }) = view.entry(key) else {
        return refuse(Frame::Integer(0));
    };
    // A key without a deadline counts as never expiring for GT and LT.
    let held_back = match expires_at {
        Some(current) => {
            let current = i64::try_from(current).unwrap_or(i64::MAX);
            nx || gt && at <= current || lt && at >= current
        }
        None => xx || gt,
    };
    if held_back {
        return refuse(Frame::Integer(0));
    }
    (
        vec![expiring_op(key, value.to_vec(), at, now)],
        Frame::Integer(1),
    )
}

/// What `TTL`, `PTTL`, `EXPIRETIME` and `PEXPIRETIME` answer for `entry`:
/// -2 if there is no key, -1 if it never expires, else the time left (or
/// the deadline itself), rounded to the nearest second unless in ms.
pub fn ttl(entry: Option<Stored>, unit: Unit, absolute: bool) -> Frame {
    let Some(entry) = entry else {
        return Frame::Integer(-2);
    };
    let Some(at) = entry.expires_at else {
        return Frame::Integer(-1);
    };
    let ms = if absolute {
        at
    } else {
        at.saturating_sub(now_ms())
    };
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Frame::Integer(match unit {
        Unit::Millis => ms,
        Unit::Seconds => ms.saturating_add(500) / 1000,
    })
}

/// `SETEX key seconds value` and `PSETEX key ms value`: `OK`.
pub fn setex(key: &Bytes, when: &Bytes, value: &Bytes, unit: Unit) -> Plan {
    let now = now_ms();
    let command = match unit {
        Unit::Seconds => "setex",
        Unit::Millis => "psetex",
    };
    match option_deadline(when, unit, Base::Now, command, now) {
        Ok(at) => (vec![expiring_op(key, value.to_vec(), at, now)], super::ok()),
        Err(refusal) => (Vec::new(), refusal),
    }
}

/// `PERSIST key`: 1 if the key's deadline was removed, 0 if it had none or
/// is missing.
pub fn persist(view: &dyn View, key: &Bytes) -> Plan {
    match view.entry(key) {
        Some(Stored {
            value,
            expires_at: Some(_),
        }) => (vec![put_op(key, value.to_vec(), None)], Frame::Integer(1)),
        _ => (Vec::new(), Frame::Integer(0)),
    }
}

/// `GETEX key [EX|PX|EXAT|PXAT n | PERSIST]`: the value (nil if missing),
/// with its deadline changed as asked.
pub fn getex(view: &dyn View, key: &Bytes, options: &[Bytes]) -> Plan {
    /// What `GETEX` was asked to do to the deadline.
    enum Change<'a> {
        Keep,
        Set(Unit, Base, &'a Bytes),
        Persist,
    }
    // As Redis: the options' syntax first (one deadline; PERSIST may
    // repeat but not join one), then the key, then the deadline's number.
    let mut change = Change::Keep;
    let mut args = options.iter();
    while let Some(option) = args.next() {
        let timed = match option.to_ascii_uppercase().as_slice() {
            b"EX" => Some((Unit::Seconds, Base::Now)),
            b"PX" => Some((Unit::Millis, Base::Now)),
            b"EXAT" => Some((Unit::Seconds, Base::Epoch)),
            b"PXAT" => Some((Unit::Millis, Base::Epoch)),
            b"PERSIST" if matches!(change, Change::Keep | Change::Persist) => {
                change = Change::Persist;
                continue;
            }
            _ => return (Vec::new(), error("syntax error")),
        };
        match (timed, &change, args.next()) {
            (Some((unit, base)), Change::Keep, Some(when)) => {
                change = Change::Set(unit, base, when)
            }
            _ => return (Vec::new(), error("syntax error")),
        }
    }
    let Some(Stored { value, expires_at }) = view.entry(key) else {
        return (Vec::new(), Frame::Null);
    };
    let now = now_ms();
    let ops = match change {
        Change::Set(unit, base, when) => match option_deadline(when, unit, base, "getex", now) {
            Ok(at) => vec![expiring_op(key, value.to_vec(), at, now)],
            Err(refusal) => return (Vec::new(), refusal),
        },
        Change::Persist if expires_at.is_some() => vec![put_op(key, value.to_vec(), None)],
        Change::Keep | Change::Persist => Vec::new(),
    };
    (ops, Frame::Bulk(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_overflow_where_redis_s_do() {
        assert_eq!(deadline(10, Unit::Seconds, Base::Now, 5), Some(10_005));
        assert_eq!(deadline(-3, Unit::Millis, Base::Epoch, 5), Some(-3));
        assert_eq!(
            deadline(i64::MAX / 999, Unit::Seconds, Base::Epoch, 0),
            None
        );
        assert_eq!(deadline(i64::MAX, Unit::Millis, Base::Now, 1), None);
        let now = 1_000;
        let arg = |s: &str| Bytes::from(s.to_string());
        assert!(option_deadline(&arg("0"), Unit::Seconds, Base::Now, "set", now).is_err());
        assert!(option_deadline(&arg("-1"), Unit::Millis, Base::Epoch, "set", now).is_err());
        assert!(option_deadline(&arg("x"), Unit::Millis, Base::Epoch, "set", now).is_err());
        assert_eq!(
            option_deadline(&arg("1"), Unit::Millis, Base::Epoch, "set", now),
            Ok(1)
        );
    }

    #[test]
    fn a_past_deadline_deletes() {
        assert_eq!(
            expiring_op(b"k", b"v".to_vec(), 10, 10),
            Op::Delete { key: b"k".to_vec() }
        );
        assert!(matches!(
            expiring_op(b"k", b"v".to_vec(), 11, 10),
            Op::SetExpiring { expires_at: 11, .. }
        ));
    }

    #[test]
    fn ttl_rounds_to_the_nearest_second() {
        let far = now_ms() + 10_400;
        let stored = |expires_at| {
            Some(Stored {
                value: Bytes::new(),
                expires_at,
            })
        };
        assert_eq!(ttl(None, Unit::Seconds, false), Frame::Integer(-2));
        assert_eq!(ttl(stored(None), Unit::Millis, false), Frame::Integer(-1));
        assert_eq!(
            ttl(stored(Some(far)), Unit::Seconds, false),
            Frame::Integer(10)
        );
        assert_eq!(
            ttl(stored(Some(12_345)), Unit::Millis, true),
            Frame::Integer(12_345)
        );
        assert_eq!(
            ttl(stored(Some(12_500)), Unit::Seconds, true),
            Frame::Integer(13)
        );
    }
}
