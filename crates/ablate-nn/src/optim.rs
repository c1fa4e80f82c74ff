//! The one optimizer: Adam with decoupled weight decay (AdamW), global-norm gradient clipping
//! and a learning-rate schedule, over the flat buffer of [`crate::Params`] — with
//! hyperparameters ([`Hyper`]) that may differ per replica.

use std::ops::Range;

use crate::kernels::{self, AdamStep};
use crate::store::Layout;

/// A learning rate as a function of the (0-based) step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant(f32),
    /// Linear warm-up from `lr/warmup` to `lr` over `warmup` steps, then a cosine decay to
    /// 10 % of `lr` at `steps`.
    WarmupCosine {
        lr: f32,
        warmup: usize,
        steps: usize,
    },
}

impl Schedule {
    pub fn at(&self, step: usize) -> f32 {
        match *self {
            Schedule::Constant(lr) => lr,
            Schedule::WarmupCosine { lr, warmup, steps } => {
                if step < warmup {
                    return lr * (step + 1) as f32 / warmup as f32;
                }
                let span = steps.saturating_sub(warmup).max(1) as f32;
                let t = ((step - warmup) as f32 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
                lr * (0.1 + 0.9 * cos)
            }
        }
    }
}

/// Where decoupled weight decay (`p ← (1 − lr·wd)·p` on the decayed slots) sits in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecayAt {
    /// Before the Adam update, as PyTorch's `AdamW` does it.
    BeforeUpdate,
    /// After the Adam update (the residual flows' projection step: decay, then their Lipschitz
    /// bound, after each update).
    AfterUpdate,
}

/// The hyperparameters of one replica.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub schedule: Schedule,
    /// 0 turns decay off.
    pub weight_decay: f32,
    /// The gradient's global norm is scaled down to this first; `f32::INFINITY`: no clipping.
    pub clip: f32,
}

/// Adam's constants, shared by every replica of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub decay_at: DecayAt,
}

/// What one replica's update did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// The learning rate it used.
    pub lr: f32,
    /// The gradient's global norm before clipping.
    pub grad_norm: f32,
}

/// One replica's optimizer state: its moments and the step count their bias correction uses
/// (what a checkpoint keeps, [`crate::checkpoint`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub t: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// AdamW over `hypers.len()` replicas of one layout; its moments live here.
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamConfig,
    hypers: Vec<Hyper>,
    decayed: Vec<Range<usize>>,
    total: usize,
    m: Vec<f32>,
    v: Vec<f32>,
    t: u64,
}

impl AdamW {
    pub fn new(config: AdamConfig, layout: &Layout, hypers: Vec<Hyper>) -> AdamW {
        let n = layout.total() * hypers.len();
        AdamW {
            config,
            decayed: layout.decayed().collect(),
            total: layout.total(),
            hypers,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    pub fn hypers(&self) -> &[Hyper] {
        &self.hypers
    }

    /// Replica `r`'s moments and the step count.
    pub fn state(&self, r: usize) -> AdamState {
        let range = r * self.total..(r + 1) * self.total;
        AdamState {
            t: self.t,
            m: self.m[range.clone()].to_vec(),
            v: self.v[range].to_vec(),
        }
    }

    /// Sets replica `r`'s moments and the step count (shared by every replica: the replicas
    /// of one group resume from one step).
    pub fn restore(&mut self, r: usize, s: &AdamState) -> Result<(), crate::NnError> {
        let range = r * self.total..(r + 1) * self.total;
        if s.m.len() != self.total || s.v.len() != self.total {
            return Err(crate::NnError::InvalidConfig(format!(
                "the optimizer state holds {} moments, the model has {} parameters",
                s.m.len(),
                self.total
            )));
        }
        self.m[range.clone()].copy_from_slice(&s.m);
        self.v[range].copy_from_slice(&s.v);
        self.t = s.t;
        Ok(())
    }

    /// The global norm of each replica's part of `grad` (in f64, rounded to f32).
    pub fn grad_norms(&self, grad: &[f32]) -> Vec<f32> {
        grad.chunks(self.total.max(1))
            .map(|g| g.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt() as f32)
            .collect()
    }

    /// Step `step` (0-based) of every replica: clip its gradient to its `clip` (`norms` from
    /// [`AdamW::grad_norms`]), decay, and the bias-corrected Adam update at its scheduled
    /// learning rate. `params` and `grad` hold all replicas.
    pub fn update(
        &mut self,
        step: usize,
        params: &mut [f32],
        grad: &mut [f32],
        norms: &[f32],
    ) -> Vec<Update> {
        let live = vec![true; self.hypers.len()];
        self.update_live(step, params, grad, norms, &live)
    }

    /// [`AdamW::update`] of the replicas where `live` is true; the others (members of a fused
    /// group that stopped) keep their parameters and moments. Their [`Update`] is still
    /// returned, with the learning rate they would have used.
    pub fn update_live(
        &mut self,
        step: usize,
        params: &mut [f32],
        grad: &mut [f32],
        norms: &[f32],
        live: &[bool],
    ) -> Vec<Update> {
        assert_eq!(live.len(), self.hypers.len(), "live");
        assert_eq!(params.len(), self.total * self.hypers.len(), "params");
        assert_eq!(grad.len(), params.len(), "gradient");
        self.t += 1;
        let n = self.total;
        let c = self.config;
        let mut out = Vec::with_capacity(self.hypers.len());
        for (r, h) in self.hypers.iter().enumerate() {
            let range = r * n..(r + 1) * n;
            let norm = norms[r];
            if !live[r] {
                out.push(Update {
                    lr: h.schedule.at(step),
                    grad_norm: norm,
                });
                continue;
            }
            let (p, g) = (&mut params[range.clone()], &mut grad[range.clone()]);
            if norm > h.clip {
                kernels::scale(g, h.clip / norm);
            }
            let lr = h.schedule.at(step);
            let keep = 1.0 - lr * h.weight_decay;
            let decay = |p: &mut [f32]| {
                if keep != 1.0 {
                    for d in &self.decayed {
                        kernels::scale(&mut p[d.clone()], keep);
                    }
                }
            };
            if c.decay_at == DecayAt::BeforeUpdate {
                decay(p);
            }
            let adam = AdamStep::new(lr, self.t, c.beta1, c.beta2, c.eps);
            kernels::adam(p, &mut self.m[range.clone()], &mut self.v[range], g, adam);
            if c.decay_at == DecayAt::AfterUpdate {
                decay(p);
            }
            out.push(Update {
                lr,
                grad_norm: norm,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Init, Params};

    fn layout() -> Layout {
        let mut l = Layout::new();
        l.dense("fc", 3, 2, Init::Uniform(0.5), Init::Zeros);
        l
    }

    const ADAM: AdamConfig = AdamConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-8,
        decay_at: DecayAt::BeforeUpdate,
    };

    #[test]
    fn replicas_update_as_if_each_ran_alone() {
        let l = layout();
        let hypers = [
            Hyper {
                schedule: Schedule::Constant(0.1),
                weight_decay: 0.0,
                clip: f32::INFINITY,
            },
            Hyper {
                schedule: Schedule::WarmupCosine {
                    lr: 0.01,
                    warmup: 2,
                    steps: 5,
                },
                weight_decay: 0.5,
                clip: 0.1,
            },
        ];
        let mut both = Params::init(&l, &[1, 2], 3);
        let mut opt = AdamW::new(ADAM, &l, hypers.to_vec());
        let mut alone: Vec<(Vec<f32>, AdamW)> = (0..2)
            .map(|r| {
                (
                    both.replica(r).to_vec(),
                    AdamW::new(ADAM, &l, vec![hypers[r]]),
                )
            })
            .collect();
        for step in 0..5 {
            let grad: Vec<f32> = (0..2 * l.total())
                .map(|i| ((i * 7 + step * 3) % 11) as f32 - 5.0)
                .collect();
            let mut g = grad.clone();
            let norms = opt.grad_norms(&g);
            let ups = opt.update(step, both.as_mut_slice(), &mut g, &norms);
            for (r, (p, o)) in alone.iter_mut().enumerate() {
                let mut g = grad[r * l.total()..(r + 1) * l.total()].to_vec();
                let norms = o.grad_norms(&g);
                let up = o.update(step, p, &mut g, &norms);
                assert_eq!(up[0], ups[r]);
                assert_eq!(p.as_slice(), both.replica(r), "step {step} replica {r}");
            }
        }
        assert_ne!(alone[0].0, alone[1].0);
    }

    #[test]
    fn clipping_and_decay_do_what_they_say() {
        let l = layout();
        let hyper = Hyper {
            schedule: Schedule::Constant(0.1),
            weight_decay: 1.0,
            clip: 1.0,
        };
        let mut p = vec![1.0f32; l.total()];
        let mut g = vec![0.0f32; l.total()];
        g[0] = 3.0;
        g[1] = 4.0;
        let mut opt = AdamW::new(ADAM, &l, vec![hyper]);
        let norms = opt.grad_norms(&g);
        assert_eq!(norms, vec![5.0]);
        opt.update(0, &mut p, &mut g, &norms);
        assert!(
            (g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6,
            "{g:?}"
        );
        // decay 0.9 on the weights, then Adam's first step moves each by ≈ lr·sign(g)
        assert!((p[0] - (0.9 - 0.1)).abs() < 1e-5, "{}", p[0]);
        assert!((p[2] - 0.9).abs() < 1e-6, "no gradient: decay only");
        assert_eq!(p[6], 1.0, "biases are not decayed");
        assert_eq!(
            Schedule::WarmupCosine {
                lr: 1.0,
                warmup: 2,
                steps: 4
            }
            .at(0),
            0.5
        );
    }
}
