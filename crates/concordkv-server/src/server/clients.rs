//! The connected clients and the bytes their buffers hold. Each client's
//! input and output buffers are bounded one by one (`max_request_bytes`),
//! but thousands of clients each holding a large half-sent request could
//! still exhaust memory together; so, like Redis's `maxmemory-clients`, when
//! all buffers together exceed `server.max_total_client_buffer_bytes` the
//! clients holding the most are disconnected first until the total is under
//! the cap again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Every connected client, and the bytes they buffer together.
pub struct Clients {
    /// The cap on all buffers together (0: none).
    cap: usize,
    total: AtomicUsize,
    next_id: AtomicU64,
    connected: Mutex<HashMap<u64, Arc<Client>>>,
}

struct Client {
    peer: SocketAddr,
    buffered: AtomicUsize,
    evicted: AtomicBool,
    wake: Notify,
}

/// One connected client's entry; dropping it (when the connection ends)
/// removes the client and its bytes.
pub struct ClientSlot {
    clients: Arc<Clients>,
    id: u64,
    client: Arc<Client>,
}

impl Clients {
    /// No clients yet; `cap` bytes for all buffers together (0: no limit).
    pub fn new(cap: usize) -> Arc<Clients> {
        Arc::new(Clients {
            cap,
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            connected: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Client>>> {
        self.connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Clients connected now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes all clients' buffers hold together.
    pub fn buffered(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Registers a client connected from `peer`.
    pub fn register(self: &Arc<Clients>, peer: SocketAddr) -> ClientSlot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client {
            peer,
            buffered: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&client));
        ClientSlot {
            clients: Arc::clone(self),
            id,
            client,
        }
    }

    /// Disconnects the clients holding the most until the total is under the cap.
    fn evict_over_cap(&self) {
        let mut candidates: Vec<Arc<Client>> = self
            .lock()
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed))
            .cloned()
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.buffered.load(Ordering::Relaxed)));
        for client in candidates {
            let total = self.total.load(Ordering::Relaxed);
            if total <= self.cap {
                break;
            }
            if client.evicted.swap(true, Ordering::Relaxed) {
                continue;
            }
            // Its bytes no longer count: it is going, whatever it holds now.
            let bytes = client.buffered.swap(0, Ordering::Relaxed);
            self.total.fetch_sub(bytes, Ordering::Relaxed);
            tracing::warn!(
                peer = %client.peer,
                client_bytes = bytes,
                total_bytes = total,
                cap = self.cap,
                "all clients' buffers exceed server.max_total_client_buffer_bytes: \
                 disconnecting the client holding the most"
            );
            metrics::counter!("concordkv_clients_evicted_total").increment(1);
            client.wake.notify_one();
        }
    }
}

impl ClientSlot {
    /// The client's id, unique while the server runs (`CLIENT ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records that this client's buffers now hold `bytes`, disconnecting
    /// clients (maybe this one) if all of them together exceed the cap.
    pub fn set_buffered(&self, bytes: usize) {
        let client = &self.client;
        if client.evicted.load(Ordering::Relaxed) {
            return;
        }
        let before = client.buffered.swap(bytes, Ordering::Relaxed);
        let clients = &self.clients;
        let total = if bytes >= before {
            clients.total.fetch_add(bytes - before, Ordering::Relaxed) + (bytes - before)
        } else {
            clients.total.fetch_sub(before - bytes, Ordering::Relaxed) - (before - bytes)
        };
        if clients.cap != 0 && total > clients.cap {
            clients.evict_over_cap();
        }
    }

    /// Resolves once this client is to be disconnected to bring the total
    /// under the cap.
    pub async fn evicted(&self) {
        while !self.client.evicted.load(Ordering::Relaxed) {
            self.client.wake.notified().await;
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let bytes = self.client.buffered.swap(0, Ordering::Relaxed);
        self.clients.total.fetch_sub(bytes, Ordering::Relaxed);
        self.clients.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn over_the_cap_the_biggest_clients_go_first_until_under_it() {
        let clients = Clients::new(1000);
        let small = clients.register(peer(1));
        let big = clients.register(peer(2));
        let middle = clients.register(peer(3));
        small.set_buffered(200);
        big.set_buffered(500);
        middle.set_buffered(250);
        assert_eq!(clients.buffered(), 950);
        assert!(!big.client.evicted.load(Ordering::Relaxed));
        // 1,200 bytes: dropping the 500-byte client is enough.
        small.set_buffered(450);
        assert!(big.client.evicted.load(Ordering::Relaxed));
        assert!(!small.client.evicted.load(Ordering::Relaxed));
        assert!(!middle.client.evicted.load(Ordering::Relaxed));
        assert_eq!(clients.buffered(), 700);
        drop(big);
        assert_eq!((clients.len(), clients.buffered()), (2, 700));
    }

    #[test]
    fn without_a_cap_nobody_is_disconnected() {
        let clients = Clients::new(0);
        let a = clients.register(peer(1));
        a.set_buffered(usize::MAX / 2);
        assert!(!a.client.evicted.load(Ordering::Relaxed));
        a.set_buffered(0);
        drop(a);
        assert!(clients.is_empty());
    }
}
