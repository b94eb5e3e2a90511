//! What the server knows about one connection, and the commands that
//! change it: `AUTH`, `HELLO` (protocol, authentication and name in one
//! handshake, as redis-py and redis-rs open every connection), `CLIENT`,
//! `RESET`, and the transaction's `MULTI`, `DISCARD`, `WATCH`, `UNWATCH`
//! (and the queueing between `MULTI` and `EXEC`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use crate::server::auth;
use crate::server::cmd::transaction::Transaction;
use crate::server::cmd::{error, ok};
use crate::server::db::View;
use crate::server::frame::{Frame, Protocol};
use crate::server::watch::{Watches, Watching};
use concordkv::Secret;

/// What Redis answers as its version in `HELLO` and `INFO`: clients gate
/// features on it, and the commands served behave as Redis 7.2's do.
pub const REDIS_VERSION: &str = "7.2.0";

/// One connection's settings.
pub struct Session {
    id: u64,
    peer: SocketAddr,
    since: Instant,
    protocol: Protocol,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_version: Option<Bytes>,
    authenticated: bool,
    password: Secret,
    /// Since `MULTI`.
    transaction: Option<Transaction>,
    max_transaction_bytes: usize,
    watching: Option<Watching>,
    watches: Rc<Watches>,
}

/// What `EXEC` runs: the queued commands, and the keys watched before.
pub type Exec = (Transaction, Option<Watching>);

impl Session {
    /// A new connection: RESP2, no name, authenticated only if no
    /// password is required.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        password: Secret,
        max_transaction_bytes: usize,
        watches: Rc<Watches>,
    ) -> Session {
        Session {
            id,
            peer,
            since: Instant::now(),
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_version: None,
            authenticated: password.is_empty(),
            password,
            transaction: None,
            max_transaction_bytes,
            watching: None,
            watches,
        }
    }

    /// For `EXEC`: the transaction to run, or the error to answer (no
    /// `MULTI`); either way the connection leaves the transaction and
    /// unwatches every key.
    pub fn exec(&mut self) -> Result<Exec, Frame> {
        let watching = self.watching.take();
        match self.transaction.take() {
            Some(transaction) => Ok((transaction, watching)),
            None => Err(error("EXEC without MULTI")),
        }
    }

    /// The protocol replies go out in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether `command` may run now: anything once authenticated, only the
    /// commands that authenticate or leave before.
    pub fn may_run(&self, command: &[u8]) -> bool {
        self.authenticated || auth::allowed_before_auth(command)
    }

    /// Runs `args` if it is a command about the connection; `None` if it
    /// is some other command.
    pub fn run(&mut self, args: &[Bytes], view: &dyn View) -> Option<Frame> {
        let (name, rest) = args.split_first()?;
        let name = name.to_ascii_uppercase();
        if let Some(transaction) = &mut self.transaction {
            // Between MULTI and EXEC everything else is queued.
            if !matches!(
                name.as_slice(),
                b"EXEC" | b"DISCARD" | b"MULTI" | b"WATCH" | b"QUIT" | b"RESET"
            ) {
                let spec = super::cmd::table::lookup(&name);
                if let Some(refusal) =
                    spec.and_then(|spec| super::cmd::read_only_refusal(view, spec))
                {
                    // Redis dooms the transaction on a refused command.
                    transaction.doom();
                    return Some(refusal);
                }
                return Some(transaction.queue(args.to_vec()));
            }
        }
        Some(match name.as_slice() {
            b"MULTI" if rest.is_empty() => match self.transaction {
                Some(_) => error("MULTI calls can not be nested"),
                None => {
                    self.transaction = Some(Transaction::new(self.max_transaction_bytes));
                    ok()
                }
            },
            b"DISCARD" if rest.is_empty() => match self.transaction.take() {
                Some(_) => {
                    self.watching = None;
                    ok()
                }
                None => error("DISCARD without MULTI"),
            },
            b"WATCH" if !rest.is_empty() => {
                if self.transaction.is_some() {
                    return Some(error("WATCH inside MULTI is not allowed"));
                }
                let watches = &self.watches;
                let watching = self
                    .watching
                    .get_or_insert_with(|| Watching::new(Rc::clone(watches)));
                for key in rest {
                    watching.add(key, view.entry(key).and_then(|e| e.expires_at));
                }
                ok()
            }
            b"UNWATCH" if rest.is_empty() => {
                self.watching = None;
                ok()
            }
            b"AUTH" => {
                let (reply, now) = auth::auth(&self.password, rest);
                self.authenticated |= now;
                reply
            }
            b"HELLO" => self.hello(rest),
            b"CLIENT" => self.client(rest),
            b"RESET" if rest.is_empty() => {
                self.protocol = Protocol::Resp2;
                self.name = None;
                self.transaction = None;
                self.watching = None;
                self.authenticated = self.password.is_empty();
                Frame::Simple("RESET")
            }
            _ => return None,
        })
    }

    /// `HELLO [protover [AUTH username password] [SETNAME name]]`: nothing
    /// changes unless every part is accepted.
    fn hello(&mut self, rest: &[Bytes]) -> Frame {
        let mut protocol = self.protocol;
        let (mut credentials, mut name) = (None, None);
        if let Some((version, mut options)) = rest.split_first() {
            protocol = match version.as_ref() {
                b"2" => Protocol::Resp2,
                b"3" => Protocol::Resp3,
                v if std::str::from_utf8(v).is_ok_and(|v| v.parse::<i64>().is_ok()) => {
                    return Frame::Error("NOPROTO unsupported protocol version".into());
                }
                _ => return error("Protocol version is not an integer or out of range"),
            };
            while let Some((option, after)) = options.split_first() {
                match (option.to_ascii_uppercase().as_slice(), after) {
                    (b"AUTH", [user, password, tail @ ..]) => {
                        credentials = Some([user.clone(), password.clone()]);
                        options = tail;
                    }
                    (b"SETNAME", [n, tail @ ..]) => {
                        name = Some(n.clone());
                        options = tail;
                    }
                    _ => {
                        return error(format!(
                            "Syntax error in HELLO option '{}'",
                            String::from_utf8_lossy(option)
                        ))
                    }
                }
            }
        }
        if let Some(credentials) = &credentials {
            let (reply, now) = auth::auth(&self.password, credentials);
            if !now {
                return reply;
            }
            self.authenticated = true;
        }
        if !self.authenticated {
            return Frame::Error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time"
                    .into(),
            );
        }
        if let Some(name) = name {
            if let Err(refusal) = check_name(&name) {
                return refusal;
            }
            self.name = (!name.is_empty()).then_some(name);
        }
        self.protocol = protocol;
        Frame::Map(vec![
            (Frame::text("server"), Frame::text("redis")),
            (Frame::text("version"), Frame::text(REDIS_VERSION)),
            (Frame::text("proto"), Frame::Integer(protocol.version())),
            (Frame::text("id"), Frame::Integer(self.id as i64)),
            (Frame::text("mode"), Frame::text("standalone")),
            (Frame::text("role"), Frame::text("master")),
            (Frame::text("modules"), Frame::Array(Vec::new())),
        ])
    }

    /// `CLIENT ID | SETNAME name | GETNAME | INFO | SETINFO attr value`.
    fn client(&mut self, rest: &[Bytes]) -> Frame {
        let Some((sub, args)) = rest.split_first() else {
            return error("wrong number of arguments for 'client' command");
        };
        match (sub.to_ascii_uppercase().as_slice(), args) {
            (b"ID", []) => Frame::Integer(self.id as i64),
            (b"GETNAME", []) => self.name.clone().map_or(Frame::Null, Frame::Bulk),
            (b"SETNAME", [name]) => match check_name(name) {
                Ok(()) => {
                    self.name = (!name.is_empty()).then(|| name.clone());
                    ok()
                }
                Err(refusal) => refusal,
            },
            (b"SETINFO", [attribute, value]) => {
                match attribute.to_ascii_uppercase().as_slice() {
                    b"LIB-NAME" => self.lib_name = Some(value.clone()),
                    b"LIB-VER" => self.lib_version = Some(value.clone()),
                    _ => {
                        return error(format!(
                            "Unrecognized option '{}'",
                            String::from_utf8_lossy(attribute)
                        ))
                    }
                }
                ok()
            }
            (b"INFO", []) => Frame::text(self.info_line()),
            _ => error(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    /// The connection as `CLIENT INFO` describes it (the fields this
    /// server tracks, in Redis's format).
    fn info_line(&self) -> String {
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        format!(
            "id={} addr={} name={} age={} db=0 multi=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            text(&self.name),
            self.since.elapsed().as_secs(),
            self.protocol.version(),
            text(&self.lib_name),
            text(&self.lib_version),
        )
    }
}

/// Redis's rule for client names: printable, no spaces.
fn check_name(name: &[u8]) -> Result<(), Frame> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(error(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::args;
    use crate::server::in_flight::Stored;

    /// A store with no keys, for the commands that read none.
    struct Empty;

    impl View for Empty {
        fn entry(&self, _: &[u8]) -> Option<Stored> {
            None
        }
    }

    fn session(password: &str) -> Session {
        let peer = "127.0.0.1:5000".parse().expect("address");
        Session::new(7, peer, Secret::new(password), 1 << 20, Rc::default())
    }

    fn field(map: &Frame, key: &str) -> Frame {
        let Frame::Map(pairs) = map else {
            panic!("not a map: {map:?}")
        };
        pairs
            .iter()
            .find(|(k, _)| *k == Frame::text(key))
            .map(|(_, v)| v.clone())
            .expect(key)
    }

    #[test]
    fn hello_switches_protocol_names_the_client_and_answers_the_server_map() {
        let mut s = session("");
        let reply = s
            .run(&args(&["HELLO", "3", "SETNAME", "worker-1"]), &Empty)
            .expect("ran");
        assert_eq!(field(&reply, "proto"), Frame::Integer(3));
        assert_eq!(field(&reply, "id"), Frame::Integer(7));
        assert_eq!(s.protocol(), Protocol::Resp3);
        assert_eq!(
            s.run(&args(&["CLIENT", "GETNAME"]), &Empty),
            Some(Frame::text("worker-1"))
        );
        let reply = s.run(&args(&["hello"]), &Empty).expect("ran");
        assert_eq!(field(&reply, "proto"), Frame::Integer(3));
        assert_eq!(
            s.run(&args(&["RESET"]), &Empty),
            Some(Frame::Simple("RESET"))
        );
        assert_eq!(s.protocol(), Protocol::Resp2);
        assert_eq!(
            s.run(&args(&["CLIENT", "GETNAME"]), &Empty),
            Some(Frame::Null)
        );
        assert_eq!(s.run(&args(&["GET", "k"]), &Empty), None);
    }

    #[test]
    fn a_refused_hello_changes_nothing() {
        let mut s = session("");
        for (bad, code) in [
            (&["HELLO", "4"][..], "NOPROTO"),
            (&["HELLO", "three"], "ERR Protocol version"),
            (
                &["HELLO", "3", "SETNAME"],
                "ERR Syntax error in HELLO option 'SETNAME'",
            ),
            (&["HELLO", "3", "SETNAME", "a b"], "ERR Client names cannot"),
            (&["HELLO", "3", "AUTH", "alice", "x"], "WRONGPASS"),
        ] {
            match s.run(&args(bad), &Empty) {
                Some(Frame::Error(e)) => assert!(e.starts_with(code), "{bad:?}: {e}"),
                other => panic!("{bad:?}: {other:?}"),
            }
            assert_eq!(s.protocol(), Protocol::Resp2, "{bad:?}");
        }
    }

    #[test]
    fn with_a_password_hello_authenticates_or_refuses() {
        let mut s = session("hunter2");
        assert!(!s.may_run(b"GET") && s.may_run(b"hello"));
        match s.run(&args(&["HELLO", "3"]), &Empty) {
            Some(Frame::Error(e)) => assert!(e.starts_with("NOAUTH HELLO must be called")),
            other => panic!("{other:?}"),
        }
        match s.run(&args(&["HELLO", "3", "AUTH", "default", "wrong"]), &Empty) {
            Some(Frame::Error(e)) => assert!(e.starts_with("WRONGPASS")),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.protocol(), Protocol::Resp2);
        let reply = s
            .run(&args(&["HELLO", "3", "AUTH", "default", "hunter2"]), &Empty)
            .expect("ran");
        assert_eq!(field(&reply, "proto"), Frame::Integer(3));
        assert!(s.may_run(b"GET"));
        s.run(&args(&["RESET"]), &Empty);
        assert!(!s.may_run(b"GET"));
    }

    #[test]
    fn client_reports_and_names_the_connection() {
        let mut s = session("");
        assert_eq!(
            s.run(&args(&["CLIENT", "ID"]), &Empty),
            Some(Frame::Integer(7))
        );
        assert_eq!(
            s.run(
                &args(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
                &Empty
            ),
            Some(ok())
        );
        assert_eq!(
            s.run(&args(&["CLIENT", "SETNAME", "w"]), &Empty),
            Some(ok())
        );
        let Some(Frame::Bulk(info)) = s.run(&args(&["CLIENT", "INFO"]), &Empty) else {
            panic!("no info")
        };
        let info = String::from_utf8_lossy(&info);
        assert!(
            info.starts_with("id=7 addr=127.0.0.1:5000 name=w ")
                && info.contains(" resp=2 lib-name=redis-py ")
                && info.ends_with('\n'),
            "{info}"
        );
        assert!(matches!(
            s.run(&args(&["CLIENT", "KILL", "x"]), &Empty),
            Some(Frame::Error(e)) if e.contains("Try CLIENT HELP")
        ));
    }
}
