//! Backend-specific tests of the Postgres store (owned by the Postgres backend work).
