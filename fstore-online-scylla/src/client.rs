//! Driver I/O below the store: opening the session, and binding values to
//! prepared statements by bind-marker name.

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::cluster::metadata::ColumnType;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::{CellWriter, RowWriter, WrittenCellProof};

use crate::config::Settings;
use crate::error::Error;

/// Opens a session (token-aware; DC-aware when `local_dc` is set), bounded by
/// the connect timeout as a whole.
pub(crate) async fn open_session(settings: &Settings) -> Result<Session, Error> {
    let mut lb = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &settings.local_dc {
        lb = lb.prefer_datacenter(dc.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(lb.build())
        .request_timeout(Some(settings.request_timeout))
        .consistency(settings.read_consistency)
        .build();
    let mut b = SessionBuilder::new()
        .known_nodes(&settings.contact_points)
        .connection_timeout(settings.connect_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .auto_await_schema_agreement(settings.await_schema_agreement);
    if let Some((u, p)) = &settings.credentials {
        b = b.user(u.clone(), p.clone());
    }
    #[cfg(feature = "tls")]
    if settings.tls {
        let tls =
            crate::tls::client_config(settings.tls_ca_file.as_deref()).map_err(Error::Config)?;
        b = b.tls_context(Some(tls));
    }
    let contact_points = settings.contact_points.join(",");
    // The driver's own connection_timeout does not bound everything: a
    // listener that accepts but never answers hangs the build. Bound it all.
    match tokio::time::timeout(settings.connect_timeout, b.build()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(Error::Connect {
            contact_points,
            source,
        }),
        Err(_) => Err(Error::ConnectTimeout {
            contact_points,
            timeout: settings.connect_timeout,
        }),
    }
}

/// One value for a named bind marker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
    Text(&'a str),
    BigInt(i64),
    OptBigInt(Option<i64>),
    Int(i32),
}

/// Values bound by bind-marker name, as the server reported them when the
/// statement was prepared. A marker the row does not know is an error.
pub(crate) struct Named<'a>(pub(crate) &'a [(&'static str, Val<'a>)]);

#[derive(Debug, thiserror::Error)]
#[error("statement has bind marker '{0}' that fstore does not bind")]
struct UnknownMarker(String);

impl Val<'_> {
    fn serialize<'b>(
        &self,
        typ: &ColumnType<'_>,
        w: CellWriter<'b>,
    ) -> Result<WrittenCellProof<'b>, SerializationError> {
        match self {
            Self::Blob(b) => SerializeValue::serialize(b, typ, w),
            Self::OptBlob(b) => SerializeValue::serialize(b, typ, w),
            Self::Text(s) => SerializeValue::serialize(s, typ, w),
            Self::BigInt(v) => SerializeValue::serialize(v, typ, w),
            Self::OptBigInt(v) => SerializeValue::serialize(v, typ, w),
            Self::Int(v) => SerializeValue::serialize(v, typ, w),
        }
    }
}

impl SerializeRow for Named<'_> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter<'_>,
    ) -> Result<(), SerializationError> {
        for col in ctx.columns() {
            let (_, v) = self
                .0
                .iter()
                .find(|(n, _)| *n == col.name())
                .ok_or_else(|| SerializationError::new(UnknownMarker(col.name().to_owned())))?;
            v.serialize(col.typ(), writer.make_cell_writer())?;
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
