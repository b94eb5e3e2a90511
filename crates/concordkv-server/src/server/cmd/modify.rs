//! Read-modify-write commands: `INCR`, `INCRBY`, `DECR`, `DECRBY`,
//! `INCRBYFLOAT`, `APPEND`, `SETNX`, `GETSET`, `GETDEL`, `RENAME`, and `SET`
//! with its options. As in Redis, changing a value in place (`INCR`,
//! `APPEND`) keeps the key's deadline, replacing it (`SET`, `GETSET`)
//! drops it unless `KEEPTTL`, and `RENAME` moves it. Each is a plan: from a [`View`] of the newest values it
//! computes the operations to log and the reply, without side effects, so
//! the same code runs alone (over every client's writes still in flight,
//! see `in_flight`: two concurrent `INCR`s never log the same value) and
//! inside `EXEC` (over the transaction's own earlier writes too).

use bytes::Bytes;

use super::expire::{expiring_op, option_deadline, Base, Unit};
use super::{error, ok};
use crate::server::db::View;
use crate::server::expiry::now_ms;
use crate::server::frame::{format_double, Frame};
use crate::server::in_flight::Stored;
use concordkv::Op;

/// What a plan logs, and its reply.
pub type Plan = (Vec<Op>, Frame);

pub fn not_an_integer() -> Frame {
    error("value is not an integer or out of range")
}

/// A Redis integer: decimal, canonical (no `+`, no leading zeros, no
/// spaces), within `i64`.
pub fn integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let n: i64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

/// A Redis float: what `strtold` reads whole, never NaN.
fn float(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.starts_with(char::is_whitespace) {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| !f.is_nan())
}

pub fn set_op(key: &[u8], value: Vec<u8>) -> Op {
    Op::Set {
        key: key.to_vec(),
        value,
    }
}

/// Sets `key` to `value` with the deadline `expires_at` (or none).
pub fn put_op(key: &[u8], value: Vec<u8>, expires_at: Option<u64>) -> Op {
    match expires_at {
        Some(expires_at) => Op::SetExpiring {
            key: key.to_vec(),
            value,
            expires_at,
        },
        None => set_op(key, value),
    }
}

/// `INCRBY key by` (and `INCR`, `DECR`, `DECRBY`): the new value.
pub fn incr_by(view: &dyn View, key: &Bytes, by: Option<&Bytes>, negate: bool) -> Plan {
    let by = match by.map(|b| integer(b)) {
        None => 1,
        Some(Some(by)) => by,
        Some(None) => return (Vec::new(), not_an_integer()),
    };
    let by = match (negate, by.checked_neg()) {
        (false, _) => by,
        (true, Some(negated)) => negated,
        (true, None) => return (Vec::new(), error("decrement would overflow")),
    };
    let old = view.entry(key);
    let current = match &old {
        None => 0,
        Some(old) => match integer(&old.value) {
            Some(n) => n,
            None => return (Vec::new(), not_an_integer()),
        },
    };
    let expires_at = old.and_then(|old| old.expires_at);
    match current.checked_add(by) {
        Some(n) => (
            vec![put_op(key, n.to_string().into_bytes(), expires_at)],
            Frame::Integer(n),
        ),
        None => (Vec::new(), error("increment or decrement would overflow")),
    }
}

/// `INCRBYFLOAT key by`: the new value, as a bulk string in either protocol.
pub fn incr_by_float(view: &dyn View, key: &Bytes, by: &Bytes) -> Plan {
    let Some(by) = float(by) else {
        return (Vec::new(), error("value is not a valid float"));
    };
    let old = view.entry(key);
    let current = match &old {
        None => 0.0,
        Some(old) => match float(&old.value) {
            Some(f) => f,
            None => return (Vec::new(), error("value is not a valid float")),
        },
    };
    let expires_at = old.and_then(|old| old.expires_at);
    let sum = current + by;
    if !sum.is_finite() {
        return (Vec::new(), error("increment would produce NaN or Infinity"));
    }
    let text = format_double(sum);
    (
        vec![put_op(key, text.clone().into_bytes(), expires_at)],
        Frame::text(text),
    )
}

/// `APPEND key value`: the new length.
pub fn append(view: &dyn View, key: &Bytes, value: &Bytes) -> Plan {
    let old = view.entry(key);
    let expires_at = old.as_ref().and_then(|old| old.expires_at);
    let mut new = old.map(|old| old.value.to_vec()).unwrap_or_default();
    new.extend_from_slice(value);
    let len = new.len() as i64;
    (vec![put_op(key, new, expires_at)], Frame::Integer(len))
}

/// `SETNX key value`: 1 if it set the key, 0 if the key existed.
pub fn setnx(view: &dyn View, key: &Bytes, value: &Bytes) -> Plan {
    match view.latest(key) {
        Some(_) => (Vec::new(), Frame::Integer(0)),
        None => (vec![set_op(key, value.to_vec())], Frame::Integer(1)),
    }
}

/// `GETSET key value`: the old value, or nil.
pub fn getset(view: &dyn View, key: &Bytes, value: &Bytes) -> Plan {
    let old = view.latest(key).map_or(Frame::Null, Frame::Bulk);
    (vec![set_op(key, value.to_vec())], old)
}

/// `GETDEL key`: the value, or nil; the key is gone.
pub fn getdel(view: &dyn View, key: &Bytes) -> Plan {
    match view.latest(key) {
        Some(old) => (vec![Op::Delete { key: key.to_vec() }], Frame::Bulk(old)),
        None => (Vec::new(), Frame::Null),
    }
}

/// `RENAME key newkey` (`OK`) and `RENAMENX key newkey` (1, or 0 if
/// `newkey` exists): the value moves, as one record.
pub fn rename(view: &dyn View, from: &Bytes, to: &Bytes, only_if_missing: bool) -> Plan {
    let done = || {
        if only_if_missing {
            Frame::Integer(1)
        } else {
            ok()
        }
    };
    let Some(Stored { value, expires_at }) = view.entry(from) else {
        return (Vec::new(), error("no such key"));
    };
    if from == to {
        let reply = if only_if_missing {
            Frame::Integer(0)
        } else {
            ok()
        };
        return (Vec::new(), reply);
    }
    if only_if_missing && view.latest(to).is_some() {
        return (Vec::new(), Frame::Integer(0));
    }
    (
        vec![
            Op::Delete { key: from.to_vec() },
            put_op(to, value.to_vec(), expires_at),
        ],
        done(),
    )
}

/// What `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT n|KEEPTTL]` asks for.
#[derive(Default)]
struct SetOptions {
    only_if_missing: bool,
    only_if_present: bool,
    get: bool,
    keep_ttl: bool,
    /// The deadline asked for, in milliseconds since the epoch.
    deadline: Option<i64>,
}

/// Reads the options as Redis does: conflicting or incomplete ones are a
/// syntax error, checked before the deadline's number is.
fn set_options(options: &[Bytes], now: u64) -> Result<SetOptions, Frame> {
    let mut parsed = SetOptions::default();
    let mut timed: Option<(Unit, Base, &Bytes)> = None;
    let mut args = options.iter();
    while let Some(option) = args.next() {
        let upper = option.to_ascii_uppercase();
        let unit_base = match upper.as_slice() {
            b"EX" => Some((Unit::Seconds, Base::Now)),
            b"PX" => Some((Unit::Millis, Base::Now)),
            b"EXAT" => Some((Unit::Seconds, Base::Epoch)),
            b"PXAT" => Some((Unit::Millis, Base::Epoch)),
            _ => None,
        };
        if let Some((unit, base)) = unit_base {
            match args.next() {
                Some(when) if timed.is_none() && !parsed.keep_ttl => {
                    timed = Some((unit, base, when));
                }
                _ => return Err(error("syntax error")),
            }
            continue;
        }
        match upper.as_slice() {
            b"NX" if !parsed.only_if_present => parsed.only_if_missing = true,
            b"XX" if !parsed.only_if_missing => parsed.only_if_present = true,
            b"GET" => parsed.get = true,
            b"KEEPTTL" if timed.is_none() => parsed.keep_ttl = true,
            _ => return Err(error("syntax error")),
        }
    }
    if let Some((unit, base, when)) = timed {
        parsed.deadline = Some(option_deadline(when, unit, base, "set", now)?);
    }
    Ok(parsed)
}

/// `SET key value` with options: `OK` (or with `GET` the old value) if it
/// set the key, nil if `NX`/`XX` held it back.
pub fn set(view: &dyn View, key: &Bytes, value: &Bytes, options: &[Bytes]) -> Plan {
    let now = now_ms();
    let options = match set_options(options, now) {
        Ok(options) => options,
        Err(refusal) => return (Vec::new(), refusal),
    };
    let old = view.entry(key);
    let allowed =
        !(options.only_if_missing && old.is_some() || options.only_if_present && old.is_none());
    let op = match (options.deadline, options.keep_ttl) {
        (Some(at), _) => expiring_op(key, value.to_vec(), at, now),
        (None, true) => put_op(
            key,
            value.to_vec(),
            old.as_ref().and_then(|old| old.expires_at),
        ),
        (None, false) => set_op(key, value.to_vec()),
    };
    let reply = match (options.get, allowed) {
        (true, _) => old.map_or(Frame::Null, |old| Frame::Bulk(old.value)),
        (false, true) => ok(),
        (false, false) => Frame::Null,
    };
    let ops = if allowed { vec![op] } else { Vec::new() };
    (ops, reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_are_read_as_redis_reads_them() {
        for (text, n) in [
            ("0", Some(0)),
            ("-12", Some(-12)),
            ("9223372036854775807", Some(i64::MAX)),
        ] {
            assert_eq!(integer(text.as_bytes()), n, "{text}");
        }
        for bad in [
            "",
            "+1",
            "01",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
            "abc",
            "-0",
        ] {
            assert_eq!(integer(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(float(b"1.5"), Some(1.5));
        assert_eq!(float(b"3e2"), Some(300.0));
        for bad in ["", " 1", "nan", "1.0.0", "x"] {
            assert_eq!(float(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn set_options_conflict_as_in_redis() {
        let opts = |o: &[&str]| set_options(&crate::server::args(o), 1_000);
        assert!(opts(&["NX", "XX"]).is_err());
        assert!(opts(&["nx", "get", "keepttl"]).is_ok());
        assert_eq!(opts(&["EX", "10"]).map(|o| o.deadline), Ok(Some(11_000)));
        assert_eq!(opts(&["pxat", "5"]).map(|o| o.deadline), Ok(Some(5)));
        for bad in [
            &["EX", "10", "PX", "5"][..],
            &["EX", "10", "KEEPTTL"],
            &["KEEPTTL", "EX", "10"],
            &["EX"],
            &["EX", "0"],
            &["EX", "-1"],
            &["EX", "ten"],
            &["bogus"],
        ] {
            assert!(opts(bad).is_err(), "{bad:?}");
        }
    }
}
