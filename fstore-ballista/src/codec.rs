//! fstore's `PhysicalExtensionCodec`: the engine's custom plan nodes on the wire.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use fstore_core::engine::agg::{AggJoinConfig, AggJoinExec, AggSequenceExec, SequenceConfig};
use fstore_core::engine::{
    PitHashJoinConfig, PitHashJoinExec, PitJoinConfig, PitJoinExec, PitPrepareExec, PrepareConfig,
};

/// First byte of an encoded node: which codec wrote the rest.
const BALLISTA: u8 = 0;
const PIT_PREPARE: u8 = 1;
const PIT_JOIN: u8 = 2;
const PIT_HASH_JOIN: u8 = 3;
const AGG_SEQUENCE: u8 = 4;
const AGG_JOIN: u8 = 5;

/// The `PhysicalExtensionCodec` of an fstore cluster: fstore's engine nodes
/// ([`PitPrepareExec`], [`PitJoinExec`], [`PitHashJoinExec`], and the window
/// aggregations' [`AggSequenceExec`] and [`AggJoinExec`]) as a tag byte and their JSON config,
/// anything else (Ballista's shuffle nodes) through Ballista's own codec.
///
/// The client, the scheduler and every executor must use it (the client encodes
/// the plan, the scheduler decodes it and encodes each stage, the executors
/// decode the stages); [`crate::connect`], [`crate::run_scheduler`] and
/// [`crate::run_executor`] register it.
#[derive(Debug, Default)]
pub struct FstorePhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl FstorePhysicalCodec {
    /// The codec as Ballista's configs take it.
    pub fn shared() -> Arc<dyn PhysicalExtensionCodec> {
        Arc::new(Self::default())
    }
}

fn codec_error(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("fstore codec: {what}: {e}"))
}

fn one_input<'a>(
    inputs: &'a [Arc<dyn ExecutionPlan>],
    n: usize,
    node: &str,
) -> Result<&'a [Arc<dyn ExecutionPlan>]> {
    if inputs.len() == n {
        Ok(inputs)
    } else {
        Err(codec_error(
            node,
            format!("expected {n} input(s), got {}", inputs.len()),
        ))
    }
}

impl PhysicalExtensionCodec for FstorePhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (&tag, body) = buf
            .split_first()
            .ok_or_else(|| codec_error("decode", "empty buffer"))?;
        match tag {
            BALLISTA => self.inner.try_decode(body, inputs, ctx, proto_converter),
            PIT_PREPARE => {
                let config: PrepareConfig = serde_json::from_slice(body)
                    .map_err(|e| codec_error("PitPrepareExec config", e))?;
                let input = &one_input(inputs, 1, "PitPrepareExec")?[0];
                Ok(Arc::new(PitPrepareExec::try_new(
                    Arc::clone(input),
                    config,
                )?))
            }
            PIT_JOIN => {
                let config: PitJoinConfig = serde_json::from_slice(body)
                    .map_err(|e| codec_error("PitJoinExec config", e))?;
                let io = one_input(inputs, 2, "PitJoinExec")?;
                Ok(Arc::new(PitJoinExec::try_new(
                    Arc::clone(&io[0]),
                    Arc::clone(&io[1]),
                    config,
                )?))
            }
            PIT_HASH_JOIN => {
                let config: PitHashJoinConfig = serde_json::from_slice(body)
                    .map_err(|e| codec_error("PitHashJoinExec config", e))?;
                let io = one_input(inputs, 2, "PitHashJoinExec")?;
                Ok(Arc::new(PitHashJoinExec::try_new(
                    Arc::clone(&io[0]),
                    Arc::clone(&io[1]),
                    config,
                )?))
            }
            AGG_SEQUENCE => {
                let config: SequenceConfig = serde_json::from_slice(body)
                    .map_err(|e| codec_error("AggSequenceExec config", e))?;
                let input = &one_input(inputs, 1, "AggSequenceExec")?[0];
                Ok(Arc::new(AggSequenceExec::try_new(
                    Arc::clone(input),
                    config,
                )?))
            }
            AGG_JOIN => {
                let config: AggJoinConfig = serde_json::from_slice(body)
                    .map_err(|e| codec_error("AggJoinExec config", e))?;
                let io = one_input(inputs, 2, "AggJoinExec")?;
                Ok(Arc::new(AggJoinExec::try_new(
                    Arc::clone(&io[0]),
                    Arc::clone(&io[1]),
                    config,
                )?))
            }
            other => Err(codec_error("decode", format!("unknown node tag {other}"))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(p) = node.downcast_ref::<PitPrepareExec>() {
            buf.push(PIT_PREPARE);
            serde_json::to_writer(buf, p.config())
                .map_err(|e| codec_error("PitPrepareExec config", e))
        } else if let Some(j) = node.downcast_ref::<PitJoinExec>() {
            buf.push(PIT_JOIN);
            serde_json::to_writer(buf, j.config()).map_err(|e| codec_error("PitJoinExec config", e))
        } else if let Some(j) = node.downcast_ref::<PitHashJoinExec>() {
            buf.push(PIT_HASH_JOIN);
            serde_json::to_writer(buf, j.config())
                .map_err(|e| codec_error("PitHashJoinExec config", e))
        } else if let Some(s) = node.downcast_ref::<AggSequenceExec>() {
            buf.push(AGG_SEQUENCE);
            serde_json::to_writer(buf, s.config())
                .map_err(|e| codec_error("AggSequenceExec config", e))
        } else if let Some(j) = node.downcast_ref::<AggJoinExec>() {
            buf.push(AGG_JOIN);
            serde_json::to_writer(buf, j.config()).map_err(|e| codec_error("AggJoinExec config", e))
        } else {
            buf.push(BALLISTA);
            self.inner.try_encode(node, buf, proto_converter)
        }
    }
}
