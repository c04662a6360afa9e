//! The sink's schema: versioned migrations, applied at connect in one transaction and
//! recorded in `liveops_schema`.

use tokio_postgres::Client;

use super::PostgresError;

/// Migrations in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[include_str!("migrations/v1.sql")];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database's schema up to [`SCHEMA_VERSION`]; refuses a newer one (a newer
/// engine migrated it: this one would misread it).
pub async fn migrate(client: &mut Client) -> Result<(), PostgresError> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS liveops_schema (
             version    int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         LOCK TABLE liveops_schema IN EXCLUSIVE MODE;",
    )
    .await?;
    // Two engines connecting at once: the lock makes the second wait and then see the
    // first's version.
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM liveops_schema", &[])
        .await?;
    let found: i32 = row.get(0);
    if found > SCHEMA_VERSION {
        return Err(PostgresError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO liveops_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "postgres mirror: schema migrated");
    }
    tx.commit().await?;
    Ok(())
}
