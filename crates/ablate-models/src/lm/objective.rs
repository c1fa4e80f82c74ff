//! A training objective as a pipeline writes it: a named mixture (with its options) or a list
//! of denoisers, parsed into a [`Mixture`], with messages that say what is wrong where.

use serde::Deserialize;

use super::denoise::{Denoiser, Mixture, MixtureOptions};
use super::vocab::Mode;
use crate::EngineError;

/// Why an objective cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ObjectiveError {
    /// A mixture written in the pipeline, or `ul2_weights`, is malformed; the message says
    /// where (`objective[1]: …`).
    #[error("{0}")]
    Invalid(String),
    /// A named mixture's options are out of range.
    #[error("invalid objective")]
    Mixture(#[source] EngineError),
}

/// One denoiser of a mixture written in the pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomDenoiser {
    /// `R` or `X` (span corruption), `S` (prefix LM) or `CLM`.
    denoiser: String,
    mu: Option<f64>,
    r: Option<f64>,
    target: Option<f64>,
    weight: f64,
}

/// Parses a mixture written in the pipeline: a list of `{denoiser: R|X|S|CLM, mu, r, target,
/// weight}`.
pub fn custom_mixture(raw: &[serde_json::Value]) -> Result<Mixture, ObjectiveError> {
    let invalid = |m: String| ObjectiveError::Invalid(m);
    if raw.is_empty() {
        return Err(invalid(
            "an objective list needs at least one denoiser".into(),
        ));
    }
    let mut entries = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let at = format!("objective[{i}]");
        let d: CustomDenoiser = serde_json::from_value(v.clone()).map_err(|e| {
            invalid(format!(
                "{at}: {e} (expected {{denoiser: R|X|S|CLM, mu, r, target, weight}})"
            ))
        })?;
        let need = |name: &str, v: Option<f64>| {
            v.ok_or_else(|| invalid(format!("{at}: a `{}` denoiser needs `{name}`", d.denoiser)))
        };
        let denoiser = match d.denoiser.as_str() {
            "R" | "X" => Denoiser::Span {
                mu: need("mu", d.mu)?,
                r: need("r", d.r)?,
                mode: if d.denoiser == "R" { Mode::R } else { Mode::X },
            },
            "S" => Denoiser::Prefix {
                mean_target: need("target", d.target)?,
            },
            "CLM" => Denoiser::Causal,
            other => {
                return Err(invalid(format!(
                    "{at}: unknown denoiser `{other}`; expected R, X (span corruption), S (prefix LM) or CLM"
                )));
            }
        };
        entries.push((denoiser, d.weight));
    }
    Mixture::custom(entries).map_err(|e| invalid(format!("objective: {e}")))
}

/// The weights of `ul2`'s R, X and S paradigms, as a pipeline writes them.
pub fn ul2_weights(w: &[f64]) -> Result<[f64; 3], ObjectiveError> {
    match w {
        &[r, x, s] => Ok([r, x, s]),
        _ => Err(ObjectiveError::Invalid(format!(
            "`ul2_weights` needs three weights (R, X, S), got {}",
            w.len()
        ))),
    }
}

/// The mixture of an objective as a pipeline writes it: a name (with the named mixtures'
/// options) or a list of denoisers.
pub fn mixture_of(
    objective: &serde_json::Value,
    span_scale: f64,
    s_target: f64,
    ul2: &[f64],
) -> Result<Mixture, ObjectiveError> {
    match objective {
        serde_json::Value::String(name) => {
            let opts = MixtureOptions {
                span_scale,
                s_target,
                ul2_weights: ul2_weights(ul2)?,
            };
            Mixture::named(name, &opts).map_err(ObjectiveError::Mixture)
        }
        serde_json::Value::Array(list) => custom_mixture(list),
        other => Err(ObjectiveError::Invalid(format!(
            "`objective` cannot be {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_mixture_written_in_the_pipeline_parses_or_says_what_is_wrong() {
        let ok = json!([
            {"denoiser": "R", "mu": 3, "r": 0.15, "weight": 2},
            {"denoiser": "X", "mu": 32, "r": 0.5, "weight": 1},
            {"denoiser": "S", "target": 0.25, "weight": 1},
            {"denoiser": "CLM", "weight": 1},
        ]);
        let m = custom_mixture(ok.as_array().unwrap()).unwrap();
        let names: Vec<String> = m.describe().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "R(μ=3, r=0.15)",
                "X(μ=32, r=0.5)",
                "S(prefix, target 25%)",
                "CLM"
            ]
        );
        assert!(
            (m.describe()[0].1 - 0.4).abs() < 1e-12,
            "weights are normalised"
        );

        let err = |v: serde_json::Value| {
            custom_mixture(v.as_array().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!([])).contains("at least one denoiser"));
        assert!(
            err(json!([{"denoiser": "R", "r": 0.15, "weight": 1}]))
                .contains("objective[0]: a `R` denoiser needs `mu`")
        );
        assert!(err(json!([{"denoiser": "Q", "weight": 1}])).contains("unknown denoiser `Q`"));
        assert!(
            err(json!([{"denoiser": "CLM", "weight": 1, "mu": 3, "extra": 1}]))
                .contains("objective[0]")
        );
        assert!(
            err(json!([{"denoiser": "S", "target": 1.5, "weight": 1}])).starts_with("objective:")
        );
    }

    #[test]
    fn ul2_takes_three_weights() {
        assert_eq!(ul2_weights(&[0.4, 0.4, 0.2]).unwrap(), [0.4, 0.4, 0.2]);
        assert_eq!(
            ul2_weights(&[1.0, 2.0]).unwrap_err().to_string(),
            "`ul2_weights` needs three weights (R, X, S), got 2"
        );
    }
}
