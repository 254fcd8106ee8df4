//! `--ballista URL` for `training_from_parquet --engine datafusion`: the same plan,
//! run on a Ballista cluster whose scheduler and executors are
//! `fstore-ballista`'s binaries (feature `ballista`).

use std::path::Path;
use std::sync::Arc;

use fstore_core::datafusion::physical_plan::ExecutionPlan;
use fstore_core::engine::EngineConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `plan` on the Ballista scheduler at `url` (`df://host:port`) with
/// `config`'s batch size and partition count, streaming the result to `out`
/// (temporary name, renamed at the end). The memory limit and spill directory
/// are the executors' (`--memory-pool-size`, `--work-dir`), not `config`'s.
/// Returns the rows written.
///
/// # Errors
/// An unreachable scheduler (named), a failed job, a failed write.
#[cfg(feature = "ballista")]
pub fn run_on_cluster(
    url: &str,
    plan: Arc<dyn ExecutionPlan>,
    config: &EngineConfig,
    out: &Path,
) -> Result<u64, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let session = fstore_ballista::connect(url).await?;
        let settings = session
            .context()
            .copied_config()
            .with_batch_size(config.batch_size)
            .with_target_partitions(config.partitions);
        let stream = session.execute_with(plan, settings).await?;
        fstore_core::engine::write_parquet(stream, out).await
    })?;
    println!("cluster:       Ballista scheduler at {url}");
    Ok(rows)
}

/// Without the `ballista` feature: an error saying how to build it.
///
/// # Errors
/// Always.
#[cfg(not(feature = "ballista"))]
pub fn run_on_cluster(
    _url: &str,
    _plan: Arc<dyn ExecutionPlan>,
    _config: &EngineConfig,
    _out: &Path,
) -> Result<u64, BoxError> {
    Err(
        "--ballista: this binary was built without the `ballista` feature \
         (cargo run -p fstore-examples --features ballista --example training_from_parquet)"
            .into(),
    )
}
