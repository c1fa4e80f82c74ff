//! The layer both model families compute on the CPU fast path: a dense layer ([`Dense`],
//! PyTorch's `[out, inp]` weight) over the rows of a batch in flat buffers — its forward pass and
//! the two products of its backward pass. Both families call these, so a dense layer is one
//! sequence of `gemm` calls wherever it appears.

use crate::kernels::{self, View as Mat};
use crate::store::Dense;

/// `y := x·Wᵀ + b` over `rows` rows (`W` is `[out, inp]`).
pub fn dense_forward(dn: &Dense, p: &[f32], x: &[f32], rows: usize, y: &mut [f32]) {
    let y = &mut y[..rows * dn.out];
    kernels::set_rows_bias(y, None, dn.b(p), 1.0);
    kernels::matmul_strided(
        y,
        dn.out,
        true,
        Mat::new(&x[..rows * dn.inp], rows, dn.inp),
        Mat::new(dn.w(p), dn.out, dn.inp).t(),
        1.0,
    );
}

/// `∂W += gyᵀ·x`, `∂b += Σ gy`.
pub fn dense_param_grad(dn: &Dense, x: &[f32], gy: &[f32], rows: usize, grad: &mut [f32]) {
    kernels::matmul_strided(
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
pub fn dense_input_grad(dn: &Dense, p: &[f32], gy: &[f32], rows: usize, gx: &mut [f32], acc: bool) {
    kernels::matmul_strided(
        gx,
        dn.inp,
        acc,
        Mat::new(&gy[..rows * dn.out], rows, dn.out),
        Mat::new(dn.w(p), dn.out, dn.inp),
        1.0,
    );
}
