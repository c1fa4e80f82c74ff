//! Kernels over member lanes: every buffer element of a fused group is a [`V`], one `f32` per
//! member, and every operation is applied lane by lane — so each lane does exactly the scalar
//! operations the unfused CPU path ([`crate::cpu`]) does for that element of that member, in the
//! same order, and the results are bit-identical to it.
//!
//! The element-wise loops copy `ablate_nn::kernels` operation for operation. The products copy
//! what `gemm` 0.15 (the version the unfused path calls, x86-64 with FMA) computes per output
//! element of `dst (+)= beta·A·B` with inner size `k` (pinned by
//! `lane_products_equal_gemm_bit_for_bit` over the shapes the flows use):
//!
//! - `k ≤ 2` (gemm's `gevv`, unfused arithmetic, `beta` folded into `A`): `dst = B₁ⱼ·(beta·Aᵢ₁) +
//!   (B₀ⱼ·(beta·Aᵢ₀) + dst)` (without the `dst` term when not accumulating);
//! - otherwise (its FMA microkernel, one depth block since `k ≤ 512`): `acc = 0`,
//!   `acc = fma(Aᵢₖ, Bₖⱼ, acc)` for `k` in order, then `dst = beta·acc`, or when accumulating
//!   `dst = fma(beta, acc, dst)` in the full 8-row tiles of its transposed problem (columns
//!   `j < ⌊cols/8⌋·8` of `dst`) and `dst + beta·acc` in the last partial one.
//!
//! Both need every dimension of the product to be at least 2 (gemm takes a `gemv` path
//! otherwise) — [`super::lanes_fit`] checks that before a group takes this path.

/// Compiles `$body` for AVX-512 and for AVX2 (both with FMA, which
/// [`super::lanes_available`] checks before any lane kernel runs) and dispatches on the CPU:
/// one small function per kernel, so each is vectorised across the lanes.
macro_rules! lanes_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        // The one unsafe call: a build for features the CPU was just checked for.
        #[allow(unsafe_code)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, and FMA (checked by `lanes_available`).
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

/// Members per lane block: one AVX-512 register of `f32`, two AVX2 ones.
pub(crate) const LANES: usize = 16;

/// One element of every member of a lane block.
pub(crate) type V = [f32; LANES];

pub(crate) const ZERO: V = [0.0; LANES];

/// Rows of gemm's FMA microkernel tile (`N` = 8 lanes of an AVX2 register): accumulating
/// products use a fused epilogue in whole tiles only.
const GEMM_TILE: usize = 8;

/// A read-only strided matrix of lane elements.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    d: &'a [V],
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols`, dense.
    #[inline(always)]
    pub(crate) fn new(d: &'a [V], rows: usize, cols: usize) -> Self {
        assert!(d.len() >= rows * cols, "lane matrix too small");
        Mat {
            d,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    #[inline(always)]
    pub(crate) fn t(self) -> Self {
        Mat {
            d: self.d,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> &V {
        &self.d[i * self.rs + j * self.cs]
    }
}

#[inline(always)]
fn fma(a: &V, b: &V, c: &V) -> V {
    std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
}

lanes_fn! {
    /// `dst (+)= beta·a·b` into a row-major destination whose rows start `drs` apart; see the
    /// module doc for the per-element order.
    pub(crate) fn matmul(dst: &mut [V], drs: usize, accumulate: bool, a: Mat<'_>, b: Mat<'_>, beta: f32) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert_eq!(k, b.rows, "inner dimensions differ");
        assert!(m >= 2 && n >= 2 && k >= 1, "gemm's microkernel or gevv shapes only");
        assert!(n <= drs && (m - 1) * drs + n <= dst.len(), "destination too small");
        if k <= 2 {
            gevv(dst, drs, accumulate, a, b, beta);
            return;
        }
        let fused_cols = n / GEMM_TILE * GEMM_TILE;
        let mut i = 0;
        while i + 4 <= m {
            row_tiles::<4>(dst, drs, accumulate, a, b, beta, i, fused_cols);
            i += 4;
        }
        while i < m {
            row_tiles::<1>(dst, drs, accumulate, a, b, beta, i, fused_cols);
            i += 1;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_tiles<const TI: usize>(
    dst: &mut [V],
    drs: usize,
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    i: usize,
    fused_cols: usize,
) {
    let n = b.cols;
    let mut j = 0;
    while j + 4 <= n {
        tile::<TI, 4>(dst, drs, accumulate, a, b, beta, i, j, fused_cols);
        j += 4;
    }
    match n - j {
        3 => tile::<TI, 3>(dst, drs, accumulate, a, b, beta, i, j, fused_cols),
        2 => tile::<TI, 2>(dst, drs, accumulate, a, b, beta, i, j, fused_cols),
        1 => tile::<TI, 1>(dst, drs, accumulate, a, b, beta, i, j, fused_cols),
        _ => {}
    }
}

/// The `TI × TJ` outputs at `(i, j)`: accumulators in registers, `k` in order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const TI: usize, const TJ: usize>(
    dst: &mut [V],
    drs: usize,
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    i: usize,
    j: usize,
    fused_cols: usize,
) {
    let mut acc = [[ZERO; TJ]; TI];
    for kk in 0..a.cols {
        let bv: [V; TJ] = std::array::from_fn(|t| *b.at(kk, j + t));
        for (ti, row) in acc.iter_mut().enumerate() {
            let av = *a.at(i + ti, kk);
            for (c, bv) in row.iter_mut().zip(&bv) {
                *c = fma(&av, bv, c);
            }
        }
    }
    for (ti, row) in acc.iter().enumerate() {
        for (tj, c) in row.iter().enumerate() {
            let d = &mut dst[(i + ti) * drs + j + tj];
            if !accumulate {
                *d = std::array::from_fn(|l| beta * c[l]);
            } else if j + tj < fused_cols {
                *d = std::array::from_fn(|l| beta.mul_add(c[l], d[l]));
            } else {
                *d = std::array::from_fn(|l| d[l] + beta * c[l]);
            }
        }
    }
}

/// gemm's `gevv` (`k` = 1 or 2).
#[inline(always)]
fn gevv(dst: &mut [V], drs: usize, accumulate: bool, a: Mat<'_>, b: Mat<'_>, beta: f32) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for i in 0..m {
        let a0: V = std::array::from_fn(|l| beta * a.at(i, 0)[l]);
        let a1: V = if k == 2 {
            std::array::from_fn(|l| beta * a.at(i, 1)[l])
        } else {
            ZERO
        };
        for jj in 0..n {
            let d = &mut dst[i * drs + jj];
            let b0 = b.at(0, jj);
            *d = match (k, accumulate) {
                (1, true) => std::array::from_fn(|l| b0[l] * a0[l] + d[l]),
                (1, false) => std::array::from_fn(|l| b0[l] * a0[l]),
                (_, true) => {
                    let b1 = b.at(1, jj);
                    std::array::from_fn(|l| b1[l] * a1[l] + (b0[l] * a0[l] + d[l]))
                }
                (_, false) => {
                    let b1 = b.at(1, jj);
                    std::array::from_fn(|l| b1[l] * a1[l] + b0[l] * a0[l])
                }
            };
        }
    }
}

lanes_fn! {
    /// Rows of `dst` (`bias.len()` wide) := `src` row + `scale·bias`, or `scale·bias`.
    pub(crate) fn set_rows_bias(dst: &mut [V], src: Option<&[V]>, bias: &[V], scale: f32) {
        let cols = bias.len();
        match src {
            Some(src) => {
                for (d, s) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(cols)) {
                    for ((d, s), b) in d.iter_mut().zip(s).zip(bias) {
                        *d = std::array::from_fn(|l| s[l] + scale * b[l]);
                    }
                }
            }
            None => {
                for d in dst.chunks_exact_mut(cols) {
                    for (d, b) in d.iter_mut().zip(bias) {
                        *d = std::array::from_fn(|l| scale * b[l]);
                    }
                }
            }
        }
    }
}

lanes_fn! {
    /// Rows of `dst` += `scale·bias`.
    pub(crate) fn add_rows_bias(dst: &mut [V], bias: &[V], scale: f32) {
        for d in dst.chunks_exact_mut(bias.len()) {
            for (d, b) in d.iter_mut().zip(bias) {
                *d = std::array::from_fn(|l| d[l] + scale * b[l]);
            }
        }
    }
}

lanes_fn! {
    pub(crate) fn tanh_inplace(a: &mut [V]) {
        for v in a {
            *v = std::array::from_fn(|l| crate::kernels::tanh_approx(v[l]));
        }
    }
}

lanes_fn! {
    pub(crate) fn relu_inplace(a: &mut [V]) {
        for v in a {
            *v = std::array::from_fn(|l| if v[l] > 0.0 { v[l] } else { 0.0 });
        }
    }
}

lanes_fn! {
    /// `g := g ⊙ (1 − a²)`, `bias_grad += Σ_rows g`.
    pub(crate) fn tanh_backward(g: &mut [V], a: &[V], bias_grad: &mut [V]) {
        let cols = bias_grad.len();
        for (g, a) in g.chunks_exact_mut(cols).zip(a.chunks_exact(cols)) {
            for ((g, a), bg) in g.iter_mut().zip(a).zip(bias_grad.iter_mut()) {
                *g = std::array::from_fn(|l| g[l] * (1.0 - a[l] * a[l]));
                *bg = std::array::from_fn(|l| bg[l] + g[l]);
            }
        }
    }
}

lanes_fn! {
    /// `g := g ⊙ [a > 0]`, `bias_grad += Σ_rows g`.
    pub(crate) fn relu_backward(g: &mut [V], a: &[V], bias_grad: &mut [V]) {
        let cols = bias_grad.len();
        for (g, a) in g.chunks_exact_mut(cols).zip(a.chunks_exact(cols)) {
            for ((g, a), bg) in g.iter_mut().zip(a).zip(bias_grad.iter_mut()) {
                *g = std::array::from_fn(|l| if a[l] > 0.0 { g[l] } else { 0.0 });
                *bg = std::array::from_fn(|l| bg[l] + g[l]);
            }
        }
    }
}

lanes_fn! {
    /// `dst := a·x + b·y`.
    pub(crate) fn combine(dst: &mut [V], a: f32, x: &[V], b: f32, y: &[V]) {
        for ((d, x), y) in dst.iter_mut().zip(x).zip(y) {
            *d = std::array::from_fn(|l| a * x[l] + b * y[l]);
        }
    }
}

lanes_fn! {
    /// `dst += a·src`.
    pub(crate) fn axpy(dst: &mut [V], a: f32, src: &[V]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = std::array::from_fn(|l| d[l] + a * s[l]);
        }
    }
}

lanes_fn! {
    /// `dst *= a`.
    pub(crate) fn scale(dst: &mut [V], a: f32) {
        for d in dst {
            *d = std::array::from_fn(|l| d[l] * a);
        }
    }
}

lanes_fn! {
    /// `dst += src`.
    pub(crate) fn add_assign(dst: &mut [V], src: &[V]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = std::array::from_fn(|l| d[l] + s[l]);
        }
    }
}

lanes_fn! {
    /// `dst += scale·Σ_rows src` (sum first, scale once).
    pub(crate) fn add_col_sums(dst: &mut [V], src: &[V], scale: f32) {
        let cols = dst.len();
        for (c, d) in dst.iter_mut().enumerate() {
            let mut acc = ZERO;
            for row in src.chunks_exact(cols) {
                acc = std::array::from_fn(|l| acc[l] + row[c][l]);
            }
            *d = std::array::from_fn(|l| d[l] + scale * acc[l]);
        }
    }
}

/// `y := x·Wᵀ + b` (a dense layer, `W` `[out, inp]` at `w`, `b` at `b` in `p`).
pub(crate) fn dense_forward(dn: &crate::params::Dense, p: &[V], x: &[V], rows: usize, y: &mut [V]) {
    let y = &mut y[..rows * dn.out];
    set_rows_bias(y, None, &p[dn.b..dn.b + dn.out], 1.0);
    matmul(
        y,
        dn.out,
        true,
        Mat::new(&x[..rows * dn.inp], rows, dn.inp),
        Mat::new(&p[dn.w..dn.w + dn.out * dn.inp], dn.out, dn.inp).t(),
        1.0,
    );
}

/// `∂W += gyᵀ·x`, `∂b += Σ gy`.
pub(crate) fn dense_param_grad(
    dn: &crate::params::Dense,
    x: &[V],
    gy: &[V],
    rows: usize,
    grad: &mut [V],
) {
    matmul(
        &mut grad[dn.w..dn.w + dn.out * dn.inp],
        dn.inp,
        true,
        Mat::new(&gy[..rows * dn.out], rows, dn.out).t(),
        Mat::new(&x[..rows * dn.inp], rows, dn.inp),
        1.0,
    );
    add_col_sums(&mut grad[dn.b..dn.b + dn.out], &gy[..rows * dn.out], 1.0);
}

/// `gx (+)= gy·W`.
pub(crate) fn dense_input_grad(
    dn: &crate::params::Dense,
    p: &[V],
    gy: &[V],
    rows: usize,
    gx: &mut [V],
    acc: bool,
) {
    matmul(
        gx,
        dn.inp,
        acc,
        Mat::new(&gy[..rows * dn.out], rows, dn.out),
        Mat::new(&p[dn.w..dn.w + dn.out * dn.inp], dn.out, dn.inp),
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{self, View};

    /// Lane `l` of a lane buffer made of `LANES` scalar buffers.
    fn interleave(bufs: &[Vec<f32>]) -> Vec<V> {
        (0..bufs[0].len())
            .map(|i| std::array::from_fn(|l| bufs[l][i]))
            .collect()
    }

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut g = crate::rng::SplitMix64::new(seed, 5);
        (0..len).map(|_| g.uniform(1.7)).collect()
    }

    /// Every product shape of a flow step — `k` ∈ {1, 2, 3, dim, hidden, shard rows}, both
    /// operand layouts the flows pass (plain and transposed), accumulating or not, `beta` 1 or
    /// not — computed by `gemm` per lane and by [`matmul`] on all lanes at once: equal bits.
    #[test]
    fn lane_products_equal_gemm_bit_for_bit() {
        // The order pinned is that of gemm's FMA kernel, the one it takes on such a CPU.
        if !super::super::lanes_available() {
            return;
        }
        let mut seed = 0;
        for &m in &[2usize, 3, 9, 17, 32, 100] {
            for &k in &[1usize, 2, 3, 5, 32, 100] {
                for &n in &[2usize, 3, 8, 17, 32] {
                    for (accumulate, beta) in [(true, 1.0f32), (true, 0.37), (false, 0.5)] {
                        for (ta, tb) in [(false, false), (false, true), (true, false)] {
                            seed += 1;
                            let mut dsts: Vec<Vec<f32>> = Vec::new();
                            let mut as_: Vec<Vec<f32>> = Vec::new();
                            let mut bs: Vec<Vec<f32>> = Vec::new();
                            for l in 0..LANES {
                                let s = seed * 100 + l as u64;
                                as_.push(data(m * k, s));
                                bs.push(data(k * n, s + 50));
                                dsts.push(data(m * n, s + 77));
                            }
                            let (la, lb, ld) =
                                (interleave(&as_), interleave(&bs), interleave(&dsts));
                            let mut got = ld.clone();
                            let a = if ta {
                                Mat::new(&la, k, m).t()
                            } else {
                                Mat::new(&la, m, k)
                            };
                            let b = if tb {
                                Mat::new(&lb, n, k).t()
                            } else {
                                Mat::new(&lb, k, n)
                            };
                            matmul(&mut got, n, accumulate, a, b, beta);
                            for l in 0..LANES {
                                let a = if ta {
                                    View::new(&as_[l], k, m).t()
                                } else {
                                    View::new(&as_[l], m, k)
                                };
                                let b = if tb {
                                    View::new(&bs[l], n, k).t()
                                } else {
                                    View::new(&bs[l], k, n)
                                };
                                let mut want = dsts[l].clone();
                                kernels::matmul(&mut want, accumulate, a, b, beta);
                                for (i, w) in want.iter().enumerate() {
                                    assert_eq!(
                                        got[i][l].to_bits(),
                                        w.to_bits(),
                                        "m {m} k {k} n {n} acc {accumulate} beta {beta} \
                                         ta {ta} tb {tb} lane {l} element {i}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
