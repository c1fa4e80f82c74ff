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

/// Members per lane block: one AVX-512 register of `f32`, two AVX2 ones.
pub(crate) const LANES: usize = 16;

/// One element of every member of a lane block, aligned to a cache line (an AVX-512 load
/// that never splits one).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub(crate) struct V(pub [f32; LANES]);

impl std::ops::Index<usize> for V {
    type Output = f32;
    #[inline(always)]
    fn index(&self, l: usize) -> &f32 {
        &self.0[l]
    }
}

impl std::ops::IndexMut<usize> for V {
    #[inline(always)]
    fn index_mut(&mut self, l: usize) -> &mut f32 {
        &mut self.0[l]
    }
}

pub(crate) const ZERO: V = V([0.0; LANES]);

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

/// The vector operations the lane kernels are written in, one [`V`] per register value: an
/// AVX-512 register, or two AVX2 ones. Each operation is the IEEE one the scalar code does,
/// lane by lane (`fma` is one rounding, as `f32::mul_add`).
pub(crate) trait Isa: Copy {
    type R: Copy;
    fn load(self, v: &V) -> Self::R;
    fn store(self, v: &mut V, r: Self::R);
    fn splat(self, x: f32) -> Self::R;
    fn add(self, a: Self::R, b: Self::R) -> Self::R;
    fn sub(self, a: Self::R, b: Self::R) -> Self::R;
    fn mul(self, a: Self::R, b: Self::R) -> Self::R;
    fn div(self, a: Self::R, b: Self::R) -> Self::R;
    /// `a·b + c`, rounded once.
    fn fma(self, a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    /// `if a > b { a } else { b }` (so `b` when either is NaN).
    fn max(self, a: Self::R, b: Self::R) -> Self::R;
    /// `if a < b { a } else { b }` (so `b` when either is NaN).
    fn min(self, a: Self::R, b: Self::R) -> Self::R;
    /// `if a > 0 { g } else { +0 }` (NaN `a`: +0).
    fn where_positive(self, g: Self::R, a: Self::R) -> Self::R;
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{Isa, V};
    use std::arch::x86_64::*;

    /// Proof that the CPU has AVX-512F and FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(());

    impl Avx512 {
        /// # Safety
        /// The CPU has AVX-512F and FMA.
        pub(crate) unsafe fn new() -> Self {
            Avx512(())
        }
    }

    // SAFETY (every method): an `Avx512` exists only on a CPU with AVX-512F; `V` is 64-byte
    // aligned, as the aligned loads and stores need.
    impl Isa for Avx512 {
        type R = __m512;
        #[inline(always)]
        fn load(self, v: &V) -> __m512 {
            unsafe { _mm512_load_ps(v.0.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, v: &mut V, r: __m512) {
            unsafe { _mm512_store_ps(v.0.as_mut_ptr(), r) }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        fn where_positive(self, g: __m512, a: __m512) -> __m512 {
            unsafe {
                let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, _mm512_setzero_ps());
                _mm512_maskz_mov_ps(k, g)
            }
        }
    }

    /// Proof that the CPU has AVX2 and FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(());

    impl Avx2 {
        /// # Safety
        /// The CPU has AVX2 and FMA.
        pub(crate) unsafe fn new() -> Self {
            Avx2(())
        }
    }

    macro_rules! halves {
        ($a:ident, $b:ident, $f:ident) => {
            unsafe { ($f($a.0, $b.0), $f($a.1, $b.1)) }
        };
    }

    // SAFETY (every method): an `Avx2` exists only on a CPU with AVX2 and FMA; `V` is 64-byte
    // aligned, so both halves are 32-byte aligned.
    impl Isa for Avx2 {
        type R = (__m256, __m256);
        #[inline(always)]
        fn load(self, v: &V) -> Self::R {
            unsafe {
                (
                    _mm256_load_ps(v.0.as_ptr()),
                    _mm256_load_ps(v.0.as_ptr().add(8)),
                )
            }
        }
        #[inline(always)]
        fn store(self, v: &mut V, r: Self::R) {
            unsafe {
                _mm256_store_ps(v.0.as_mut_ptr(), r.0);
                _mm256_store_ps(v.0.as_mut_ptr().add(8), r.1);
            }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> Self::R {
            unsafe { (_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        fn add(self, a: Self::R, b: Self::R) -> Self::R {
            halves!(a, b, _mm256_add_ps)
        }
        #[inline(always)]
        fn sub(self, a: Self::R, b: Self::R) -> Self::R {
            halves!(a, b, _mm256_sub_ps)
        }
        #[inline(always)]
        fn mul(self, a: Self::R, b: Self::R) -> Self::R {
            halves!(a, b, _mm256_mul_ps)
        }
        #[inline(always)]
        fn div(self, a: Self::R, b: Self::R) -> Self::R {
            halves!(a, b, _mm256_div_ps)
        }
        #[inline(always)]
        fn fma(self, a: Self::R, b: Self::R, c: Self::R) -> Self::R {
            unsafe {
                (
                    _mm256_fmadd_ps(a.0, b.0, c.0),
                    _mm256_fmadd_ps(a.1, b.1, c.1),
                )
            }
        }
        #[inline(always)]
        fn max(self, a: Self::R, b: Self::R) -> Self::R {
            halves!(a, b, _mm256_max_ps)
        }
        #[inline(always)]
        fn min(self, a: Self::R, b: Self::R) -> Self::R {
            halves!(a, b, _mm256_min_ps)
        }
        #[inline(always)]
        fn where_positive(self, g: Self::R, a: Self::R) -> Self::R {
            unsafe {
                let z = _mm256_setzero_ps();
                (
                    _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a.0, z), g.0),
                    _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a.1, z), g.1),
                )
            }
        }
    }
}

/// Tests set this to run the AVX2 kernels on a CPU that has AVX-512 too: both must give the
/// same bits (and a machine without AVX-512 runs only those).
#[cfg(test)]
pub(crate) static AVX2_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the lane kernels may take their AVX-512 build (always, outside tests).
#[inline]
pub(crate) fn avx512_allowed() -> bool {
    #[cfg(test)]
    if AVX2_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    true
}

/// Compiles `$body` (generic over the [`Isa`] token `$isa`) for AVX-512 and for AVX2, both
/// with FMA, and dispatches on the CPU; one small function per kernel. Only called where
/// [`super::lanes_available`] holds.
macro_rules! lanes_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($isa:ident $(, $arg:ident : $ty:ty)* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        // The unsafe calls: builds for features the CPU was just checked for.
        #[allow(unsafe_code)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp<I: Isa>($isa: I, $($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) {
                    // SAFETY: only called on a CPU with AVX-512F and FMA (below).
                    imp(unsafe { x86::Avx512::new() }, $($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) {
                    // SAFETY: only called on a CPU with AVX2 and FMA (below).
                    imp(unsafe { x86::Avx2::new() }, $($arg),*)
                }
                if std::is_x86_feature_detected!("fma") {
                    if std::is_x86_feature_detected!("avx512f")
                        && $crate::fused::lanes::avx512_allowed()
                    {
                        // SAFETY: the CPU has AVX-512F and FMA.
                        return unsafe { avx512($($arg),*) };
                    }
                    if std::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU has AVX2 and FMA.
                        return unsafe { avx2($($arg),*) };
                    }
                }
            }
            let _ = imp::<NoIsa>;
            unreachable!("lane kernels run only where `lanes_available` holds")
        }
    };
}

/// Names `imp` for a type on targets without x86 (never called).
#[derive(Clone, Copy)]
#[allow(dead_code)]
enum NoIsa {}

impl Isa for NoIsa {
    type R = ();
    fn load(self, _: &V) {}
    fn store(self, _: &mut V, _: ()) {}
    fn splat(self, _: f32) {}
    fn add(self, _: (), _: ()) {}
    fn sub(self, _: (), _: ()) {}
    fn mul(self, _: (), _: ()) {}
    fn div(self, _: (), _: ()) {}
    fn fma(self, _: (), _: (), _: ()) {}
    fn max(self, _: (), _: ()) {}
    fn min(self, _: (), _: ()) {}
    fn where_positive(self, _: (), _: ()) {}
}

lanes_fn! {
    /// `dst (+)= beta·a·b` into a row-major destination whose rows start `drs` apart; see the
    /// module doc for the per-element order.
    pub(crate) fn matmul(isa, dst: &mut [V], drs: usize, accumulate: bool, a: Mat<'_>, b: Mat<'_>, beta: f32) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert_eq!(k, b.rows, "inner dimensions differ");
        assert!(m >= 2 && n >= 2 && k >= 1, "gemm's microkernel or gevv shapes only");
        assert!(n <= drs && (m - 1) * drs + n <= dst.len(), "destination too small");
        if k <= 2 {
            gevv(isa, dst, drs, accumulate, a, b, beta);
            return;
        }
        let fused_cols = n / GEMM_TILE * GEMM_TILE;
        let mut i = 0;
        while i + 4 <= m {
            row_tiles::<I, 4>(isa, dst, drs, accumulate, a, b, beta, i, fused_cols);
            i += 4;
        }
        while i < m {
            row_tiles::<I, 1>(isa, dst, drs, accumulate, a, b, beta, i, fused_cols);
            i += 1;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_tiles<I: Isa, const TI: usize>(
    isa: I,
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
        tile::<I, TI, 4>(isa, dst, drs, accumulate, a, b, beta, i, j, fused_cols);
        j += 4;
    }
    match n - j {
        3 => tile::<I, TI, 3>(isa, dst, drs, accumulate, a, b, beta, i, j, fused_cols),
        2 => tile::<I, TI, 2>(isa, dst, drs, accumulate, a, b, beta, i, j, fused_cols),
        1 => tile::<I, TI, 1>(isa, dst, drs, accumulate, a, b, beta, i, j, fused_cols),
        _ => {}
    }
}

/// The `TI × TJ` outputs at `(i, j)`: accumulators in registers, `k` in order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<I: Isa, const TI: usize, const TJ: usize>(
    isa: I,
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
    let mut acc = [[isa.splat(0.0); TJ]; TI];
    for kk in 0..a.cols {
        let bv: [I::R; TJ] = std::array::from_fn(|t| isa.load(b.at(kk, j + t)));
        for (ti, row) in acc.iter_mut().enumerate() {
            let av = isa.load(a.at(i + ti, kk));
            for (c, bv) in row.iter_mut().zip(&bv) {
                *c = isa.fma(av, *bv, *c);
            }
        }
    }
    let beta_v = isa.splat(beta);
    for (ti, row) in acc.iter().enumerate() {
        for (tj, c) in row.iter().enumerate() {
            let d = &mut dst[(i + ti) * drs + j + tj];
            let r = if !accumulate {
                isa.mul(beta_v, *c)
            } else if j + tj < fused_cols {
                isa.fma(beta_v, *c, isa.load(d))
            } else {
                isa.add(isa.load(d), isa.mul(beta_v, *c))
            };
            isa.store(d, r);
        }
    }
}

/// gemm's `gevv` (`k` = 1 or 2).
#[inline(always)]
fn gevv<I: Isa>(
    isa: I,
    dst: &mut [V],
    drs: usize,
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let beta_v = isa.splat(beta);
    for i in 0..m {
        let a0 = isa.mul(beta_v, isa.load(a.at(i, 0)));
        let a1 = if k == 2 {
            isa.mul(beta_v, isa.load(a.at(i, 1)))
        } else {
            isa.splat(0.0)
        };
        for jj in 0..n {
            let d = &mut dst[i * drs + jj];
            let t0 = isa.mul(isa.load(b.at(0, jj)), a0);
            let r = match (k, accumulate) {
                (1, true) => isa.add(t0, isa.load(d)),
                (1, false) => t0,
                (_, true) => {
                    let t1 = isa.mul(isa.load(b.at(1, jj)), a1);
                    isa.add(t1, isa.add(t0, isa.load(d)))
                }
                (_, false) => {
                    let t1 = isa.mul(isa.load(b.at(1, jj)), a1);
                    isa.add(t1, t0)
                }
            };
            isa.store(d, r);
        }
    }
}

lanes_fn! {
    /// Rows of `dst` (`bias.len()` wide) := `src` row + `scale·bias`, or `scale·bias`.
    pub(crate) fn set_rows_bias(isa, dst: &mut [V], src: Option<&[V]>, bias: &[V], scale: f32) {
        let cols = bias.len();
        let s_v = isa.splat(scale);
        match src {
            Some(src) => {
                for (d, s) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(cols)) {
                    for ((d, s), b) in d.iter_mut().zip(s).zip(bias) {
                        isa.store(d, isa.add(isa.load(s), isa.mul(s_v, isa.load(b))));
                    }
                }
            }
            None => {
                for d in dst.chunks_exact_mut(cols) {
                    for (d, b) in d.iter_mut().zip(bias) {
                        isa.store(d, isa.mul(s_v, isa.load(b)));
                    }
                }
            }
        }
    }
}

lanes_fn! {
    /// Rows of `dst` += `scale·bias`.
    pub(crate) fn add_rows_bias(isa, dst: &mut [V], bias: &[V], scale: f32) {
        let s_v = isa.splat(scale);
        for d in dst.chunks_exact_mut(bias.len()) {
            for (d, b) in d.iter_mut().zip(bias) {
                isa.store(d, isa.add(isa.load(d), isa.mul(s_v, isa.load(b))));
            }
        }
    }
}

/// [`crate::kernels::tanh_approx`] on every lane: the same clamp, coefficients and operations.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn tanh_v<I: Isa>(isa: I, x: I::R) -> I::R {
    const CLAMP: f32 = 7.90531110763549805;
    // `x.clamp(-C, C)`, NaN kept: `max(-C, x)` is `x` unless `-C > x`; `min(C, ·)` likewise.
    let x = isa.min(isa.splat(CLAMP), isa.max(isa.splat(-CLAMP), x));
    let x2 = isa.mul(x, x);
    let c = |v: f32| isa.splat(v);
    let mut p = c(-2.76076847742355e-16);
    p = isa.fma(p, x2, c(2.00018790482477e-13));
    p = isa.fma(p, x2, c(-8.60467152213735e-11));
    p = isa.fma(p, x2, c(5.12229709037114e-08));
    p = isa.fma(p, x2, c(1.48572235717979e-05));
    p = isa.fma(p, x2, c(6.37261928875436e-04));
    p = isa.fma(p, x2, c(4.89352455891786e-03));
    p = isa.mul(p, x);
    let mut q = c(1.19825839466702e-06);
    q = isa.fma(q, x2, c(1.18534705686654e-04));
    q = isa.fma(q, x2, c(2.26843463243900e-03));
    q = isa.fma(q, x2, c(4.89352518554385e-03));
    isa.div(p, q)
}

lanes_fn! {
    /// `a := tanh(a)`: only the tests call it (training fuses it into [`hidden_forward`]).
    #[cfg(test)]
    pub(crate) fn tanh_inplace(isa, a: &mut [V]) {
        for v in a {
            isa.store(v, tanh_v(isa, isa.load(v)));
        }
    }
}

lanes_fn! {
    #[cfg(test)]
    pub(crate) fn relu_inplace(isa, a: &mut [V]) {
        for v in a {
            let x = isa.load(v);
            isa.store(v, isa.where_positive(x, x));
        }
    }
}

lanes_fn! {
    /// `dst := a·x + b·y`.
    pub(crate) fn combine(isa, dst: &mut [V], a: f32, x: &[V], b: f32, y: &[V]) {
        let (a, b) = (isa.splat(a), isa.splat(b));
        for ((d, x), y) in dst.iter_mut().zip(x).zip(y) {
            isa.store(d, isa.add(isa.mul(a, isa.load(x)), isa.mul(b, isa.load(y))));
        }
    }
}

lanes_fn! {
    /// `dst += a·src`.
    pub(crate) fn axpy(isa, dst: &mut [V], a: f32, src: &[V]) {
        let a = isa.splat(a);
        for (d, s) in dst.iter_mut().zip(src) {
            isa.store(d, isa.add(isa.load(d), isa.mul(a, isa.load(s))));
        }
    }
}

lanes_fn! {
    /// `dst *= a`.
    pub(crate) fn scale(isa, dst: &mut [V], a: f32) {
        let a = isa.splat(a);
        for d in dst {
            isa.store(d, isa.mul(isa.load(d), a));
        }
    }
}

lanes_fn! {
    /// `dst += src`.
    pub(crate) fn add_assign(isa, dst: &mut [V], src: &[V]) {
        for (d, s) in dst.iter_mut().zip(src) {
            isa.store(d, isa.add(isa.load(d), isa.load(s)));
        }
    }
}

lanes_fn! {
    /// `dst += scale·Σ_rows src` (sum first, scale once).
    pub(crate) fn add_col_sums(isa, dst: &mut [V], src: &[V], scale: f32) {
        let cols = dst.len();
        let s_v = isa.splat(scale);
        for (c, d) in dst.iter_mut().enumerate() {
            let mut acc = isa.splat(0.0);
            for row in src.chunks_exact(cols) {
                acc = isa.add(acc, isa.load(&row[c]));
            }
            isa.store(d, isa.add(isa.load(d), isa.mul(s_v, acc)));
        }
    }
}

/// The fused first half of a field evaluation, per element the same operations as
/// `set_rows_bias(a, None, b1, 1)`, `matmul(a, hid, true, u, W1ᵀ, 1)` and the activation
/// (tanh if `tanh`, else relu), in one pass over `a` instead of three.
#[inline(always)]
fn hidden_forward_imp<I: Isa>(
    isa: I,
    a: &mut [V],
    u: &[V],
    rows: usize,
    w1: &[V],
    b1: &[V],
    tanh: bool,
) {
    let hid = b1.len();
    let d = w1.len() / hid;
    assert!(rows >= 2 && hid >= 2 && a.len() >= rows * hid && u.len() >= rows * d);
    let one = isa.splat(1.0);
    let fused_cols = hid / GEMM_TILE * GEMM_TILE;
    for h in 0..hid {
        let bias = isa.mul(one, isa.load(&b1[h]));
        let w = &w1[h * d..(h + 1) * d];
        for r in 0..rows {
            let ur = &u[r * d..(r + 1) * d];
            let z = if d <= 2 {
                // gevv: W1ₕₖ·(1·uᵣₖ), summed onto the bias
                let t0 = isa.mul(isa.load(&w[0]), isa.mul(one, isa.load(&ur[0])));
                let s = isa.add(t0, bias);
                if d == 2 {
                    isa.add(isa.mul(isa.load(&w[1]), isa.mul(one, isa.load(&ur[1]))), s)
                } else {
                    s
                }
            } else {
                let mut acc = isa.splat(0.0);
                for (uk, wk) in ur.iter().zip(w) {
                    acc = isa.fma(isa.load(uk), isa.load(wk), acc);
                }
                if h < fused_cols {
                    isa.fma(one, acc, bias)
                } else {
                    isa.add(bias, isa.mul(one, acc))
                }
            };
            let z = if tanh {
                tanh_v(isa, z)
            } else {
                isa.where_positive(z, z)
            };
            isa.store(&mut a[r * hid + h], z);
        }
    }
}

lanes_fn! {
    pub(crate) fn hidden_forward(isa, a: &mut [V], u: &[V], rows: usize, w1: &[V], b1: &[V], tanh: bool) {
        hidden_forward_imp(isa, a, u, rows, w1, b1, tanh)
    }
}

/// The fused middle of a field's backward pass, per element the same operations as
/// `matmul(ga, hid, false, gout, W2, scale)` then `tanh_backward`/`relu_backward(ga, a, gb1)`,
/// in one pass over `ga`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn hidden_backward_imp<I: Isa>(
    isa: I,
    ga: &mut [V],
    gout: &[V],
    rows: usize,
    w2: &[V],
    scale: f32,
    a: &[V],
    gb1: &mut [V],
    tanh: bool,
) {
    let hid = gb1.len();
    let d = w2.len() / hid;
    assert!(rows >= 2 && hid >= 2 && ga.len() >= rows * hid && gout.len() >= rows * d);
    assert!(a.len() >= rows * hid);
    let beta = isa.splat(scale);
    let one = isa.splat(1.0);
    for h in 0..hid {
        let mut bg = isa.load(&gb1[h]);
        for r in 0..rows {
            let gr = &gout[r * d..(r + 1) * d];
            let g = if d <= 2 {
                let t0 = isa.mul(isa.load(&w2[h]), isa.mul(beta, isa.load(&gr[0])));
                if d == 2 {
                    isa.add(
                        isa.mul(isa.load(&w2[hid + h]), isa.mul(beta, isa.load(&gr[1]))),
                        t0,
                    )
                } else {
                    t0
                }
            } else {
                let mut acc = isa.splat(0.0);
                for (k, gk) in gr.iter().enumerate() {
                    acc = isa.fma(isa.load(gk), isa.load(&w2[k * hid + h]), acc);
                }
                isa.mul(beta, acc)
            };
            let av = isa.load(&a[r * hid + h]);
            let g = if tanh {
                isa.mul(g, isa.sub(one, isa.mul(av, av)))
            } else {
                isa.where_positive(g, av)
            };
            isa.store(&mut ga[r * hid + h], g);
            bg = isa.add(bg, g);
        }
        isa.store(&mut gb1[h], bg);
    }
}

lanes_fn! {
    pub(crate) fn hidden_backward(isa, ga: &mut [V], gout: &[V], rows: usize, w2: &[V], scale: f32, a: &[V], gb1: &mut [V], tanh: bool) {
        hidden_backward_imp(isa, ga, gout, rows, w2, scale, a, gb1, tanh)
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

/// Whether a field evaluation on `rows` rows with `hid` hidden units in dimension `d` runs
/// through the row-fused kernels ([`field_forward`], [`field_backward`]), whose activations
/// are stored hidden-major (`a[h·rows + r]`): every product's inner size at least 3 (so gemm
/// takes its FMA kernel for each, never `gevv`), and `d` small enough to keep a hidden unit's
/// weights in registers. Forward and backward both ask it, so they agree on the layout.
pub(crate) fn rows_fused(rows: usize, hid: usize, d: usize) -> bool {
    rows >= 3 && hid >= 3 && (2..=4).contains(&d)
}

/// How a field evaluation's output rows start, before `scale·(b2 + W2·a)` is added.
#[derive(Clone, Copy)]
pub(crate) enum Init<'s> {
    /// From zero (`set_rows_bias(out, None, …)`).
    Set,
    /// From a copy of another buffer's rows.
    From(&'s [V]),
    /// From the output's own contents.
    Add,
}

/// A field's forward pass in one sweep per hidden unit, per element the same operations as
/// `hidden_forward` (W1 product, bias, activation), then `set_rows_bias`/`add_rows_bias` and
/// `matmul(out, d, true, a, W2ᵀ, scale)`: the W2 product's accumulators (`acc`, `rows × D`)
/// gain hidden unit `h`'s term while `h`'s activations are in registers, in `h` order as
/// gemm's kernel sums them, so the activations are written once and never read back here.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn field_forward_imp<I: Isa, const D: usize>(
    isa: I,
    a: &mut [V],
    u: &[V],
    rows: usize,
    w: [&[V]; 4],
    tanh: bool,
    out: &mut [V],
    init: Init<'_>,
    scale: f32,
    acc: &mut [V],
) {
    let [w1, b1, w2, b2] = w;
    let hid = b1.len();
    assert!(rows >= 3 && hid >= 3 && w1.len() == hid * D && w2.len() == D * hid);
    assert!(b2.len() == D && a.len() >= rows * hid && u.len() >= rows * D);
    assert!(out.len() >= rows * D && acc.len() >= rows * D);
    if let Init::From(src) = init {
        assert!(src.len() >= rows * D);
    }
    let acc = &mut acc[..rows * D];
    acc.fill(ZERO);
    let mut h = 0;
    while h + 4 <= hid {
        forward_units::<I, D, 4>(isa, a, u, rows, [w1, b1, w2], h, tanh, acc);
        h += 4;
    }
    while h < hid {
        forward_units::<I, D, 1>(isa, a, u, rows, [w1, b1, w2], h, tanh, acc);
        h += 1;
    }
    let s_v = isa.splat(scale);
    let fused_d = D / GEMM_TILE * GEMM_TILE;
    for r in 0..rows {
        for i in 0..D {
            let b = isa.mul(s_v, isa.load(&b2[i]));
            let o = &mut out[r * D + i];
            let t = match init {
                Init::Set => b,
                Init::From(src) => isa.add(isa.load(&src[r * D + i]), b),
                Init::Add => isa.add(isa.load(o), b),
            };
            let c = isa.load(&acc[r * D + i]);
            let res = if i < fused_d {
                isa.fma(s_v, c, t)
            } else {
                isa.add(t, isa.mul(s_v, c))
            };
            isa.store(o, res);
        }
    }
}

/// Hidden units `h0..h0 + HB` of [`field_forward_imp`] in one pass over the rows (`HB`
/// units share each row's loads and accumulator update): their activations, and their W2
/// terms added to `acc` in unit order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_units<I: Isa, const D: usize, const HB: usize>(
    isa: I,
    a: &mut [V],
    u: &[V],
    rows: usize,
    w: [&[V]; 3],
    h0: usize,
    tanh: bool,
    acc: &mut [V],
) {
    let [w1, b1, w2] = w;
    let hid = b1.len();
    let one = isa.splat(1.0);
    let zero = isa.splat(0.0);
    let fused_h = hid / GEMM_TILE * GEMM_TILE;
    let bias: [I::R; HB] = std::array::from_fn(|j| isa.mul(one, isa.load(&b1[h0 + j])));
    let wh: [[I::R; D]; HB] =
        std::array::from_fn(|j| std::array::from_fn(|k| isa.load(&w1[(h0 + j) * D + k])));
    let v2: [[I::R; D]; HB] =
        std::array::from_fn(|j| std::array::from_fn(|i| isa.load(&w2[i * hid + h0 + j])));
    let a = &mut a[h0 * rows..(h0 + HB) * rows];
    for (r, (ur, cr)) in u
        .chunks_exact(D)
        .zip(acc[..rows * D].chunks_exact_mut(D))
        .enumerate()
    {
        let ur: [I::R; D] = std::array::from_fn(|k| isa.load(&ur[k]));
        // gevv's `1·uᵣₖ`, the same for every hidden unit: once per row.
        let u1: [I::R; D] = std::array::from_fn(|k| isa.mul(one, ur[k]));
        let mut c: [I::R; D] = std::array::from_fn(|i| isa.load(&cr[i]));
        for j in 0..HB {
            let z = if D <= 2 {
                // gevv: W1ₕₖ·(1·uᵣₖ), summed onto the bias
                let t0 = isa.mul(wh[j][0], u1[0]);
                let s = isa.add(t0, bias[j]);
                if D == 2 {
                    isa.add(isa.mul(wh[j][1], u1[1]), s)
                } else {
                    s
                }
            } else {
                let mut s = zero;
                for k in 0..D {
                    s = isa.fma(ur[k], wh[j][k], s);
                }
                if h0 + j < fused_h {
                    isa.fma(one, s, bias[j])
                } else {
                    isa.add(bias[j], isa.mul(one, s))
                }
            };
            let z = if tanh {
                tanh_v(isa, z)
            } else {
                isa.where_positive(z, z)
            };
            isa.store(&mut a[j * rows + r], z);
            for i in 0..D {
                c[i] = isa.fma(z, v2[j][i], c[i]);
            }
        }
        for i in 0..D {
            isa.store(&mut cr[i], c[i]);
        }
    }
}

lanes_fn! {
    /// `out := init + scale·(b2 + W2·act(W1·u + b1))` on `rows` rows, writing the activations
    /// hidden-major into `a`; `w` is `[W1, b1, W2, b2]`, `acc` scratch of `rows × d`. Only
    /// where [`rows_fused`] holds.
    pub(crate) fn field_forward(isa, a: &mut [V], u: &[V], rows: usize, w: [&[V]; 4], tanh: bool, out: &mut [V], init: Init<'_>, scale: f32, acc: &mut [V]) {
        match w[3].len() {
            2 => field_forward_imp::<I, 2>(isa, a, u, rows, w, tanh, out, init, scale, acc),
            3 => field_forward_imp::<I, 3>(isa, a, u, rows, w, tanh, out, init, scale, acc),
            4 => field_forward_imp::<I, 4>(isa, a, u, rows, w, tanh, out, init, scale, acc),
            d => unreachable!("row-fused fields have dimension 2 to 4, not {d}"),
        }
    }
}

/// Where a field's input gradient `ga·W1` goes.
pub(crate) enum InputGrad<'s> {
    /// Into `dst` (added to it if `add`), the output gradient being `gout`.
    Into {
        gout: &'s [V],
        dst: &'s mut [V],
        add: bool,
    },
    /// Added onto the output gradient itself, once the parameter gradients have read it.
    Onto(&'s mut [V]),
}

/// A field's backward pass in one sweep per hidden unit, per element the same operations as
/// `matmul(∂W2, hid, true, goutᵀ, a, scale)`, `add_col_sums(∂b2, gout, scale)`,
/// `hidden_backward`, `matmul(∂W1, d, true, gaᵀ, u, 1)` and `matmul(dst, d, add, ga, W1, 1)`:
/// hidden unit `h`'s ∂W2 column and ∂W1 row are summed over the rows in registers (gemm's
/// row order), the input gradient's accumulators (`acc`) gain `h`'s term in `h` order, and
/// `ga` is never stored.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn field_backward_imp<I: Isa, const D: usize>(
    isa: I,
    u: &[V],
    a: &[V],
    rows: usize,
    w1: &[V],
    w2: &[V],
    scale: f32,
    tanh: bool,
    grad: [&mut [V]; 4],
    io: InputGrad<'_>,
    acc: &mut [V],
) {
    let [g_w1, g_b1, g_w2, g_b2] = grad;
    let hid = g_b1.len();
    assert!(rows >= 3 && hid >= 3 && w1.len() == hid * D && w2.len() == D * hid);
    assert!(g_w1.len() == hid * D && g_w2.len() == D * hid && g_b2.len() == D);
    assert!(a.len() >= rows * hid && u.len() >= rows * D && acc.len() >= rows * D);
    let beta = isa.splat(scale);
    let one = isa.splat(1.0);
    let zero = isa.splat(0.0);
    let fused_d = D / GEMM_TILE * GEMM_TILE;
    let acc = &mut acc[..rows * D];
    acc.fill(ZERO);
    {
        let gout: &[V] = match &io {
            InputGrad::Into { gout, .. } => gout,
            InputGrad::Onto(g) => g,
        };
        let gout = &gout[..rows * D];
        for (i, gb) in g_b2.iter_mut().enumerate() {
            let mut s = zero;
            for row in gout.chunks_exact(D) {
                s = isa.add(s, isa.load(&row[i]));
            }
            isa.store(gb, isa.add(isa.load(gb), isa.mul(beta, s)));
        }
        let w = [w1, w2];
        let mut h = 0;
        while h + 2 <= hid {
            let g = [&mut *g_w1, &mut *g_b1, &mut *g_w2];
            backward_units::<I, D, 2>(isa, u, a, gout, rows, w, scale, tanh, g, h, acc);
            h += 2;
        }
        if h < hid {
            let g = [&mut *g_w1, &mut *g_b1, &mut *g_w2];
            backward_units::<I, D, 1>(isa, u, a, gout, rows, w, scale, tanh, g, h, acc);
        }
    }
    let (dst, add) = match io {
        InputGrad::Into { dst, add, .. } => (dst, add),
        InputGrad::Onto(g) => (g, true),
    };
    for (dr, cr) in dst[..rows * D].chunks_exact_mut(D).zip(acc.chunks_exact(D)) {
        for k in 0..D {
            let c = isa.load(&cr[k]);
            let d = &mut dr[k];
            let r = if !add {
                isa.mul(one, c)
            } else if k < fused_d {
                isa.fma(one, c, isa.load(d))
            } else {
                isa.add(isa.load(d), isa.mul(one, c))
            };
            isa.store(d, r);
        }
    }
}

/// Hidden units `h0..h0 + HB` of [`field_backward_imp`] in one pass over the rows (`HB`
/// units share each row's loads and accumulator update): their ∂W2 columns, ∂b1 and ∂W1
/// rows, and their input-gradient terms added to `acc` in unit order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_units<I: Isa, const D: usize, const HB: usize>(
    isa: I,
    u: &[V],
    a: &[V],
    gout: &[V],
    rows: usize,
    w: [&[V]; 2],
    scale: f32,
    tanh: bool,
    grad: [&mut [V]; 3],
    h0: usize,
    acc: &mut [V],
) {
    let [w1, w2] = w;
    let [g_w1, g_b1, g_w2] = grad;
    let hid = g_b1.len();
    let beta = isa.splat(scale);
    let one = isa.splat(1.0);
    let zero = isa.splat(0.0);
    let fused_h = hid / GEMM_TILE * GEMM_TILE;
    let fused_d = D / GEMM_TILE * GEMM_TILE;
    let v2: [[I::R; D]; HB] =
        std::array::from_fn(|j| std::array::from_fn(|i| isa.load(&w2[i * hid + h0 + j])));
    let wh: [[I::R; D]; HB] =
        std::array::from_fn(|j| std::array::from_fn(|k| isa.load(&w1[(h0 + j) * D + k])));
    let mut cw2 = [[zero; D]; HB];
    let mut cw1 = [[zero; D]; HB];
    let mut bg: [I::R; HB] = std::array::from_fn(|j| isa.load(&g_b1[h0 + j]));
    let a = &a[h0 * rows..(h0 + HB) * rows];
    for (r, ((gr, ur), cr)) in gout[..rows * D]
        .chunks_exact(D)
        .zip(u.chunks_exact(D))
        .zip(acc[..rows * D].chunks_exact_mut(D))
        .enumerate()
    {
        let gr: [I::R; D] = std::array::from_fn(|i| isa.load(&gr[i]));
        // gevv's `beta·goutᵣᵢ`, the same for every hidden unit: once per row.
        let bgr: [I::R; D] = std::array::from_fn(|i| isa.mul(beta, gr[i]));
        let ur: [I::R; D] = std::array::from_fn(|k| isa.load(&ur[k]));
        let mut c: [I::R; D] = std::array::from_fn(|k| isa.load(&cr[k]));
        for j in 0..HB {
            let av = isa.load(&a[j * rows + r]);
            for i in 0..D {
                cw2[j][i] = isa.fma(gr[i], av, cw2[j][i]);
            }
            let g = if D <= 2 {
                let t0 = isa.mul(v2[j][0], bgr[0]);
                if D == 2 {
                    isa.add(isa.mul(v2[j][1], bgr[1]), t0)
                } else {
                    t0
                }
            } else {
                let mut s = zero;
                for k in 0..D {
                    s = isa.fma(gr[k], v2[j][k], s);
                }
                isa.mul(beta, s)
            };
            let g = if tanh {
                isa.mul(g, isa.sub(one, isa.mul(av, av)))
            } else {
                isa.where_positive(g, av)
            };
            bg[j] = isa.add(bg[j], g);
            for k in 0..D {
                cw1[j][k] = isa.fma(g, ur[k], cw1[j][k]);
                c[k] = isa.fma(g, wh[j][k], c[k]);
            }
        }
        for k in 0..D {
            isa.store(&mut cr[k], c[k]);
        }
    }
    for j in 0..HB {
        let h = h0 + j;
        isa.store(&mut g_b1[h], bg[j]);
        for (i, c) in cw2[j].iter().enumerate() {
            let d = &mut g_w2[i * hid + h];
            let r = if h < fused_h {
                isa.fma(beta, *c, isa.load(d))
            } else {
                isa.add(isa.load(d), isa.mul(beta, *c))
            };
            isa.store(d, r);
        }
        for (k, c) in cw1[j].iter().enumerate() {
            let d = &mut g_w1[h * D + k];
            let r = if k < fused_d {
                isa.fma(one, *c, isa.load(d))
            } else {
                isa.add(isa.load(d), isa.mul(one, *c))
            };
            isa.store(d, r);
        }
    }
}

lanes_fn! {
    /// A field's parameter gradients (`grad` is `[∂W1, ∂b1, ∂W2, ∂b2]`, added to) and input
    /// gradient from its output gradient, `a` hidden-major as [`field_forward`] wrote it,
    /// `acc` scratch of `rows × d`. Only where [`rows_fused`] holds.
    pub(crate) fn field_backward(isa, u: &[V], a: &[V], rows: usize, w1: &[V], w2: &[V], scale: f32, tanh: bool, grad: [&mut [V]; 4], io: InputGrad<'_>, acc: &mut [V]) {
        match grad[3].len() {
            2 => field_backward_imp::<I, 2>(isa, u, a, rows, w1, w2, scale, tanh, grad, io, acc),
            3 => field_backward_imp::<I, 3>(isa, u, a, rows, w1, w2, scale, tanh, grad, io, acc),
            4 => field_backward_imp::<I, 4>(isa, u, a, rows, w1, w2, scale, tanh, grad, io, acc),
            d => unreachable!("row-fused fields have dimension 2 to 4, not {d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{self, View};

    /// Lane `l` of a lane buffer made of `LANES` scalar buffers.
    fn interleave(bufs: &[Vec<f32>]) -> Vec<V> {
        (0..bufs[0].len())
            .map(|i| V(std::array::from_fn(|l| bufs[l][i])))
            .collect()
    }

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut g = crate::rng::SplitMix64::new(seed, 5);
        (0..len).map(|_| g.uniform(1.7)).collect()
    }

    #[test]
    fn lane_tanh_and_relu_equal_the_scalar_kernels_bit_for_bit() {
        if !super::super::lanes_available() {
            return;
        }
        let mut xs: Vec<f32> = (-20_000..20_000).map(|i| i as f32 * 7.1e-4).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            7.905_311,
            -7.905_311,
            1e30,
        ]);
        while !xs.len().is_multiple_of(LANES) {
            xs.push(0.5);
        }
        let mut lanes: Vec<V> = xs
            .chunks(LANES)
            .map(|c| V(std::array::from_fn(|l| c[l])))
            .collect();
        let mut relu = lanes.clone();
        tanh_inplace(&mut lanes);
        relu_inplace(&mut relu);
        let mut want_tanh = xs.clone();
        let mut want_relu = xs.clone();
        kernels::tanh_inplace(&mut want_tanh);
        kernels::relu_inplace(&mut want_relu);
        for (i, (w, r)) in want_tanh.iter().zip(&want_relu).enumerate() {
            let (got, got_relu) = (lanes[i / LANES][i % LANES], relu[i / LANES][i % LANES]);
            assert_eq!(got.to_bits(), w.to_bits(), "tanh({})", xs[i]);
            assert_eq!(got_relu.to_bits(), r.to_bits(), "relu({})", xs[i]);
        }
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
