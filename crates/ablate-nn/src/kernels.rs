//! Slice kernels of the CPU backend: a checked wrapper over `gemm`, and the element-wise loops,
//! each compiled twice (baseline and AVX2+FMA) and picked at run time. Both builds give
//! bit-identical results: LLVM never fuses a multiply-add on its own, and where the code asks
//! for one (`mul_add`) it is exactly rounded either way (an instruction, or libm's `fmaf`).

/// Compiles `$body` as a baseline function and as an AVX2+FMA one (so LLVM vectorises it
/// 8-wide), and dispatches on the CPU at run time (`is_x86_feature_detected!` caches its probe).
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        // The one unsafe call: the AVX2 build, on a CPU that has AVX2 and FMA.
        #[allow(unsafe_code)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub use crate::multiversion;

/// A read-only strided matrix view (non-negative strides, in elements).
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix stored densely in `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        let v = View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        };
        v.check();
        v
    }

    /// A row-major `rows × cols` matrix whose rows start `rs` elements apart in `data`.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        let v = View {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        };
        v.check();
        v
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            assert!((self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len());
        }
    }
}

/// `dst := [dst +] beta · a·b` with `dst` row-major `a.rows × b.cols`; `dst` is read only when
/// `accumulate`. Single-threaded: the backends parallelise over batch shards instead, because
/// at these sizes gemm's own threads cost more in hand-off than they save.
pub fn matmul(dst: &mut [f32], accumulate: bool, a: View<'_>, b: View<'_>, beta: f32) {
    matmul_strided(dst, b.cols, accumulate, a, b, beta);
}

/// [`matmul`] into a destination whose rows start `drs` elements apart (a column block of a
/// wider matrix); elements between the rows are left alone.
pub fn matmul_strided(
    dst: &mut [f32],
    drs: usize,
    accumulate: bool,
    a: View<'_>,
    b: View<'_>,
    beta: f32,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= drs && (m - 1) * drs + n <= dst.len(),
        "destination too small"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * drs..r * drs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: `View::new`/`strided`/`t` and the asserts above keep every index gemm touches in
    // bounds: `a` reads (m-1)·rs + (k-1)·cs, `b` likewise, `dst` writes below (m-1)·drs + n;
    // `dst` is a unique borrow, so it aliases neither operand.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            drs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Rows of `dst` (`cols` wide) := `src` row + `scale · bias`; with `src` = None, := `scale · bias`.
pub fn set_rows_bias(dst: &mut [f32], src: Option<&[f32]>, bias: &[f32], scale: f32) {
    match src {
        Some(src) => add_bias_rows(dst, src, bias, scale),
        None => fill_bias_rows(dst, bias, scale),
    }
}

multiversion! {
    fn add_bias_rows(dst: &mut [f32], src: &[f32], bias: &[f32], scale: f32) {
        let cols = bias.len();
        for (d, s) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(cols)) {
            for ((d, s), b) in d.iter_mut().zip(s).zip(bias) {
                *d = *s + scale * *b;
            }
        }
    }
}

multiversion! {
    fn fill_bias_rows(dst: &mut [f32], bias: &[f32], scale: f32) {
        let cols = bias.len();
        for d in dst.chunks_exact_mut(cols) {
            for (d, b) in d.iter_mut().zip(bias) {
                *d = scale * *b;
            }
        }
    }
}

/// Clamp beyond which `tanh` rounds to ±1 in f32.
#[allow(clippy::excessive_precision)]
const TANH_CLAMP: f32 = 7.90531110763549805;

/// `tanh` as the odd rational minimax approximation of degree 13/6 used by Eigen, XLA and ONNX
/// Runtime's MLAS: branch-free, so it vectorises; within a few ulp of the exact value
/// (pinned by `fast_tanh_is_accurate`). libm's `tanhf` would cost more than all the matrix
/// products of a step.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, digit for digit
pub fn tanh_approx(x: f32) -> f32 {
    let x = x.clamp(-TANH_CLAMP, TANH_CLAMP); // NaN stays NaN
    let x2 = x * x;
    let mut p = -2.76076847742355e-16_f32;
    p = p.mul_add(x2, 2.00018790482477e-13);
    p = p.mul_add(x2, -8.60467152213735e-11);
    p = p.mul_add(x2, 5.12229709037114e-08);
    p = p.mul_add(x2, 1.48572235717979e-05);
    p = p.mul_add(x2, 6.37261928875436e-04);
    p = p.mul_add(x2, 4.89352455891786e-03);
    p *= x;
    let mut q = 1.19825839466702e-06_f32;
    q = q.mul_add(x2, 1.18534705686654e-04);
    q = q.mul_add(x2, 2.26843463243900e-03);
    q = q.mul_add(x2, 4.89352518554385e-03);
    p / q
}

multiversion! {
    /// In place: `a := tanh(a)`.
    pub fn tanh_inplace(a: &mut [f32]) {
        for v in a.iter_mut() {
            *v = tanh_approx(*v);
        }
    }
}

multiversion! {
    /// Back through `a = tanh(z)`: `g := g ⊙ (1 − a²)`, and `bias_grad += Σ_rows g`.
    pub fn tanh_backward(g: &mut [f32], a: &[f32], bias_grad: &mut [f32]) {
        let cols = bias_grad.len();
        for (g, a) in g.chunks_exact_mut(cols).zip(a.chunks_exact(cols)) {
            for ((g, a), bg) in g.iter_mut().zip(a).zip(bias_grad.iter_mut()) {
                *g *= 1.0 - *a * *a;
                *bg += *g;
            }
        }
    }
}

multiversion! {
    /// In place: `a := max(a, 0)` (NaN becomes 0, as dfdx's `relu` does).
    pub fn relu_inplace(a: &mut [f32]) {
        for v in a.iter_mut() {
            *v = if *v > 0.0 { *v } else { 0.0 };
        }
    }
}

multiversion! {
    /// Back through `a = relu(z)`: `g := g ⊙ [a > 0]` (so relu'(0) = 0; `a > 0` iff `z > 0`),
    /// and `bias_grad += Σ_rows g`.
    pub fn relu_backward(g: &mut [f32], a: &[f32], bias_grad: &mut [f32]) {
        let cols = bias_grad.len();
        for (g, a) in g.chunks_exact_mut(cols).zip(a.chunks_exact(cols)) {
            for ((g, a), bg) in g.iter_mut().zip(a).zip(bias_grad.iter_mut()) {
                *g = if *a > 0.0 { *g } else { 0.0 };
                *bg += *g;
            }
        }
    }
}

multiversion! {
    /// Rows of `dst` += `scale · bias`.
    pub fn add_rows_bias(dst: &mut [f32], bias: &[f32], scale: f32) {
        let cols = bias.len();
        for d in dst.chunks_exact_mut(cols) {
            for (d, b) in d.iter_mut().zip(bias) {
                *d += scale * *b;
            }
        }
    }
}

multiversion! {
    /// `dst := a·x + b·y` (with `a = 1`, exactly `x + b·y`).
    pub fn combine(dst: &mut [f32], a: f32, x: &[f32], b: f32, y: &[f32]) {
        for ((d, x), y) in dst.iter_mut().zip(x).zip(y) {
            *d = a * *x + b * *y;
        }
    }
}

multiversion! {
    /// `dst += a·src`.
    pub fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += a * *s;
        }
    }
}

multiversion! {
    /// `dst *= a`.
    pub fn scale(dst: &mut [f32], a: f32) {
        for d in dst.iter_mut() {
            *d *= a;
        }
    }
}

multiversion! {
    /// `dst += scale · Σ_rows src` with `src` row-major, `dst.len()` columns.
    pub fn add_col_sums(dst: &mut [f32], src: &[f32], scale: f32) {
        let cols = dst.len();
        // Sum first, scale once: the same order as the tensor path's `sum` then `* h`.
        let mut acc = [0.0f32; 64];
        for c0 in (0..cols).step_by(64) {
            let w = (cols - c0).min(64);
            let acc = &mut acc[..w];
            acc.fill(0.0);
            for row in src.chunks_exact(cols) {
                for (a, s) in acc.iter_mut().zip(&row[c0..c0 + w]) {
                    *a += *s;
                }
            }
            for (d, a) in dst[c0..c0 + w].iter_mut().zip(acc.iter()) {
                *d += scale * *a;
            }
        }
    }
}

multiversion! {
    /// `dst += src`.
    pub fn add_assign(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += *s;
        }
    }
}

/// Adam's hyper-parameters for one update, bias corrections folded in.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    /// `1 / sqrt(1 − β2^t)`
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
    /// `lr / (1 − β1^t)`
    pub step: f32,
}

impl AdamStep {
    /// Update number `t` (1-based) at learning rate `lr`, with moment decays `beta1`, `beta2`.
    pub fn new(lr: f32, t: u64, beta1: f32, beta2: f32, eps: f32) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (beta1 as f64).powi(t);
        let bc2 = 1.0 - (beta2 as f64).powi(t);
        AdamStep {
            beta1,
            beta2,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps,
            step: (lr as f64 / bc1) as f32,
        }
    }
}

multiversion! {
    /// One fused Adam update (PyTorch's formulation):
    /// `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`, `p ← p − step · m / (√v / √bc2 + ε)`,
    /// in the same operation order as the tensor path, so equal gradients give equal parameters.
    pub fn adam(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamStep) {
        let (c1, c2) = (1.0 - s.beta1, 1.0 - s.beta2);
        for (((p, m), v), g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *m = *m * s.beta1 + *g * c1;
            *v = *v * s.beta2 + (*g * *g) * c2;
            let denom = v.sqrt() * s.inv_sqrt_bc2 + s.eps;
            *p = *p * 1.0 + (*m / denom) * -s.step;
        }
    }
}

/// The index of the first maximum of `row` (0 for an empty row; a NaN wins only in first place).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = j;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_is_accurate() {
        let mut worst_abs = 0.0f64;
        let mut worst_rel = 0.0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let exact = (x as f64).tanh();
            let got = tanh_approx(x) as f64;
            worst_abs = worst_abs.max((got - exact).abs());
            if exact.abs() > 1e-30 {
                worst_rel = worst_rel.max(((got - exact) / exact).abs());
            }
            assert!(got.abs() <= 1.0, "tanh({x}) = {got} leaves [-1, 1]");
            x += 1.0e-3;
        }
        assert!(worst_abs < 5e-7, "max abs error {worst_abs}");
        assert!(worst_rel < 5e-6, "max rel error {worst_rel}");
        assert!(tanh_approx(f32::NAN).is_nan());
    }

    #[test]
    fn matmul_matches_naive_with_transposes() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut dst = vec![1.0; m * n];
        // dst += 0.5 · a · btᵀ
        matmul(
            &mut dst,
            true,
            View::new(&a, m, k),
            View::new(&bt, n, k).t(),
            0.5,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 =
                    1.0 + 0.5 * (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn col_sums_handle_wide_matrices() {
        let cols = 70;
        let src: Vec<f32> = (0..3 * cols).map(|i| i as f32).collect();
        let mut dst = vec![1.0; cols];
        add_col_sums(&mut dst, &src, 2.0);
        for (c, d) in dst.iter().enumerate() {
            let want = 1.0 + 2.0 * (3 * c + 3 * cols) as f32;
            assert_eq!(*d, want);
        }
    }
}
