//! Protected mode: a server with no password that is reachable from other
//! hosts is an open database. While `server.protected_mode` is on and no
//! password is set, clients from anywhere but loopback are refused, as
//! Redis does.

use std::net::{IpAddr, SocketAddr};

use concordkv::ServerConfig;

/// What a refused client is told before the connection is closed.
pub const DENIED: &[u8] = b"-DENIED concordkv is running in protected mode because protected \
mode is enabled and no password is set for the default user. In this mode connections are only \
accepted from the loopback interface. If you want to connect from external computers, either \
set a password with server.requirepass (or CONCORDKV__SERVER__REQUIREPASS), or, if you are sure \
the port is not reachable by anyone you do not trust, set server.protected_mode = false and \
restart the server.\r\n";

/// Whether a client connecting from `peer` must be refused.
pub fn refuses(config: &ServerConfig, peer: IpAddr) -> bool {
    config.protected_mode && config.requirepass.is_empty() && !peer.to_canonical().is_loopback()
}

/// Logs, at start, a warning when the listener is reachable from other hosts.
pub fn warn_if_exposed(config: &ServerConfig, listen: SocketAddr) {
    if listen.ip().to_canonical().is_loopback() {
        return;
    }
    let password_set = !config.requirepass.is_empty();
    tracing::warn!(
        %listen,
        password_set,
        protected_mode = config.protected_mode,
        "server.listen is not a loopback address: other hosts can reach this server{}",
        match (password_set, config.protected_mode) {
            (true, _) => "; they must AUTH with server.requirepass",
            (false, true) => ", but without server.requirepass protected mode refuses every \
                              client not on loopback",
            (false, false) => " and NO PASSWORD IS SET: anyone who reaches the port can read \
                               and change all data",
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use concordkv::{Config, Secret};

    #[test]
    fn without_a_password_only_loopback_clients_are_served() {
        let config = Config::default().server;
        assert!(!refuses(&config, "127.0.0.1".parse().expect("ip")));
        assert!(!refuses(&config, "127.4.5.6".parse().expect("ip")));
        assert!(!refuses(&config, "::1".parse().expect("ip")));
        assert!(!refuses(&config, "::ffff:127.0.0.1".parse().expect("ip")));
        assert!(refuses(&config, "192.168.1.20".parse().expect("ip")));
        assert!(refuses(&config, "10.0.0.1".parse().expect("ip")));
        assert!(refuses(&config, "2001:db8::1".parse().expect("ip")));
        assert!(refuses(&config, "::ffff:10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn a_password_or_protected_mode_off_admits_remote_clients() {
        let remote: IpAddr = "192.168.1.20".parse().expect("ip");
        let mut config = Config::default().server;
        config.requirepass = Secret::new("pw");
        assert!(!refuses(&config, remote));
        config.requirepass = Secret::default();
        config.protected_mode = false;
        assert!(!refuses(&config, remote));
    }
}
