//! The one place that knows every parameter of a flow: names, shapes, where each lives in the
//! flat parameter vector, how it is initialised.

use crate::FlowConfig;
pub(crate) use ablate_nn::Dense;
use ablate_nn::Init;

/// One velocity field `v(x) = W2·σ(W1·x + b1) + b2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub l1: Dense,
    pub l2: Dense,
}

/// Where every parameter of a model with a given config lives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layout {
    pub lift: Option<Dense>,
    pub fields: Vec<Field>,
    pub head: Dense,
    /// The slots, in the order above.
    pub store: ablate_nn::Layout,
}

impl Layout {
    pub(crate) fn new(cfg: &FlowConfig) -> Layout {
        let mut store = ablate_nn::Layout::new();
        // PyTorch's `nn.Linear` and its initialisation: weight and bias uniform in ±1/√inp.
        let mut linear = |name: &str, inp: usize, out: usize| {
            let init = Init::fan_in(inp);
            store.dense(name, inp, out, init, init)
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
            store,
        }
    }

    /// The field used at residual step `k`.
    pub(crate) fn field(&self, cfg: &FlowConfig, k: usize) -> &Field {
        &self.fields[cfg.field_of_step(k)]
    }

    /// The number of parameters.
    pub(crate) fn total(&self) -> usize {
        self.store.total()
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
