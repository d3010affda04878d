//! [`KeyStore`](seatwarden_actors::ports::KeyStore) on both backends,
//! written once: [`key_store_impl!`] emits the impl for a store type, given
//! the pool it reads through. Writes go through the store's `write_tx`
//! (SQLite's single writer, or a PostgreSQL transaction); the partial
//! unique index `signing_keys_one_active` makes "at most one active key"
//! hold even if two rotations race: the loser rolls back and tries again
//! (see `add_signing_key`).

/// The columns of a stored key, in the order of [`KeyRow`].
pub(crate) const SIGNING_KEYS: &str = "SELECT kid, algorithm, public_jwk, sealed_private, \
     created_at, active, retired_at FROM signing_keys ORDER BY created_at, kid";
pub(crate) const DEACTIVATE: &str = "UPDATE signing_keys SET active = $1 WHERE active = $2";
pub(crate) const INSERT_KEY: &str = "INSERT INTO signing_keys \
     (kid, algorithm, public_jwk, sealed_private, created_at, active) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kid) DO NOTHING RETURNING kid";
pub(crate) const KEY_STATE: &str = "SELECT active, retired_at FROM signing_keys WHERE kid = $1";
pub(crate) const RETIRE: &str = "UPDATE signing_keys SET retired_at = $2 WHERE kid = $1";
pub(crate) const RESEAL: &str = "UPDATE signing_keys SET sealed_private = $2 WHERE kid = $1";

/// A `signing_keys` row.
pub(crate) type KeyRow = (
    String,
    String,
    String,
    Vec<u8>,
    chrono::DateTime<chrono::Utc>,
    bool,
    Option<chrono::DateTime<chrono::Utc>>,
);

pub(crate) fn stored_key(row: KeyRow) -> seatwarden_actors::ports::StoredKey {
    let (kid, algorithm, public_jwk, sealed_private, created_at, active, retired_at) = row;
    seatwarden_actors::ports::StoredKey {
        kid,
        algorithm,
        public_jwk,
        sealed_private,
        created_at,
        active,
        retired_at,
    }
}

macro_rules! key_store_impl {
    ($store:ty, reader = $reader:ident) => {
        #[async_trait::async_trait]
        impl seatwarden_actors::ports::KeyStore for $store {
            async fn signing_keys(
                &self,
            ) -> Result<
                Vec<seatwarden_actors::ports::StoredKey>,
                seatwarden_actors::ports::StoreError,
            > {
                let rows: Vec<$crate::store::keys::KeyRow> =
                    sqlx::query_as($crate::store::keys::SIGNING_KEYS)
                        .fetch_all(&self.$reader)
                        .await
                        .map_err($crate::store::db_error)?;
                Ok(rows
                    .into_iter()
                    .map($crate::store::keys::stored_key)
                    .collect())
            }

            async fn add_signing_key(
                &self,
                key: &seatwarden_actors::ports::StoredKey,
                activate: bool,
            ) -> Result<bool, seatwarden_actors::ports::StoreError> {
                use $crate::store::Arg;
                // Two writers racing (nodes seeding an empty set with the
                // same key, or two rotations) can both deactivate nothing
                // and then collide on the one-active index. The loser
                // rolls back and tries again, and then sees the winner's
                // row: the same kid is `false`, another kid deactivates it.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let mut tx = self.write_tx().await?;
                    if activate {
                        sqlx::query($crate::store::keys::DEACTIVATE)
                            .arg(false)
                            .arg(true)
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::store::db_error)?;
                    }
                    let inserted: Result<Option<(String,)>, _> =
                        sqlx::query_as($crate::store::keys::INSERT_KEY)
                            .arg(key.kid.clone())
                            .arg(key.algorithm.clone())
                            .arg(key.public_jwk.clone())
                            .arg(key.sealed_private.clone())
                            .arg($crate::store::DbTime(key.created_at))
                            .arg(activate)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err($crate::store::db_error);
                    match inserted {
                        Err(seatwarden_actors::ports::StoreError::Conflict(_)) if attempt < 16 => {
                            continue;
                        }
                        Err(e) => return Err(e),
                        Ok(None) => return Ok(false),
                        Ok(Some(_)) => {
                            tx.commit().await.map_err($crate::store::db_error)?;
                            return Ok(true);
                        }
                    }
                }
            }

            async fn retire_signing_key(
                &self,
                kid: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<seatwarden_actors::ports::Retirement, seatwarden_actors::ports::StoreError>
            {
                use seatwarden_actors::ports::Retirement;
                use $crate::store::Arg;
                let mut tx = self.write_tx().await?;
                let state: Option<(bool, Option<chrono::DateTime<chrono::Utc>>)> =
                    sqlx::query_as($crate::store::keys::KEY_STATE)
                        .arg(kid.to_owned())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::store::db_error)?;
                let outcome = match state {
                    None => Retirement::NotFound,
                    Some((true, _)) => Retirement::Active,
                    Some((false, Some(_))) => Retirement::AlreadyRetired,
                    Some((false, None)) => {
                        sqlx::query($crate::store::keys::RETIRE)
                            .arg(kid.to_owned())
                            .arg($crate::store::DbTime(at))
                            .execute(&mut *tx)
                            .await
                            .map_err($crate::store::db_error)?;
                        Retirement::Retired
                    }
                };
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(outcome)
            }

            async fn reseal_signing_keys(
                &self,
                sealed: &[(String, Vec<u8>)],
            ) -> Result<(), seatwarden_actors::ports::StoreError> {
                use $crate::store::Arg;
                let mut tx = self.write_tx().await?;
                for (kid, private) in sealed {
                    let updated = sqlx::query($crate::store::keys::RESEAL)
                        .arg(kid.clone())
                        .arg(private.clone())
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::store::db_error)?;
                    if updated.rows_affected() != 1 {
                        // Dropping the transaction undoes the others.
                        return Err(seatwarden_actors::ports::StoreError::NotFound(format!(
                            "signing key {kid}"
                        )));
                    }
                }
                tx.commit().await.map_err($crate::store::db_error)?;
                Ok(())
            }
        }
    };
}

pub(crate) use key_store_impl;
