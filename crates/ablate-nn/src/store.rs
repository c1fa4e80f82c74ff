//! The parameter store: every tensor of a model as a named slot (shape, offset, initialisation,
//! whether weight decay applies) in one flat `f32` buffer, and [`Params`], that buffer for
//! several replicas of one layout side by side (replica `r` at `r · total`).
//!
//! A model builds its [`Layout`] once from its config, keeps the offsets the builder returns
//! (as [`Dense`] and [`Norm`] handles, or plain offsets), and reads its parameters through them;
//! the optimizer, the safetensors file and the initialisation see only the slots.

use std::ops::Range;

use crate::rng::SplitMix64;

/// How a slot's values start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// Uniform in `[-bound, bound)`, drawn from the layout's one seeded stream in slot order.
    Uniform(f32),
}

impl Init {
    /// PyTorch's `nn.Linear` default for a layer with fan-in `fan_in`: uniform in `±1/√fan_in`.
    pub fn fan_in(fan_in: usize) -> Init {
        Init::Uniform(1.0 / (fan_in as f32).sqrt())
    }

    /// Uniform with standard deviation `std` (GPT-2's N(0, 0.02) in variance, drawn uniformly
    /// so the draw depends on [`SplitMix64`] alone).
    pub fn uniform_std(std: f32) -> Init {
        Init::Uniform(std * 3f32.sqrt())
    }
}

/// A named tensor of a model and its place in the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub init: Init,
    /// Whether decoupled weight decay applies to it (weight matrices and embeddings; not biases
    /// or norm gains).
    pub decay: bool,
}

impl Slot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// A dense layer `y = x·Wᵀ + b` with `W` stored `[out, inp]` row-major — PyTorch's
/// `nn.Linear` and candle's `Linear`, so a model file reads in either unchanged. The one dense
/// convention of every model here; the offsets point into the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub inp: usize,
    pub out: usize,
    pub w: usize,
    pub b: usize,
}

impl Dense {
    /// The weight, `[out, inp]`.
    pub fn w<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.w..self.w + self.out * self.inp]
    }

    pub fn b<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.b..self.b + self.out]
    }
}

/// The gain and bias offsets of one LayerNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Norm {
    pub g: usize,
    pub b: usize,
}

/// Every slot of one model, in the order they were added (which is their order in the buffer
/// and the order the initialisation draws them in).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    slots: Vec<Slot>,
    total: usize,
}

impl Layout {
    pub fn new() -> Layout {
        Layout::default()
    }

    /// Appends a slot; returns its offset.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        init: Init,
        decay: bool,
    ) -> usize {
        let offset = self.total;
        let slot = Slot {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
            init,
            decay,
        };
        self.total += slot.len();
        self.slots.push(slot);
        offset
    }

    /// A dense layer: `{name}.weight` (`[out, inp]`, initialised by `w`, decayed) and
    /// `{name}.bias` (`[out]`, initialised by `b`, not decayed).
    pub fn dense(&mut self, name: &str, inp: usize, out: usize, w: Init, b: Init) -> Dense {
        Dense {
            inp,
            out,
            w: self.push(format!("{name}.weight"), &[out, inp], w, true),
            b: self.push(format!("{name}.bias"), &[out], b, false),
        }
    }

    /// A LayerNorm over `d` features: `{name}.g` (ones) and `{name}.b` (zeros), neither decayed.
    pub fn norm(&mut self, name: &str, d: usize) -> Norm {
        Norm {
            g: self.push(format!("{name}.g"), &[d], Init::Ones, false),
            b: self.push(format!("{name}.b"), &[d], Init::Zeros, false),
        }
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The number of parameters of one replica.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The ranges weight decay applies to.
    pub fn decayed(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.slots.iter().filter(|s| s.decay).map(Slot::range)
    }

    /// Fresh parameters: the uniform slots drawn from stream `stream` of `seed`, in slot order
    /// (zeros and ones draw nothing).
    pub fn init(&self, seed: u64, stream: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed, stream);
        let mut p = vec![0.0; self.total];
        for slot in &self.slots {
            let dst = &mut p[slot.range()];
            match slot.init {
                Init::Zeros => dst.fill(0.0),
                Init::Ones => dst.fill(1.0),
                Init::Uniform(bound) => dst.iter_mut().for_each(|v| *v = rng.uniform(bound)),
            }
        }
        p
    }

    /// The slots as the safetensors file names them.
    pub fn file_slots(&self) -> impl Iterator<Item = crate::safetensors::SlotRef<'_>> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.shape.as_slice(), s.range()))
    }
}

/// The parameters of `replicas` copies of one layout in one buffer, replica `r` at
/// `r · layout.total()`: what a batched computation over several instances of one shape reads,
/// and what the optimizer updates with per-replica hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    total: usize,
    data: Vec<f32>,
}

impl Params {
    /// One replica per seed, each initialised by [`Layout::init`] from its own seed.
    pub fn init(layout: &Layout, seeds: &[u64], stream: u64) -> Params {
        let mut data = Vec::with_capacity(layout.total() * seeds.len());
        for &seed in seeds {
            data.extend(layout.init(seed, stream));
        }
        Params {
            total: layout.total(),
            data,
        }
    }

    pub fn replicas(&self) -> usize {
        self.data.len().checked_div(self.total).unwrap_or(0)
    }

    pub fn replica(&self, r: usize) -> &[f32] {
        &self.data[r * self.total..(r + 1) * self.total]
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_tile_the_buffer_and_dense_layers_are_out_by_inp() {
        let mut l = Layout::new();
        let d = l.dense("fc", 3, 2, Init::fan_in(3), Init::Zeros);
        let n = l.norm("ln", 2);
        assert_eq!((d.w, d.b, n.g, n.b, l.total()), (0, 6, 8, 10, 12));
        assert_eq!(l.slots()[0].shape, vec![2, 3]);
        assert_eq!(l.slots()[0].name, "fc.weight");
        let decayed: Vec<_> = l.decayed().collect();
        assert_eq!(decayed, vec![0..6]);
        let p = l.init(1, 7);
        assert!(
            p[..6]
                .iter()
                .all(|v| v.abs() < 1.0 / 3f32.sqrt() && *v != 0.0)
        );
        assert_eq!(&p[6..], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn replicas_are_each_initialised_from_their_own_seed() {
        let mut l = Layout::new();
        l.push("x", &[4], Init::Uniform(1.0), false);
        let p = Params::init(&l, &[5, 6, 5], 1);
        assert_eq!(p.replicas(), 3);
        assert_eq!(p.replica(0), l.init(5, 1).as_slice());
        assert_eq!(p.replica(1), l.init(6, 1).as_slice());
        assert_eq!(p.replica(0), p.replica(2));
        assert_ne!(p.replica(0), p.replica(1));
    }
}
