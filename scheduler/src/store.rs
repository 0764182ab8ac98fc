//! The durable state: SQLite in WAL mode under the data directory.
//!
//! Four tables: `functions` (one row per function: `$LATEST`, aliases, tags, concurrency, as
//! JSON), `versions` (one row per published version), `layers` (one row per layer name ever
//! published, holding its next version number, kept after its versions are deleted so numbers
//! are never reused) and `layer_versions` (one row per live layer version). Every change is one transaction with
//! `synchronous=FULL`, committed before the control plane answers the client, so anything a
//! client saw acknowledged survives `kill -9` of the daemon (and a power cut). Code lives in the
//! content-addressed [`crate::code::CodeStore`], written and synced before the row naming it.

use std::path::Path;

use rusqlite::{params, Connection};

use crate::api::model::{FunctionRecord, LayerRecord, LayerVersionRecord, VersionConfig};

/// The store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row that does not decode.
    #[error("state database: row for {what} does not decode: {source}")]
    Decode {
        /// Which row.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The state database.
#[derive(Debug)]
pub(crate) struct Store {
    db: Connection,
}

impl Store {
    /// Opens (creating) `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS functions (
                 name TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS versions (
                 name TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 config TEXT NOT NULL,
                 PRIMARY KEY (name, version)
             );
             CREATE TABLE IF NOT EXISTS layers (
                 name TEXT PRIMARY KEY,
                 next_version INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS layer_versions (
                 name TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 record TEXT NOT NULL,
                 PRIMARY KEY (name, version)
             );",
        )?;
        Ok(Self { db })
    }

    /// Every function, with its versions.
    pub(crate) fn load(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        let mut functions = Vec::new();
        let mut rows = self
            .db
            .prepare("SELECT name, record FROM functions ORDER BY name")?;
        let decoded =
            rows.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in decoded {
            let (name, text) = row?;
            let record: FunctionRecord =
                serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                    what: name.clone(),
                    source,
                })?;
            functions.push(record);
        }
        let mut versions = self
            .db
            .prepare("SELECT version, config FROM versions WHERE name = ?1 ORDER BY version")?;
        for record in &mut functions {
            let rows = versions.query_map([&record.name], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (n, text) = row?;
                let config: VersionConfig =
                    serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                        what: format!("{}:{n}", record.name),
                        source,
                    })?;
                record
                    .versions
                    .insert(u64::try_from(n).unwrap_or(0), config);
            }
        }
        Ok(functions)
    }

    /// Every layer, with its live versions.
    pub(crate) fn load_layers(&self) -> Result<Vec<LayerRecord>, StoreError> {
        let mut layers = Vec::new();
        let mut rows = self
            .db
            .prepare("SELECT name, next_version FROM layers ORDER BY name")?;
        let decoded = rows.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in decoded {
            let (name, next) = row?;
            layers.push(LayerRecord {
                name,
                versions: std::collections::BTreeMap::new(),
                next_version: u64::try_from(next).unwrap_or(1),
            });
        }
        let mut versions = self.db.prepare(
            "SELECT version, record FROM layer_versions WHERE name = ?1 ORDER BY version",
        )?;
        for layer in &mut layers {
            let rows = versions.query_map([&layer.name], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (n, text) = row?;
                let record: LayerVersionRecord =
                    serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                        what: format!("layer {}:{n}", layer.name),
                        source,
                    })?;
                layer.versions.insert(u64::try_from(n).unwrap_or(0), record);
            }
        }
        Ok(layers)
    }

    /// Writes a new layer version and the layer's next version number, in one transaction.
    pub(crate) fn put_layer_version(
        &mut self,
        layer: &LayerRecord,
        version: &LayerVersionRecord,
    ) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO layers (name, next_version) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET next_version = excluded.next_version",
            params![
                layer.name,
                i64::try_from(layer.next_version).unwrap_or(i64::MAX)
            ],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO layer_versions (name, version, record) VALUES (?1, ?2, ?3)",
            params![
                layer.name,
                i64::try_from(version.version).unwrap_or(i64::MAX),
                Self::encode(version)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes one layer version (the layer's row, and so its version counter, stays).
    pub(crate) fn delete_layer_version(&mut self, name: &str, n: u64) -> Result<(), StoreError> {
        self.db.execute(
            "DELETE FROM layer_versions WHERE name = ?1 AND version = ?2",
            params![name, i64::try_from(n).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    fn encode(record: &impl serde::Serialize) -> String {
        serde_json::to_string(record).unwrap_or_default()
    }

    /// Writes `record`'s row and, if given, one of its versions' rows, in one transaction.
    pub(crate) fn put(
        &mut self,
        record: &FunctionRecord,
        new_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO functions (name, record) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![record.name, Self::encode(record)],
        )?;
        if let Some(n) = new_version {
            if let Some(config) = record.versions.get(&n) {
                tx.execute(
                    "INSERT OR REPLACE INTO versions (name, version, config) VALUES (?1, ?2, ?3)",
                    params![
                        record.name,
                        i64::try_from(n).unwrap_or(i64::MAX),
                        Self::encode(config)
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes version `n` and rewrites the function's row, in one transaction.
    pub(crate) fn delete_version(
        &mut self,
        record: &FunctionRecord,
        n: u64,
    ) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "DELETE FROM versions WHERE name = ?1 AND version = ?2",
            params![record.name, i64::try_from(n).unwrap_or(i64::MAX)],
        )?;
        tx.execute(
            "UPDATE functions SET record = ?2 WHERE name = ?1",
            params![record.name, Self::encode(record)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a function and its versions.
    pub(crate) fn delete_function(&mut self, name: &str) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute("DELETE FROM versions WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM functions WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a function row exists (for tests).
    #[cfg(test)]
    fn exists(&self, name: &str) -> bool {
        use rusqlite::OptionalExtension;
        self.db
            .query_row(
                "SELECT 1 FROM functions WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()
            .ok()
            .flatten()
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(version: &str) -> VersionConfig {
        VersionConfig {
            version: version.into(),
            runtime: "provided.al2023".into(),
            handler: "echo".into(),
            role: "arn:aws:iam::000000000000:role/r".into(),
            description: String::new(),
            memory_size: 128,
            timeout: 3,
            environment: BTreeMap::from([("A".into(), "1".into())]),
            ephemeral_storage: 512,
            code_sha256_hex: "00".repeat(32),
            code_sha256: "x".into(),
            code_size: 1,
            last_modified: "now".into(),
            revision_id: "r".into(),
            layers: Vec::new(),
            snap_start: "None".into(),
        }
    }

    #[test]
    fn round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut record = FunctionRecord {
            name: "f".into(),
            latest: config("$LATEST"),
            versions: BTreeMap::new(),
            aliases: BTreeMap::new(),
            tags: BTreeMap::from([("team".into(), "a".into())]),
            reserved: Some(5),
            provisioned: BTreeMap::new(),
            next_version: 2,
        };
        record.versions.insert(1, config("1"));
        record.latest.layers.push(crate::api::model::LayerRef {
            arn: "arn:aws:lambda:us-east-1:000000000000:layer:l:1".into(),
            code_sha256_hex: "11".repeat(32),
            code_size: 9,
        });
        {
            let mut store = Store::open(&path).unwrap();
            store.put(&record, Some(1)).unwrap();
            store
                .put(
                    &FunctionRecord {
                        name: "g".into(),
                        ..record.clone()
                    },
                    None,
                )
                .unwrap();
            store.delete_function("g").unwrap();
            assert!(!store.exists("g"));
        }
        let store = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded, vec![record.clone()]);
        let mut store = store;
        record.versions.remove(&1);
        store.delete_version(&record, 1).unwrap();
        assert!(store.load().unwrap()[0].versions.is_empty());
    }

    #[test]
    fn rows_written_before_layers_still_decode() {
        let mut row = serde_json::to_value(config("1")).unwrap();
        row.as_object_mut().unwrap().remove("layers");
        let decoded: VersionConfig = serde_json::from_value(row).unwrap();
        assert_eq!(decoded, config("1"));
    }

    #[test]
    fn layers_round_trip_and_keep_their_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let version = |n: u64| LayerVersionRecord {
            version: n,
            description: format!("v{n}"),
            license_info: (n == 2).then(|| "MIT".into()),
            compatible_runtimes: Some(vec!["python3.12".into()]),
            compatible_architectures: None,
            created_date: "now".into(),
            code_sha256_hex: "22".repeat(32),
            code_sha256: "y".into(),
            code_size: 3,
        };
        let mut layer = LayerRecord {
            name: "l".into(),
            versions: std::collections::BTreeMap::new(),
            next_version: 1,
        };
        {
            let mut store = Store::open(&path).unwrap();
            for n in 1..=2 {
                layer.versions.insert(n, version(n));
                layer.next_version = n + 1;
                store.put_layer_version(&layer, &version(n)).unwrap();
            }
            store.delete_layer_version("l", 1).unwrap();
            store.delete_layer_version("l", 2).unwrap();
            store.delete_layer_version("absent", 1).unwrap();
            layer.versions.remove(&1);
            layer.versions.remove(&2);
            layer.versions.insert(3, version(3));
            layer.next_version = 4;
            store.put_layer_version(&layer, &version(3)).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load_layers().unwrap(), vec![layer]);
    }
}
