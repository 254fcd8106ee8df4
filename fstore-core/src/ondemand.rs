//! On-demand views: Rust functions over Arrow batches, run on both paths.

use std::fmt;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};

use crate::codec::cast_column;
use crate::error::{Error, Result};
use crate::model::{OnDemandView, ValueType};

type TransformFn = dyn Fn(&RecordBatch) -> Result<RecordBatch> + Send + Sync;

/// The implementation of an on-demand view, registered with
/// [`crate::FeatureStoreBuilder::with_on_demand`].
///
/// The function receives one batch with a column per input feature (short
/// name) and per request field, and returns a batch with the declared outputs
/// and the same number of rows. Its `version` must equal the registry's, or the
/// store refuses to use it ([`Error::OnDemandVersionMismatch`]).
#[derive(Clone)]
pub struct OnDemandFunction {
    name: String,
    version: String,
    f: Arc<TransformFn>,
}

impl fmt::Debug for OnDemandFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnDemandFunction")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl OnDemandFunction {
    /// Wraps `f` as the implementation of on-demand view `name` at `version`.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        f: impl Fn(&RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            f: Arc::new(f),
        }
    }

    /// The on-demand view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Checks this function against the registry's definition.
    ///
    /// # Errors
    /// [`Error::OnDemandVersionMismatch`].
    pub fn check(&self, def: &OnDemandView) -> Result<()> {
        if def.version != self.version {
            return Err(Error::OnDemandVersionMismatch {
                name: def.name.clone(),
                local: self.version.clone(),
                registry: def.version.clone(),
            });
        }
        Ok(())
    }

    /// Runs the function and validates its output against `def.outputs`
    /// (columns present, castable to the declared type, row count unchanged).
    /// Returns the output columns in declared order.
    ///
    /// # Errors
    /// The function's own error, or [`Error::InvalidInput`] naming the output
    /// column at fault.
    pub fn run(&self, def: &OnDemandView, input: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.check(def)?;
        let out = (self.f)(input)?;
        if out.num_rows() != input.num_rows() {
            return Err(Error::invalid(format!(
                "on-demand view '{}' returned {} rows for {} input rows",
                def.name,
                out.num_rows(),
                input.num_rows()
            )));
        }
        def.outputs
            .iter()
            .map(|f| {
                let col = out.column_by_name(&f.name).ok_or_else(|| {
                    Error::invalid(format!(
                        "on-demand view '{}' did not return output '{}'",
                        def.name, f.name
                    ))
                })?;
                if ValueType::from_arrow(col.data_type()).as_ref() != Some(&f.value_type) {
                    return Err(Error::invalid(format!(
                        "on-demand view '{}': output '{}' has type {}, declared {}",
                        def.name,
                        f.name,
                        col.data_type(),
                        f.value_type
                    )));
                }
                cast_column(col, &f.name, &f.value_type.to_arrow())
            })
            .collect()
    }
}

/// Builds the input batch of an on-demand view from named columns.
pub(crate) fn input_batch(columns: Vec<(String, ArrayRef)>, rows: usize) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
        .collect();
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, c)| c).collect();
    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &opts,
    )?)
}
