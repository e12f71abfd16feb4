//! Export and import: whole documents with their times, for
//! `latchkey documents export|import` (which renders them as JSON lines).

use futures_util::StreamExt as _;
use futures_util::stream::{self, BoxStream};
use latchkey_documents::ResourceName;
use latchkey_store::ExportCursor;

use super::convert::{self, Stored, from_row, store_status, to_proto, to_row};
use super::{Committed, DocumentStore, EXPORT_PAGE, limits};
use crate::Status;
use crate::proto::Document;

impl DocumentStore {
    /// Every document of one database (`projects/{p}/databases/{d}`), or
    /// of every database when `None`, with full names and times, in
    /// (database, name) order. Read a page at a time, so an export never
    /// holds the whole store in memory; each page is a consistent read,
    /// the export as a whole is not a snapshot (writes during it may or may
    /// not appear).
    pub fn export(
        &self,
        database: Option<&str>,
    ) -> Result<BoxStream<'static, Result<Document, Status>>, Status> {
        let database = match database {
            Some(d) => Some(convert::database(d)?.to_string()),
            None => None,
        };
        let rows = self.inner.rows.clone();
        struct State {
            cursor: Option<ExportCursor>,
            page: std::vec::IntoIter<Document>,
            done: bool,
        }
        let start = State {
            cursor: None,
            page: Vec::new().into_iter(),
            done: false,
        };
        let s = stream::unfold(start, move |mut st| {
            let rows = rows.clone();
            let database = database.clone();
            async move {
                loop {
                    if let Some(d) = st.page.next() {
                        return Some((Ok(d), st));
                    }
                    if st.done {
                        return None;
                    }
                    let page = match rows
                        .export_rows(database.as_deref(), st.cursor.as_ref(), EXPORT_PAGE)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            st.done = true;
                            return Some((Err(store_status(e)), st));
                        }
                    };
                    if page.len() < EXPORT_PAGE as usize {
                        st.done = true;
                    }
                    if let Some(last) = page.last() {
                        st.cursor = Some((last.database.clone(), last.path.clone()));
                    }
                    let mut docs = Vec::with_capacity(page.len());
                    for r in &page {
                        let db = match convert::database(&r.database) {
                            Ok(db) => db,
                            Err(_) => {
                                st.done = true;
                                return Some((
                                    Err(Status::internal(
                                        "the document store holds an unreadable row",
                                    )),
                                    st,
                                ));
                            }
                        };
                        match from_row(r) {
                            Ok(d) => docs.push(to_proto(&db, &d, None)),
                            Err(e) => {
                                st.done = true;
                                return Some((Err(e), st));
                            }
                        }
                    }
                    st.page = docs.into_iter();
                }
            }
        });
        Ok(s.boxed())
    }

    /// Stores documents as given (full names, fields, create and update
    /// times; a missing time becomes now), replacing any document of the
    /// same name: importing the same export twice leaves the same state.
    /// Checked as writes are (names, values, sizes); returns how many were
    /// stored. Applied in transactions of [`EXPORT_PAGE`] documents.
    pub async fn import(&self, documents: Vec<Document>) -> Result<u64, Status> {
        let now = self.read_time();
        let mut rows = Vec::with_capacity(documents.len());
        let mut events: Vec<(String, Stored)> = Vec::with_capacity(documents.len());
        for d in documents {
            let (db, path) =
                ResourceName::parse(&d.name).map_err(|e| Status::invalid(e.to_string()))?;
            let path = convert::document_path(&db, &d.name).map(|_| path)?;
            for (k, v) in &d.fields {
                limits::check_field_name(k)?;
                limits::check_value(v, 1, k)?;
            }
            limits::check_document(&db, &path, &d.fields)?;
            let time = |t: &Option<prost_types::Timestamp>| match t {
                Some(t) => convert::micros(t),
                None => Ok(now),
            };
            let stored = Stored {
                path,
                create_time: time(&d.create_time)?,
                update_time: time(&d.update_time)?,
                fields: d.fields,
            };
            rows.push(to_row(&db, &stored));
            events.push((db.to_string(), stored));
        }
        for chunk in rows.chunks(EXPORT_PAGE as usize) {
            self.inner
                .rows
                .import_rows(chunk)
                .await
                .map_err(store_status)?;
        }
        // Imported documents change what `Listen` targets see.
        let mut by_db: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for (db, d) in events {
            by_db.entry(db).or_default().push((d.path.clone(), Some(d)));
        }
        let commit_time = self.next_commit_time(i64::MIN);
        for (database, changes) in by_db {
            let _ = self.inner.changes.send(std::sync::Arc::new(Committed {
                database,
                commit_time,
                changes,
            }));
        }
        Ok(rows.len() as u64)
    }
}
