//! One packet through the pipeline, to see what vrouterd would do with it
//! (OVS's `ofproto/trace`, VPP's `trace`): against the tables as they are,
//! in a pipeline of its own whose flow table is a scratch one, so that the
//! packet is judged as the first of a new flow (policy, NAT, the ECMP
//! member its hash picks) and leaves nothing behind in the data path. Then
//! the flow's next packet, to see which way its packets go: the fast lane,
//! or the general path and why.

use super::{judgement, Frame, Pipeline, PipelineConfig, Ruling, Spill, Verdict};
use crate::flow::{FlowConfig, FlowTable, Nat};
use crate::stats::GeneralCause;
use crate::tables::{RouteTarget, Tables, VifIndex};

/// What became of a traced packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The verdict.
    pub verdict: Verdict,
    /// The frame as it would leave (rewritten), or as it was left when
    /// dropped.
    pub frame: Vec<u8>,
    /// Frames the pipeline made besides (fragments, an ICMP error), with
    /// their verdicts.
    pub made: Vec<(Verdict, Vec<u8>)>,
    /// The pair the packet made, if its VRF tracks flows.
    pub flow: Option<TracedFlow>,
    /// Why the fast lane left the packet to the general path (`None`: the
    /// lane took it).
    pub general: Option<GeneralCause>,
    /// The flow's next packet, if one was given: its verdict, and why the
    /// lane left it to the general path, if it did.
    pub next: Option<(Verdict, Option<GeneralCause>)>,
}

/// The pair a traced packet made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracedFlow {
    /// The policy rule that decided it (`None`: no policy judged it).
    pub rule: Option<Ruling>,
    /// Where two policies judged it, the rule of the first that let it on.
    pub passed_by: Option<Ruling>,
    /// The ECMP member its flow is pinned to, where its route was a composite.
    pub ecmp: Option<RouteTarget>,
    /// Its NAT rewrite.
    pub nat: Nat,
}

/// Room in front of the traced frame for the tunnel headers.
const HEADROOM: usize = 256;
/// A traced frame's buffer, and each spare's: room for a jumbo frame.
const BUF: usize = 10_240;
/// Spare buffers, for fragments and ICMP errors.
const SPARES: usize = 8;

/// Runs `frame`, received on `vif`, through a pipeline of its own over
/// `tables`; then `next`, if given, the flow's next packet, through the
/// same pipeline, whose scratch table holds the pair `frame` made.
pub fn trace(tables: &Tables, config: PipelineConfig, vif: VifIndex, frame: &[u8], next: Option<&[u8]>) -> Traced {
    let limits = tables.limits();
    let scratch = std::sync::Arc::new(FlowTable::new(
        FlowConfig { capacity: 64, ..FlowConfig::default() },
        limits.vifs,
        limits.vrfs,
    ));
    let mut pipeline = Pipeline::new(config, limits).with_flows(std::sync::Arc::clone(&scratch));
    let run = |pipeline: &mut Pipeline, frame: &[u8]| {
        let mut buf = vec![0u8; BUF.max(HEADROOM + frame.len())];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let mut frames: Vec<Frame<Vec<u8>>> = Frame::new(buf, HEADROOM, frame.len(), vif).into_iter().collect();
        let mut spill = Spill::with_buffers((0..SPARES).map(|_| vec![0u8; BUF]).collect(), HEADROOM);
        pipeline.process(tables, &mut frames, &mut spill);
        (frames, spill)
    };
    let (frames, spill) = run(&mut pipeline, frame);
    let general = pipeline.general_cause_at(0);
    let forward = scratch.dump(None, 2, 0).into_iter().find(|f| f.forward);
    let flow = forward.and_then(|f| {
        let judged = judgement(tables, &scratch, &f)?;
        Some(TracedFlow { rule: judged.rule, passed_by: judged.passed_by, ecmp: f.ecmp, nat: f.nat })
    });
    let (verdict, out) = match frames.first() {
        Some(f) => (f.verdict, f.data().to_vec()),
        None => (Verdict::Drop(crate::stats::DropReason::Truncated), frame.to_vec()),
    };
    let made = spill.out.iter().map(|f| (f.verdict, f.data().to_vec())).collect();
    let next = next.and_then(|n| {
        let (frames, _) = run(&mut pipeline, n);
        Some((frames.first()?.verdict, pipeline.general_cause_at(0)))
    });
    Traced { verdict, frame: out, made, flow, general, next }
}
