//! `concordkv serve`: a Redis-protocol server (RESP2, and RESP3 after
//! `HELLO 3`) over the store.
//!
//! Connections and the WAL actor share the actix System's thread (unless
//! `wal.dedicated_writer_thread` gives the writer its own), like Redis's
//! single event loop; `fdatasync` runs on the sync thread, so parsing and
//! writing go on while a sync is in flight. Connections beyond
//! `server.max_clients` are told so and closed, and so are clients from
//! other hosts while protected mode is on (see [`protected_mode`]). SIGINT
//! or SIGTERM stops accepting, drains and syncs every acknowledged write,
//! and returns.

pub mod accept_backoff;
pub mod auth;
pub mod clients;
pub mod cmd;
pub mod connection;
pub mod cross_protocol;
pub mod cursors;
pub mod db;
pub mod expiry;
pub mod frame;
pub mod in_flight;
pub mod pattern;
pub mod protected_mode;
pub mod request;
pub mod session;
pub mod watch;

/// A request's arguments from text, for unit tests.
#[cfg(test)]
pub(crate) fn args(list: &[&str]) -> Vec<bytes::Bytes> {
    list.iter()
        .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};

use accept_backoff::AcceptBackoff;
use clients::Clients;
use concordkv::Store;
use concordkv::{ArchiveConfig, Config};
use connection::ConnectionSettings;
use db::{Db, Following};

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `server.listen` does not parse as `ip:port`.
    #[error("server.listen = {0:?} is not an address (expected ip:port)")]
    BadListen(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on server.listen = {addr}: {source}")]
    Listen {
        /// The address from `server.listen`.
        addr: SocketAddr,
        /// Why binding failed (address in use, permission denied, ...).
        #[source]
        source: std::io::Error,
    },
    /// Opening, running or shutting down the store failed.
    #[error(transparent)]
    Store(#[from] concordkv::Error),
}

/// Opens the store, serves until SIGINT or SIGTERM, then shuts down cleanly.
/// With `follow`, serves a read-only copy of that archive instead (see
/// `open_follower`). Must run inside an actix System.
pub async fn serve(config: Config, follow: Option<ArchiveConfig>) -> Result<(), ServeError> {
    let addr: SocketAddr = config
        .server
        .listen
        .parse()
        .map_err(|_| ServeError::BadListen(config.server.listen.clone()))?;
    let listener = listen(addr).map_err(|source| ServeError::Listen { addr, source })?;
    let (store, recovery, following) = match follow {
        Some(source) => {
            let (store, recovery, following) = open_follower(&config, source).await?;
            (store, recovery, Some(following))
        }
        None => {
            let (store, recovery) = Store::open(config.clone()).await?;
            (store, recovery, None)
        }
    };
    tracing::info!(
        records = recovery.replayed,
        keys = recovery.keys,
        last_seq = recovery.last_seq,
        segments = recovery.segments,
        elapsed_ms = recovery.elapsed.as_millis() as u64,
        "recovered the log"
    );
    let (db, background) = match following {
        // A follower deletes nothing itself: the deletions of expired keys
        // come from the store it follows.
        Some((following, follower)) => (Rc::new(Db::follower(store.clone(), following)), follower),
        None => {
            let db = Rc::new(Db::new(store.clone()));
            let purge = actix_rt::spawn(expiry::purge_expired(Rc::clone(&db)));
            (db, purge)
        }
    };
    tracing::info!(%addr, data_dir = %config.data_dir.display(), sync_mode = %config.wal.sync_mode, "serving RESP");

    protected_mode::warn_if_exposed(&config.server, addr);
    let clients = Clients::new(
        usize::try_from(config.server.max_total_client_buffer_bytes).unwrap_or(usize::MAX),
    );
    let max_clients = usize::try_from(config.server.max_clients).unwrap_or(usize::MAX);
    raise_open_file_limit(config.server.max_clients);
    let settings = Arc::new(ConnectionSettings::new(&config.server, &config.limits));
    let mut backoff = AcceptBackoff::default();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let (mut socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: the connection
                        // waits in the backlog, and retrying at once would
                        // spin; pause, longer while it goes on.
                        let (pause, first) = backoff.failed();
                        if first {
                            tracing::warn!(%e, "accept failed; retrying with growing pauses (up to 1 s) until it succeeds");
                        }
                        tokio::select! {
                            _ = &mut stop => break,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                };
                let failures = backoff.succeeded();
                if failures > 0 {
                    tracing::info!(failures, "accept works again");
                }
                if protected_mode::refuses(&config.server, peer.ip()) {
                    tracing::warn!(%peer, "refused a client from another host: protected mode is on and no password is set");
                    actix_rt::spawn(async move {
                        let _ = socket.write_all(protected_mode::DENIED).await;
                    });
                    continue;
                }
                if clients.len() >= max_clients {
                    actix_rt::spawn(async move {
                        let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
                    });
                    continue;
                }
                let _ = socket.set_nodelay(true);
                let db = Rc::clone(&db);
                let settings = Arc::clone(&settings);
                let slot = clients.register(peer);
                actix_rt::spawn(async move {
                    if let Err(e) = connection::serve_connection(socket, peer, db, settings, slot).await {
                        tracing::debug!(%peer, %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    tracing::info!("shutting down: draining and syncing acknowledged writes");
    drop(listener);
    background.abort();
    store.shutdown().await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Opens the local copy of the archive `source` for `serve --follow`:
/// restored from the archive first if `data_dir` holds no store yet, then
/// kept current by [`concordkv::archive::follow`] on a task of its own.
async fn open_follower(
    config: &Config,
    source: ArchiveConfig,
) -> Result<
    (
        Store,
        concordkv::Recovery,
        (Following, actix_rt::task::JoinHandle<()>),
    ),
    ServeError,
> {
    let mut local = config.clone();
    // The copy archives nothing: it is the archive's.
    local.archive.url.clear();
    if !local.data_dir.join("MANIFEST").exists() {
        tracing::info!(url = %source.url, data_dir = %local.data_dir.display(), "restoring the archive before following it");
        let report = concordkv::archive::restore(
            &source,
            &local.data_dir,
            concordkv::archive::RestoreTarget::Latest,
        )
        .await?;
        tracing::info!(
            last_seq = report.last_seq,
            objects = report.objects,
            bytes = report.bytes,
            "restored"
        );
    }
    let (store, recovery) = Store::open(local).await?;
    let status = Arc::new(concordkv::archive::FollowStatus::default());
    let following = Following {
        url: source.url.clone(),
        status: Arc::clone(&status),
    };
    let follower = actix_rt::spawn({
        let store = store.clone();
        async move {
            if let Err(e) = concordkv::archive::follow(store, source, status).await {
                tracing::error!(%e, "stopped following the archive; reads go on from the copy as it is");
            }
        }
    });
    Ok((store, recovery, (following, follower)))
}

/// Connections the kernel may hold for `accept` (capped by
/// `net.core.somaxconn`). The default of 128 overflows when a burst of
/// clients connects while the event loop is busy, and an overflowing
/// handshake can end in a reset the client only sees on its first write.
const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Descriptors kept beyond one per client: data files, listeners, the log.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft limit on open files toward `max_clients` plus what the
/// store itself needs (as Redis does): the common default of 1024 would
/// otherwise refuse clients long before `server.max_clients`.
fn raise_open_file_limit(max_clients: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = (max_clients + RESERVED_DESCRIPTORS).min(limit.rlim_max);
        if wanted > limit.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!(
                    current = limit.rlim_cur,
                    wanted,
                    "could not raise the open-file limit"
                );
                return;
            }
        }
        if wanted < max_clients + RESERVED_DESCRIPTORS {
            tracing::warn!(
                limit = wanted,
                max_clients,
                "the open-file hard limit allows fewer clients than server.max_clients"
            );
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use actix_rt::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = actix_rt::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(%e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = actix_rt::signal::ctrl_c().await;
        }
    }
}
