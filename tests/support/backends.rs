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
