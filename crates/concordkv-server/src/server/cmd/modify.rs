//! Read-modify-write commands: `INCR`, `INCRBY`, `DECR`, `DECRBY`,
//! `INCRBYFLOAT`, `APPEND`, `SETNX`, `GETSET`, `GETDEL`, and `SET` with
//! `NX`/`XX`/`GET`. Each is a plan: from a [`View`] of the newest values it
//! computes the operations to log and the reply, without side effects, so
//! the same code runs alone (over every client's writes still in flight,
//! see `in_flight`: two concurrent `INCR`s never log the same value) and
//! inside `EXEC` (over the transaction's own earlier writes too).

use bytes::Bytes;

use super::{error, ok};
use crate::server::db::View;
use crate::server::frame::{format_double, Frame};
use concordkv::Op;

/// What a plan logs, and its reply.
pub type Plan = (Vec<Op>, Frame);

fn not_an_integer() -> Frame {
    error("value is not an integer or out of range")
}

/// A Redis integer: decimal, canonical (no `+`, no leading zeros, no
/// spaces), within `i64`.
fn integer(bytes: &[u8]) -> Option<i64> {
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
    let current = match view.latest(key) {
        None => 0,
        Some(v) => match integer(&v) {
            Some(n) => n,
            None => return (Vec::new(), not_an_integer()),
        },
    };
    match current.checked_add(by) {
        Some(n) => (
            vec![set_op(key, n.to_string().into_bytes())],
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
    let current = match view.latest(key) {
        None => 0.0,
        Some(v) => match float(&v) {
            Some(f) => f,
            None => return (Vec::new(), error("value is not a valid float")),
        },
    };
    let sum = current + by;
    if !sum.is_finite() {
        return (Vec::new(), error("increment would produce NaN or Infinity"));
    }
    let text = format_double(sum);
    (
        vec![set_op(key, text.clone().into_bytes())],
        Frame::text(text),
    )
}

/// `APPEND key value`: the new length.
pub fn append(view: &dyn View, key: &Bytes, value: &Bytes) -> Plan {
    let mut new = view.latest(key).map(|v| v.to_vec()).unwrap_or_default();
    new.extend_from_slice(value);
    let len = new.len() as i64;
    (vec![set_op(key, new)], Frame::Integer(len))
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
    let Some(value) = view.latest(from) else {
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
            set_op(to, value.to_vec()),
        ],
        done(),
    )
}

/// What `SET key value [NX|XX] [GET] [KEEPTTL]` asks for.
#[derive(Default)]
struct SetOptions {
    only_if_missing: bool,
    only_if_present: bool,
    get: bool,
}

fn set_options(options: &[Bytes]) -> Result<SetOptions, Frame> {
    let mut parsed = SetOptions::default();
    for option in options {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" if !parsed.only_if_present => parsed.only_if_missing = true,
            b"XX" if !parsed.only_if_missing => parsed.only_if_present = true,
            b"GET" => parsed.get = true,
            // No key has a time to live, so keeping it changes nothing.
            b"KEEPTTL" => {}
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                return Err(error(format!(
                    "SET {} is not supported: keys do not expire in this version",
                    String::from_utf8_lossy(option).to_ascii_uppercase()
                )))
            }
            _ => return Err(error("syntax error")),
        }
    }
    Ok(parsed)
}

/// `SET key value` with options: `OK` (or with `GET` the old value) if it
/// set the key, nil if `NX`/`XX` held it back.
pub fn set(view: &dyn View, key: &Bytes, value: &Bytes, options: &[Bytes]) -> Plan {
    let options = match set_options(options) {
        Ok(options) => options,
        Err(refusal) => return (Vec::new(), refusal),
    };
    let old = view.latest(key);
    let allowed =
        !(options.only_if_missing && old.is_some() || options.only_if_present && old.is_none());
    let reply = match (options.get, allowed) {
        (true, _) => old.map_or(Frame::Null, Frame::Bulk),
        (false, true) => ok(),
        (false, false) => Frame::Null,
    };
    let ops = if allowed {
        vec![set_op(key, value.to_vec())]
    } else {
        Vec::new()
    };
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
        let opts = crate::server::args;
        assert!(set_options(&opts(&["NX", "XX"])).is_err());
        assert!(set_options(&opts(&["nx", "get", "keepttl"])).is_ok());
        assert!(set_options(&opts(&["EX", "10"])).is_err());
        assert!(set_options(&opts(&["bogus"])).is_err());
    }
}
