//! Dense layers and LayerNorm on the rows of a shard.

use super::fused::{ln_backward, ln_forward, mm};
use crate::kernels::{self, View as Mat};
use crate::lm::layout::{Dense, Norm};

pub(super) fn size(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

/// `y := x·Wᵀ + b` over `rows` rows (`W` is `[out, inp]`).
pub(super) fn dense_forward(dn: &Dense, p: &[f32], x: &[f32], rows: usize, y: &mut [f32]) {
    let y = &mut y[..rows * dn.out];
    kernels::set_rows_bias(y, None, dn.b(p), 1.0);
    mm(
        y,
        dn.out,
        true,
        Mat::new(&x[..rows * dn.inp], rows, dn.inp),
        Mat::new(dn.w(p), dn.out, dn.inp).t(),
        1.0,
    );
}

/// `∂W += gyᵀ·x`, `∂b += Σ gy`.
pub(super) fn dense_param_grad(dn: &Dense, x: &[f32], gy: &[f32], rows: usize, grad: &mut [f32]) {
    mm(
        &mut grad[dn.w..dn.w + dn.out * dn.inp],
        dn.inp,
        true,
        Mat::new(&gy[..rows * dn.out], rows, dn.out).t(),
        Mat::new(&x[..rows * dn.inp], rows, dn.inp),
        1.0,
    );
    kernels::add_col_sums(&mut grad[dn.b..dn.b + dn.out], &gy[..rows * dn.out], 1.0);
}

/// `gx (+)= gy·W`.
pub(super) fn dense_input_grad(
    dn: &Dense,
    p: &[f32],
    gy: &[f32],
    rows: usize,
    gx: &mut [f32],
    acc: bool,
) {
    mm(
        gx,
        dn.inp,
        acc,
        Mat::new(&gy[..rows * dn.out], rows, dn.out),
        Mat::new(dn.w(p), dn.out, dn.inp),
        1.0,
    );
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
