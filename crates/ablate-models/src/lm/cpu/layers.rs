//! Dense layers and LayerNorm on the rows of a shard.

pub(super) use ablate_nn::layers::{dense_forward, dense_input_grad, dense_param_grad};

use super::fused::{ln_backward, ln_forward};
use crate::lm::layout::Norm;

pub(super) fn size(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// What one LayerNorm keeps for the backward pass.
#[derive(Default)]
pub(super) struct LnWs {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    pub(super) h: Vec<f32>,
}

impl LnWs {
    pub(super) fn forward(&mut self, n: &Norm, p: &[f32], x: &[f32], rows: usize, d: usize) {
        size(&mut self.xhat, rows * d);
        size(&mut self.h, rows * d);
        size(&mut self.rstd, rows);
        ln_forward(
            &x[..rows * d],
            &p[n.g..n.g + d],
            &p[n.b..n.b + d],
            &mut self.xhat,
            &mut self.rstd,
            &mut self.h,
        );
    }

    pub(super) fn backward(
        &self,
        n: &Norm,
        p: &[f32],
        gh: &[f32],
        d: usize,
        grad: &mut [f32],
        gx: &mut [f32],
    ) {
        let rows = self.rstd.len();
        let (gg, gb) = grad_pair(grad, n.g, n.b, d);
        ln_backward(
            &gh[..rows * d],
            &self.xhat,
            &self.rstd,
            &p[n.g..n.g + d],
            gg,
            gb,
            &mut gx[..rows * d],
        );
    }
}

/// Two disjoint `d`-slices of `grad` (`a < b`).
fn grad_pair(grad: &mut [f32], a: usize, b: usize, d: usize) -> (&mut [f32], &mut [f32]) {
    assert!(a + d <= b);
    let (lo, hi) = grad.split_at_mut(b);
    (&mut lo[a..a + d], &mut hi[..d])
}
