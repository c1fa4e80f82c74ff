//! `echo`: the cheapest op there is — records a value as a metric, optionally after a pause.
//! For trying pipelines, benchmarking the orchestrator, and testing cancellation, failure
//! isolation and fused groups: a sweep over its fusible `seed` (and `fail`) is a fused group
//! (issue 23), computed in turn by the default `run_group`, so a group's dispatch — one local
//! slot, one Slurm array task — can be tried without training anything. With `steps`, it
//! logs a curve (`loss` = `value` + 1/step at each step) and stops at an early-stopping budget,
//! resuming from its checkpoint: successive halving (issue 24) can be tried the same way.

use std::time::{Duration, Instant};

use ablate_cache::Metric;
use ablate_run::{OpContext, OpError, OpOutput};
use ablate_spec::{OpSchema, ParamSpec, ParamType};
use serde::Deserialize;
use serde_json::json;

use crate::params::typed;
use crate::registry::Op;

pub(crate) struct Echo {
    schema: OpSchema,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EchoParams {
    value: f64,
    sleep_ms: u64,
    /// Read by nothing: it only tells instances (and their keys) apart.
    #[allow(dead_code)]
    seed: u64,
    fail: bool,
    steps: u64,
}

/// What a stopped `echo` resumes from: the step it reached, and how many steps all its
/// attempts computed. Its metrics `computed_steps` and `resumed_from` (the step this attempt
/// started from) tell a resumed run from one started over, for tests.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct EchoCheckpoint {
    step: u64,
    computed: u64,
}

const ECHO_CHECKPOINT: &str = "echo.json";

/// The params whose values may differ within a fused group: neither changes what the op does
/// but the key (`seed`) or whether it fails (`fail`).
const FUSIBLE: &[&str] = &["seed", "fail"];

impl Echo {
    pub(crate) fn new() -> Self {
        Echo {
            schema: OpSchema {
                name: "echo",
                version: 1,
                summary: "Record `value` as the metric `value`, after sleeping `sleep_ms` (stops early when cancelled).",
                params: vec![
                    ParamSpec::with_default(
                        "value",
                        ParamType::float(),
                        json!(0.0),
                        "the metric to record",
                    ),
                    ParamSpec::with_default(
                        "sleep_ms",
                        ParamType::non_negative_int(),
                        json!(0),
                        "milliseconds to wait first",
                    ),
                    ParamSpec::with_default(
                        "seed",
                        ParamType::non_negative_int(),
                        json!(0),
                        "changes nothing but the key: a sweep over it is a fused group",
                    ),
                    ParamSpec::with_default(
                        "fail",
                        ParamType::Bool,
                        json!(false),
                        "fail after the pause instead of recording the value",
                    ),
                    ParamSpec::with_default(
                        "steps",
                        ParamType::non_negative_int(),
                        json!(0),
                        "log `loss` = value + 1/step at steps 1..=steps, stopping at an \
                         early-stopping budget and resuming from a checkpoint",
                    ),
                ],
                gathers: false,
                free_params: false,
                inputs_by_name: false,
                on_device: false,
                needs: (0, None),
            },
        }
    }
}

impl Op for Echo {
    fn schema(&self) -> &OpSchema {
        &self.schema
    }

    fn fusible(&self) -> &'static [&'static str] {
        FUSIBLE
    }

    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let p: EchoParams = typed("echo", ctx.job.params())?;
        let until = Instant::now() + Duration::from_millis(p.sleep_ms);
        while Instant::now() < until {
            if ctx.is_cancelled() {
                return Err(OpError::Cancelled);
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(10)));
        }
        if p.fail {
            return Err(OpError::msg(format!(
                "`{}` failed on purpose (`fail: true`)",
                ctx.job.id
            )));
        }
        if p.steps == 0 {
            return Ok(OpOutput {
                metrics: vec![Metric::new("value", p.value)],
                publish: Vec::new(),
                ..OpOutput::default()
            });
        }
        let dir = ctx.checkpoint_dir();
        let path = dir.join(ECHO_CHECKPOINT);
        let from: EchoCheckpoint = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let end = ctx
            .budget()
            .map_or(p.steps, |b| b.min(p.steps))
            .max(from.step);
        let reached = EchoCheckpoint {
            step: end,
            computed: from.computed + (end - from.step),
        };
        let mut metrics: Vec<Metric> = (1..=end)
            .map(|s| Metric::at_step("loss", s, p.value + 1.0 / s as f64))
            .collect();
        metrics.push(Metric::new("computed_steps", reached.computed as f64));
        metrics.push(Metric::new("resumed_from", from.step as f64));
        let stopped_at = (end < p.steps).then_some(end);
        if stopped_at.is_some() {
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    let json = serde_json::to_vec(&reached).map_err(std::io::Error::other)?;
                    ablate_cache::write_atomically(&path, &json).map_err(std::io::Error::other)
                })
                .map_err(|e| OpError::with(format!("failed to write `{}`", path.display()), e))?;
        } else {
            metrics.push(Metric::new("value", p.value));
        }
        Ok(OpOutput {
            metrics,
            stopped_at,
            ..OpOutput::default()
        })
    }

    fn budget_unit(&self) -> Option<&'static str> {
        Some("steps")
    }
}
