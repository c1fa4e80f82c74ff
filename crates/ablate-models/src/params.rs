//! The one place that knows every parameter of a flow: names, shapes, where each lives in the
//! flat parameter vector, how it is initialised.

use crate::FlowConfig;
use ablate_nn::Init;

/// A dense layer `y = x·Wᵀ + b` with `W` of shape `[out, inp]` (PyTorch's convention); the
/// offsets point into the flat parameter vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Linear {
    pub inp: usize,
    pub out: usize,
    pub w: usize,
    pub b: usize,
}

impl Linear {
    pub(crate) fn w<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.w..self.w + self.out * self.inp]
    }
    pub(crate) fn b<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.b..self.b + self.out]
    }
}

/// One velocity field `v(x) = W2·σ(W1·x + b1) + b2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub l1: Linear,
    pub l2: Linear,
}

/// Where every parameter of a model with a given config lives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    pub lift: Option<Linear>,
    pub fields: Vec<Field>,
    pub head: Linear,
    /// The slots, in the order above.
    pub store: ablate_nn::Layout,
    /// `store.total()`.
    pub total: usize,
}

impl Layout {
    pub(crate) fn new(cfg: &FlowConfig) -> Layout {
        let mut store = ablate_nn::Layout::new();
        // PyTorch's `nn.Linear`: weight `[out, inp]` (decayed), bias `[out]`, both uniform in
        // ±1/√inp.
        let mut linear = |name: &str, inp: usize, out: usize| {
            let init = Init::fan_in(inp);
            let w = store.push(format!("{name}.weight"), &[out, inp], init, true);
            let b = store.push(format!("{name}.bias"), &[out], init, false);
            Linear { inp, out, w, b }
        };
        let lift = cfg.has_lift().then(|| linear("lift", cfg.in_dim, cfg.dim));
        let fields = (0..cfg.num_fields())
            .map(|k| Field {
                l1: linear(&format!("fields.{k}.fc1"), cfg.dim, cfg.hidden),
                l2: linear(&format!("fields.{k}.fc2"), cfg.hidden, cfg.dim),
            })
            .collect();
        let head = linear("head", cfg.dim, cfg.classes);
        Layout {
            lift,
            fields,
            head,
            total: store.total(),
            store,
        }
    }

    /// The field used at residual step `k`.
    pub(crate) fn field(&self, cfg: &FlowConfig, k: usize) -> &Field {
        &self.fields[cfg.field_of_step(k)]
    }

    /// PyTorch's `nn.Linear` default, drawn from one seeded stream in slot order: every weight and
    /// bias of a layer with fan-in `f` is uniform in `[-1/√f, 1/√f)`.
    pub(crate) fn init(&self, seed: u64) -> Vec<f32> {
        self.store.init(seed, STREAM_INIT)
    }
}

/// Stream ids of [`SplitMix64`] for one seed.
pub(crate) const STREAM_INIT: u64 = 1;
pub(crate) const STREAM_SHUFFLE: u64 = 2;
