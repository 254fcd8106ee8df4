//! CQL text of every statement, built once from validated identifiers.
//!
//! Every statement the store runs on the data path is prepared from this text
//! (see `client.rs`); DDL runs only from `ensure_schema`.

use std::fmt::Write as _;

use crate::config::Replication;

impl Replication {
    /// The CQL map literal.
    pub(crate) fn to_cql(&self) -> String {
        match self {
            Self::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Self::NetworkTopology(dcs) => {
                let mut out = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, n) in dcs {
                    let _ = write!(out, ", '{dc}': {n}");
                }
                out.push('}');
                out
            }
        }
    }
}

/// The aggregation tile table of a row table: `<table>_tiles`.
pub(crate) fn tiles_table(table: &str) -> String {
    format!("{table}_tiles")
}

/// The statements of the aggregation tile table (`<keyspace>.<table>_tiles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TileStatements {
    pub(crate) create_table: String,
    /// Bind markers: entity_key, view, feature, start, seq, writer, cell, expires_at.
    pub(crate) insert: String,
    /// Bind markers: entity_key, view. Columns: feature, start, seq, writer,
    /// expires_at, cell — the whole partition, in clustering order.
    pub(crate) select: String,
    /// One row by its full primary key. Bind markers: entity_key, view,
    /// feature, start, seq, writer.
    pub(crate) delete_row: String,
    /// A whole partition. Bind markers: entity_key, view.
    pub(crate) delete_partition: String,
    /// No bind markers. Columns: entity_key, view. Paged full scan.
    pub(crate) scan: String,
}

impl TileStatements {
    /// Builds every statement. `keyspace` and `tiles_table(table)` must satisfy [`valid_identifier`].
    pub(crate) fn new(keyspace: &str, table: &str) -> Self {
        let t = format!("{keyspace}.{}", tiles_table(table));
        Self {
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (entity_key blob, view text, feature text, \
                 start bigint, seq bigint, writer bigint, cell blob, expires_at bigint, \
                 PRIMARY KEY ((entity_key, view), feature, start, seq, writer))"
            ),
            insert: format!(
                "INSERT INTO {t} (entity_key, view, feature, start, seq, writer, cell, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            select: format!(
                "SELECT feature, start, seq, writer, expires_at, cell FROM {t} \
                 WHERE entity_key = ? AND view = ?"
            ),
            delete_row: format!(
                "DELETE FROM {t} WHERE entity_key = ? AND view = ? AND feature = ? AND start = ? \
                 AND seq = ? AND writer = ?"
            ),
            delete_partition: format!("DELETE FROM {t} WHERE entity_key = ? AND view = ?"),
            scan: format!("SELECT entity_key, view FROM {t}"),
        }
    }
}

/// The statements of one (keyspace, table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statements {
    pub(crate) create_keyspace: String,
    pub(crate) create_table: String,
    /// Bind markers, by name: entity_key, view, payload, event_ts, created_ts,
    /// write_ts, [timestamp], [ttl]. Also writes deletion markers (nulls).
    pub(crate) insert: String,
    /// Bind markers: entity_key, view. Columns: payload, event_ts, created_ts, write_ts.
    pub(crate) select: String,
    /// Read-before-write. Bind markers: entity_key, view. Columns: event_ts, created_ts, write_ts.
    pub(crate) probe: String,
    /// Bind markers: entity_key, view. Its timestamp is sent as the request's
    /// default timestamp (protocol flag; same effect as `USING TIMESTAMP`).
    pub(crate) delete: String,
    /// No bind markers. Columns: entity_key, view, write_ts. Paged full scan.
    pub(crate) scan: String,
}

impl Statements {
    /// Builds every statement. `keyspace` and `table` must satisfy [`valid_identifier`].
    pub(crate) fn new(keyspace: &str, table: &str, replication: &Replication) -> Self {
        let t = format!("{keyspace}.{table}");
        Self {
            create_keyspace: format!(
                "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
                replication.to_cql()
            ),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {t} (entity_key blob, view text, payload blob, \
                 event_ts bigint, created_ts bigint, write_ts bigint, PRIMARY KEY ((entity_key, view)))"
            ),
            insert: format!(
                "INSERT INTO {t} (entity_key, view, payload, event_ts, created_ts, write_ts) \
                 VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ? AND TTL ?"
            ),
            select: format!(
                "SELECT payload, event_ts, created_ts, write_ts FROM {t} WHERE entity_key = ? AND view = ?"
            ),
            probe: format!(
                "SELECT payload, event_ts, created_ts, write_ts FROM {t} WHERE entity_key = ? AND view = ?"
            ),
            delete: format!("DELETE FROM {t} WHERE entity_key = ? AND view = ?"),
            scan: format!("SELECT entity_key, view, write_ts FROM {t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_identifier;
    use proptest::prelude::*;

    #[test]
    fn statements_text() {
        let s = Statements::new("fs", "online_rows", &Replication::Simple { factor: 3 });
        assert_eq!(
            s.create_keyspace,
            "CREATE KEYSPACE IF NOT EXISTS fs WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
        );
        assert_eq!(
            s.create_table,
            "CREATE TABLE IF NOT EXISTS fs.online_rows (entity_key blob, view text, payload blob, \
             event_ts bigint, created_ts bigint, write_ts bigint, PRIMARY KEY ((entity_key, view)))"
        );
        assert_eq!(
            s.insert,
            "INSERT INTO fs.online_rows (entity_key, view, payload, event_ts, created_ts, write_ts) \
             VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ? AND TTL ?"
        );
        assert_eq!(
            s.select,
            "SELECT payload, event_ts, created_ts, write_ts FROM fs.online_rows WHERE entity_key = ? AND view = ?"
        );
        assert_eq!(
            s.probe,
            "SELECT payload, event_ts, created_ts, write_ts FROM fs.online_rows WHERE entity_key = ? AND view = ?"
        );
        assert_eq!(
            s.delete,
            "DELETE FROM fs.online_rows WHERE entity_key = ? AND view = ?"
        );
        assert_eq!(
            s.scan,
            "SELECT entity_key, view, write_ts FROM fs.online_rows"
        );
        // the data path never carries values in the text: only bind markers
        for q in [&s.insert, &s.select, &s.probe, &s.delete, &s.scan] {
            assert!(!q.contains('\''), "{q}");
        }
        let t = TileStatements::new("fs", "online_rows");
        assert_eq!(
            t.create_table,
            "CREATE TABLE IF NOT EXISTS fs.online_rows_tiles (entity_key blob, view text, feature text, \
             start bigint, seq bigint, writer bigint, cell blob, expires_at bigint, \
             PRIMARY KEY ((entity_key, view), feature, start, seq, writer))"
        );
        for q in [
            &t.insert,
            &t.select,
            &t.delete_row,
            &t.delete_partition,
            &t.scan,
        ] {
            assert!(
                !q.contains('\'') && q.contains("fs.online_rows_tiles"),
                "{q}"
            );
        }
        assert_eq!(t.insert.matches('?').count(), 8);
        assert_eq!(t.delete_row.matches('?').count(), 6);
    }

    #[test]
    fn replication_parse_and_cql() {
        assert_eq!(
            Replication::parse("simple:3"),
            Ok(Replication::Simple { factor: 3 })
        );
        assert_eq!(
            Replication::parse("SimpleStrategy: 1"),
            Ok(Replication::Simple { factor: 1 })
        );
        let n = Replication::parse("network:dc1=3, dc2=2").unwrap();
        assert_eq!(
            n,
            Replication::NetworkTopology(vec![("dc1".into(), 3), ("dc2".into(), 2)])
        );
        assert_eq!(
            n.to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        for bad in [
            "",
            "simple",
            "simple:0",
            "simple:x",
            "network:",
            "network:dc1",
            "network:d'c=1",
            "ring:1",
        ] {
            assert!(Replication::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        for ok in ["fstore", "_x", "a1_b2", "online_rows"] {
            assert!(valid_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Fstore",
            "a-b",
            "a.b",
            "a b",
            "a;drop",
            "\"q\"",
            &"a".repeat(49),
        ] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn identifiers_never_inject(s in ".{0,60}") {
            if valid_identifier(&s) {
                let st = Statements::new(&s, &s, &Replication::default());
                prop_assert!(!st.insert.contains(';') && !st.insert.contains('\''));
                prop_assert_eq!(st.insert.matches('?').count(), 8);
                prop_assert_eq!(st.probe.matches('?').count(), 2);
                prop_assert_eq!(st.select.matches('?').count(), 2);
            }
        }

        #[test]
        fn replication_roundtrip(dcs in proptest::collection::vec(("[a-z][a-z0-9_]{0,8}", 1u32..9), 1..4)) {
            let spec = format!("network:{}", dcs.iter().map(|(d, n)| format!("{d}={n}")).collect::<Vec<_>>().join(","));
            let r = Replication::parse(&spec).unwrap();
            prop_assert_eq!(r, Replication::NetworkTopology(dcs));
        }
    }
}
