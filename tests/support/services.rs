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

/// The throwaway Redis Cluster (three masters): its nodes' URLs.
#[allow(dead_code)]
pub fn redis_cluster() -> seatwarden::redis_link::RedisTarget {
    let urls = required_env("SEATWARDEN_TEST_REDIS_CLUSTER_URLS");
    seatwarden::redis_link::RedisTarget::Cluster(urls.split(',').map(str::to_owned).collect())
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

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A redis-server of a test's own, on a free port, killed on drop: for
/// tests that take Redis away from a running server.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = Self {
            port,
            child: None,
            dir,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the server, as a crash or a network cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
