//! Connecting to the audited database, the one way every part of trigger
//! capture does (install, track, seal, health).

use pgtrail_connect::ConnectConfig;
use tokio_postgres::Client;

use crate::{Error, Result};

/// Connects to `url` (libpq URL or key=value, with the `PG*` environment,
/// `~/.pgpass` and TLS as libpq would); the connection runs on a spawned task.
pub async fn connect(url: &str) -> Result<Client> {
    let mut config = ConnectConfig::parse(url).map_err(|source| Error::Connect {
        target: pgtrail_store::open::redact_url(url),
        source,
    })?;
    config.default_application_name("pgtrail");
    config.connect().await.map_err(|source| Error::Connect {
        target: config.describe(),
        source,
    })
}
