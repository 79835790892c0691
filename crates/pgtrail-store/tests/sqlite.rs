//! Backend-specific tests of the SQLite store (owned by the SQLite backend work).
