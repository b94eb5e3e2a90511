//! `AUTH`: with `server.requirepass` set, a connection runs nothing but
//! `AUTH`, `HELLO … AUTH`, `RESET` and `QUIT` until it gives the password. Only the `default` user
//! exists, as in a Redis without ACLs. The password is compared in constant
//! time, so the reply's timing tells nothing about how much of a guess was
//! right, and it is never logged.

use crate::server::frame::Frame;
use bytes::Bytes;
use subtle::ConstantTimeEq;

use crate::server::cmd::{error, ok};
use concordkv::Secret;

/// The reply to any other command before authentication.
pub fn noauth() -> Frame {
    Frame::Error("NOAUTH Authentication required.".into())
}

fn wrongpass() -> Frame {
    Frame::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// Whether a command may run before authentication.
pub fn allowed_before_auth(command: &[u8]) -> bool {
    [&b"AUTH"[..], b"HELLO", b"RESET", b"QUIT"]
        .iter()
        .any(|c| c.eq_ignore_ascii_case(command))
}

/// Runs `AUTH [username] password` (`rest` is what follows `AUTH`) against
/// the configured password; returns the reply and whether the connection is
/// now authenticated.
pub fn auth(password: &Secret, rest: &[Bytes]) -> (Frame, bool) {
    let (user, given) = match rest {
        [given] => (None, given),
        [user, given] => (Some(user), given),
        [] => return (error("wrong number of arguments for 'auth' command"), false),
        _ => return (error("syntax error"), false),
    };
    let default_user = user.is_none_or(|u| u.as_ref() == b"default");
    if password.is_empty() {
        // The default user needs no password; `AUTH <password>` alone is
        // then a misconfiguration worth telling the client about.
        return match (user, default_user) {
            (None, _) => (
                error(
                    "AUTH <password> called without any password configured for the default \
                     user. Are you sure your configuration is correct?",
                ),
                false,
            ),
            (Some(_), true) => (ok(), true),
            (Some(_), false) => (wrongpass(), false),
        };
    }
    let matches: bool = password.expose().as_bytes().ct_eq(given.as_ref()).into();
    if default_user && matches {
        (ok(), true)
    } else {
        (wrongpass(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::args;

    #[test]
    fn the_right_password_authenticates_in_both_forms() {
        let pw = Secret::new("hunter2");
        assert_eq!(auth(&pw, &args(&["hunter2"])), (ok(), true));
        assert_eq!(auth(&pw, &args(&["default", "hunter2"])), (ok(), true));
    }

    #[test]
    fn wrong_passwords_and_users_are_refused() {
        let pw = Secret::new("hunter2");
        for wrong in [
            args(&["hunter"]),
            args(&["hunter22"]),
            args(&[""]),
            args(&["alice", "hunter2"]),
        ] {
            assert_eq!(auth(&pw, &wrong), (wrongpass(), false), "{wrong:?}");
        }
        assert!(!auth(&pw, &args(&["a", "b", "c"])).1);
    }

    #[test]
    fn auth_without_a_configured_password_is_redis_s_error() {
        let (reply, authed) = auth(&Secret::default(), &args(&["anything"]));
        assert!(!authed);
        assert!(
            matches!(&reply, Frame::Error(e) if e.starts_with("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")),
            "{reply:?}"
        );
    }
}
