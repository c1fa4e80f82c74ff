//! Small dense linear algebra in f64 on row-major matrices.

pub(super) fn identity(d: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    m
}

/// `a (n × k) · b (k × m)`, row-major.
pub(super) fn mat_mul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            let a = a[i * k + p];
            if a == 0.0 {
                continue;
            }
            for (o, b) in out[i * m..(i + 1) * m]
                .iter_mut()
                .zip(&b[p * m..(p + 1) * m])
            {
                *o += a * b;
            }
        }
    }
    out
}

/// `aᵀa` for `a` of shape `n × m`: `m × m`.
pub(super) fn gram(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for r in 0..n {
        let row = &a[r * m..(r + 1) * m];
        for i in 0..m {
            for j in 0..m {
                out[i * m + j] += row[i] * row[j];
            }
        }
    }
    out
}

pub(super) fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The determinant of the row-major `d × d` matrix `m`, by LU with partial pivoting.
pub fn det(m: &[f64], d: usize) -> f64 {
    assert_eq!(m.len(), d * d, "det of a {d}×{d} matrix");
    let mut a = m.to_vec();
    let mut det = 1.0;
    for c in 0..d {
        let p = (c..d)
            .max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs()))
            .expect("c < d");
        let pivot = a[p * d + c];
        if pivot == 0.0 {
            return 0.0;
        }
        if p != c {
            for j in 0..d {
                a.swap(p * d + j, c * d + j);
            }
            det = -det;
        }
        det *= pivot;
        for r in c + 1..d {
            let f = a[r * d + c] / pivot;
            if f != 0.0 {
                for j in c..d {
                    a[r * d + j] -= f * a[c * d + j];
                }
            }
        }
    }
    det
}

/// Eigenvalues (ascending) and eigenvectors (the columns of a row-major `d × d` matrix, in
/// the same order) of the symmetric `m`, by cyclic Jacobi rotations. Only the symmetric part
/// `(m + mᵀ)/2` is read.
pub fn sym_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(m.len(), d * d, "sym_eigen of a {d}×{d} matrix");
    let mut a: Vec<f64> = (0..d * d)
        .map(|i| 0.5 * (m[i] + m[(i % d) * d + i / d]))
        .collect();
    let mut v = identity(d);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..d * d)
            .filter(|i| i / d != i % d)
            .map(|i| a[i] * a[i])
            .sum();
        if off <= f64::EPSILON * f64::EPSILON * total || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // Numerical Recipes' rotation: A ← PᵀAP, P_pq = s, P_qp = −s, zeroing a_pq.
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[i * d + i].total_cmp(&a[j * d + j]));
    let values = order.iter().map(|&i| a[i * d + i]).collect();
    let mut vectors = vec![0.0; d * d];
    for (col, &i) in order.iter().enumerate() {
        for k in 0..d {
            vectors[k * d + col] = v[k * d + i];
        }
    }
    (values, vectors)
}
