//! A small connection pool, so concurrent store calls run side by side.
//!
//! Written here rather than pulled in: the store needs only "lend a
//! connection, take it back, open a new one when all are busy, forget closed
//! ones", and that is a semaphore plus a stack. A connection is returned
//! to the pool when its [`PooledClient`] drops; one that was closed (server
//! restart, network loss) is dropped instead, so the next call reconnects.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError};

use pgtrail_connect::{ConnectConfig, ConnectError};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

/// Lends out up to `max_size` connections made from one configuration.
pub(super) struct Pool {
    config: ConnectConfig,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

impl Pool {
    /// A pool that opens connections lazily, at most `max_size` at once.
    pub(super) fn new(config: ConnectConfig, max_size: usize) -> Self {
        Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_size),
        }
    }

    /// An open connection: an idle one, or a new one when none is idle.
    /// Waits while `max_size` connections are lent out.
    pub(super) async fn get(&self) -> Result<PooledClient<'_>, ConnectError> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        while let Some(client) = self.take_idle() {
            if !client.is_closed() {
                return Ok(PooledClient {
                    client: Some(client),
                    pool: self,
                    _permit: permit,
                });
            }
        }
        let client = self.config.connect().await?;
        Ok(PooledClient {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }

    fn take_idle(&self) -> Option<Client> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn give_back(&self, client: Client) {
        if !client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(client);
        }
    }
}

/// A connection borrowed from a [`Pool`]; returned to it on drop.
pub(super) struct PooledClient<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Deref for PooledClient<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the client is present until drop")
    }
}

impl DerefMut for PooledClient<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("the client is present until drop")
    }
}

impl Drop for PooledClient<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool.give_back(client);
        }
    }
}
