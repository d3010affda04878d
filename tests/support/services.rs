//! Access to the throwaway Redis and PostgreSQL servers started by
//! `scripts/services.sh`.

use sqlx::Connection;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the test suite with scripts/test.sh, which starts real Redis and PostgreSQL servers")
    })
}

/// URL of the throwaway Redis server. Tests isolate themselves by using
/// fresh organization ids, which every ledger key is scoped to.
pub fn redis_url() -> String {
    required_env("SEATWARDEN_TEST_REDIS_URL")
}

/// Creates a fresh, empty PostgreSQL database and returns its URL, so that
/// tests never see each other's rows.
pub async fn fresh_postgres_db() -> String {
    let admin = required_env("SEATWARDEN_TEST_PG_URL");
    let name = format!("sw_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("admin URL has a database");
    format!("{base}/{name}")
}
