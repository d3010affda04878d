//! The store backends every conformance suite runs on: SQLite on a file,
//! SQLite in memory, and PostgreSQL on a fresh database of the throwaway
//! server from `scripts/services.sh`.

use std::sync::Arc;

use seatwarden::store::postgres::PostgresStore;
use seatwarden::store::sqlite::SqliteStore;
use seatwarden_actors::ports::Store;

/// Pool size of the PostgreSQL store under test.
pub const PG_CONNECTIONS: u32 = 8;

/// A store under test, and whatever must live as long as it.
pub struct Subject {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// SQLite on a file in a fresh temporary directory; the file sits in a
/// sub-directory that does not exist yet, which `connect` must create.
pub async fn sqlite_file() -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/data/seatwarden.db", dir.path().display());
    let store = SqliteStore::connect(&url).await.expect("open SQLite file");
    Subject {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

pub async fn sqlite_memory() -> Subject {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open in-memory SQLite");
    Subject {
        store: Arc::new(store),
        _dir: None,
    }
}

pub async fn postgres() -> Subject {
    let url = super::services::fresh_postgres_db().await;
    let store = PostgresStore::connect(&url, PG_CONNECTIONS)
        .await
        .expect("connect to the test PostgreSQL");
    Subject {
        store: Arc::new(store),
        _dir: None,
    }
}

/// Generates, for each backend, one `#[tokio::test]` per check, named by
/// the sentence on the left: `sqlite::<sentence>`, `sqlite_memory::<sentence>`
/// and `postgres::<sentence>`. Each check is an `async fn(Arc<dyn Store>)`
/// of the calling test crate.
#[macro_export]
macro_rules! store_conformance {
    ($($name:ident => $check:ident,)*) => {
        $crate::store_conformance!(@backend sqlite, sqlite_file, $($name => $check,)*);
        $crate::store_conformance!(@backend sqlite_memory, sqlite_memory, $($name => $check,)*);
        $crate::store_conformance!(@backend postgres, postgres, $($name => $check,)*);
    };
    (@backend $backend:ident, $open:ident, $($name:ident => $check:ident,)*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let subject = $crate::support::backends::$open().await;
                    super::$check(subject.store.clone()).await;
                }
            )*
        }
    };
}

/// One database opened twice, as two nodes (or two processes sharing a
/// SQLite file) see it: what the suites of claimed work (outbox, webhook
/// inbox, deadlines) need to show that two claimers never share a row.
pub struct TwoNodes {
    pub store: Arc<dyn Store>,
    /// Another node's view of the same database.
    pub other: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// [`TwoNodes`] on a SQLite file in a fresh temporary directory.
pub async fn two_sqlite() -> TwoNodes {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/seatwarden.db", dir.path().display());
    let store = SqliteStore::connect(&url).await.expect("open SQLite file");
    let other = SqliteStore::connect(&url).await.expect("open SQLite again");
    TwoNodes {
        store: Arc::new(store),
        other: Arc::new(other),
        _dir: Some(dir),
    }
}

/// [`TwoNodes`] on a fresh PostgreSQL database.
pub async fn two_postgres() -> TwoNodes {
    let url = super::services::fresh_postgres_db().await;
    let connect = || async {
        PostgresStore::connect(&url, PG_CONNECTIONS)
            .await
            .expect("connect to the test PostgreSQL")
    };
    TwoNodes {
        store: Arc::new(connect().await),
        other: Arc::new(connect().await),
        _dir: None,
    }
}

/// Generates, for SQLite and PostgreSQL, one `#[tokio::test]` per check,
/// named by the sentence on the left: `sqlite::<sentence>` and
/// `postgres::<sentence>`. The calling test crate defines `async fn
/// sqlite() -> Subject` and `async fn postgres() -> Subject`, and each
/// check is an `async fn(&Subject)`.
#[macro_export]
macro_rules! subject_conformance {
    ($($name:ident => $check:ident,)*) => {
        $crate::subject_conformance!(@backend sqlite, $($name => $check,)*);
        $crate::subject_conformance!(@backend postgres, $($name => $check,)*);
    };
    (@backend $backend:ident, $($name:ident => $check:ident,)*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let subject = super::$backend().await;
                    super::$check(&subject).await;
                }
            )*
        }
    };
}
