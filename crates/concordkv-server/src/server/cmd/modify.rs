//! Read-modify-write commands: `INCR`, `INCRBY`, `DECR`, `DECRBY`,
//! `INCRBYFLOAT`, `APPEND`, `SETNX`, `GETSET`, `GETDEL`, and `SET` with
//! `NX`/`XX`/`GET`. Each computes from the newest value of its key,
//! counting every client's writes still in flight (see `in_flight`), so two
//! concurrent `INCR`s never log the same value; its reply goes out once its
//! write is acknowledged, like any write's.

use bytes::Bytes;

use super::{error, ok, write_error, Reply};
use crate::server::db::Db;
use crate::server::frame::{format_double, Frame};
use concordkv::Op;

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

fn set_op(key: &[u8], value: Vec<u8>) -> Op {
    Op::Set {
        key: key.to_vec(),
        value,
    }
}

/// Runs `decide` as one read-modify-write and turns its outcome into the
/// reply: at once if nothing was logged, else once the log acknowledged.
async fn change(db: &Db, decide: impl FnMut(&Db) -> (Vec<Op>, Frame)) -> Reply {
    match db.change(decide).await {
        Ok((reply, None)) => Reply::Now(reply),
        Ok((reply, Some(pending))) => Reply::Later { pending, ok: reply },
        Err(e) => Reply::Now(write_error(&e)),
    }
}

/// `INCRBY key by` (and `INCR`, `DECR`, `DECRBY`): the new value.
pub async fn incr_by(db: &Db, key: &Bytes, by: Option<&Bytes>, negate: bool) -> Reply {
    let by = match by.map(|b| integer(b)) {
        None => 1,
        Some(Some(by)) => by,
        Some(None) => return Reply::Now(not_an_integer()),
    };
    let by = match (negate, by.checked_neg()) {
        (false, _) => by,
        (true, Some(negated)) => negated,
        (true, None) => return Reply::Now(error("decrement would overflow")),
    };
    change(db, |db| {
        let current = match db.latest(key) {
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
    })
    .await
}

/// `INCRBYFLOAT key by`: the new value, as a bulk string in either protocol.
pub async fn incr_by_float(db: &Db, key: &Bytes, by: &Bytes) -> Reply {
    let Some(by) = float(by) else {
        return Reply::Now(error("value is not a valid float"));
    };
    change(db, |db| {
        let current = match db.latest(key) {
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
    })
    .await
}

/// `APPEND key value`: the new length.
pub async fn append(db: &Db, key: &Bytes, value: &Bytes) -> Reply {
    change(db, |db| {
        let mut new = db.latest(key).map(|v| v.to_vec()).unwrap_or_default();
        new.extend_from_slice(value);
        let len = new.len() as i64;
        (vec![set_op(key, new)], Frame::Integer(len))
    })
    .await
}

/// `SETNX key value`: 1 if it set the key, 0 if the key existed.
pub async fn setnx(db: &Db, key: &Bytes, value: &Bytes) -> Reply {
    change(db, |db| match db.latest(key) {
        Some(_) => (Vec::new(), Frame::Integer(0)),
        None => (vec![set_op(key, value.to_vec())], Frame::Integer(1)),
    })
    .await
}

/// `GETSET key value`: the old value, or nil.
pub async fn getset(db: &Db, key: &Bytes, value: &Bytes) -> Reply {
    change(db, |db| {
        let old = db.latest(key).map_or(Frame::Null, Frame::Bulk);
        (vec![set_op(key, value.to_vec())], old)
    })
    .await
}

/// `GETDEL key`: the value, or nil; the key is gone.
pub async fn getdel(db: &Db, key: &Bytes) -> Reply {
    change(db, |db| match db.latest(key) {
        Some(old) => (vec![Op::Delete { key: key.to_vec() }], Frame::Bulk(old)),
        None => (Vec::new(), Frame::Null),
    })
    .await
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
pub async fn set(db: &Db, key: &Bytes, value: &Bytes, options: &[Bytes]) -> Reply {
    let options = match set_options(options) {
        Ok(options) => options,
        Err(refusal) => return Reply::Now(refusal),
    };
    change(db, |db| {
        let old = db.latest(key);
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
    })
    .await
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
        let opts = |list: &[&str]| -> Vec<Bytes> {
            list.iter()
                .map(|o| Bytes::copy_from_slice(o.as_bytes()))
                .collect()
        };
        assert!(set_options(&opts(&["NX", "XX"])).is_err());
        assert!(set_options(&opts(&["nx", "get", "keepttl"])).is_ok());
        assert!(set_options(&opts(&["EX", "10"])).is_err());
        assert!(set_options(&opts(&["bogus"])).is_err());
    }
}
