//! A training objective as a pipeline writes it: a named mixture (with its options) or a list
//! of denoisers, parsed into a [`Mixture`], with messages that say what is wrong where.

use serde::Deserialize;

use super::denoise::{Denoiser, Mixture};
use super::vocab::Mode;
use crate::NnError;

spelled! {
    /// The named objectives of `train.lm`.
    pub enum Objective {
        /// The causal LM.
        Clm = "clm",
        /// The prefix LM.
        Plm = "plm",
        /// T5's span corruption, R(μ=3, r=0.15).
        Sc = "sc",
        /// `sc` and `clm`, half each.
        Sclm = "sclm",
        /// UL2's mixture of denoisers.
        Ul2 = "ul2",
    }
}

spelled! {
    /// The denoisers a mixture written in the pipeline is made of.
    pub enum DenoiserKind {
        /// Regular span corruption.
        R = "R",
        /// Extreme span corruption.
        X = "X",
        /// The prefix LM.
        S = "S",
        /// The causal LM.
        Clm = "CLM",
    }
}

/// `objective:` as a pipeline writes it: a name, or a list of `{denoiser: R|X|S|CLM, mu, r,
/// target, weight}` (parsed one by one by [`custom_mixture`], so each error names its entry).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ObjectiveSpec {
    Named(Objective),
    Mixture(Vec<serde_json::Value>),
}

/// The knobs of the named mixtures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixtureOptions {
    /// Multiplies the X (extreme) denoisers' μ, never below 3 (the R denoisers' μ): UL2's X spans
    /// are sized for 512-token inputs, so short sequences scale them by a parameter (e.g.
    /// 64/512). The R denoisers, and so `sc`, keep the paper's μ.
    pub span_scale: f64,
    /// The prefix LM's mean target fraction.
    pub s_target: f64,
    /// The weights of the R, X and S paradigms in `ul2`, split evenly within each paradigm.
    pub ul2_weights: [f64; 3],
}

impl Default for MixtureOptions {
    fn default() -> Self {
        MixtureOptions {
            span_scale: 1.0,
            s_target: 0.25,
            ul2_weights: [0.4, 0.4, 0.2],
        }
    }
}

impl Objective {
    /// `clm` (causal LM), `plm` (prefix LM), `sc` (T5's span corruption, R(μ=3, r=0.15)),
    /// `sclm` (sc and clm, half each), `ul2`: R(3, 0.15), R(8, 0.15); X(3, 0.5), X(8, 0.5),
    /// X(64, 0.15), X(64, 0.5); S(prefix), weighted `opts.ul2_weights` by paradigm (a paradigm
    /// of weight 0 is left out).
    pub fn mixture(self, opts: &MixtureOptions) -> Result<Mixture, NnError> {
        let bad = |msg: String| Err(NnError::InvalidConfig(msg));
        if !(opts.span_scale.is_finite() && opts.span_scale > 0.0) {
            return bad(format!(
                "`span_scale` must be positive, not `{}`",
                opts.span_scale
            ));
        }
        let w = opts.ul2_weights;
        if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || w.iter().sum::<f64>() <= 0.0 {
            return bad(format!(
                "`ul2_weights` must be non-negative with a positive sum, not `{w:?}`"
            ));
        }
        let span = |mu: f64, r: f64, mode: Mode| Denoiser::Span {
            mu: match mode {
                Mode::X => (mu * opts.span_scale).max(mu.min(3.0)),
                _ => mu,
            },
            r,
            mode,
        };
        let prefix = Denoiser::Prefix {
            mean_target: opts.s_target,
        };
        let sc = span(3.0, 0.15, Mode::R);
        let entries = match self {
            Objective::Clm => vec![(Denoiser::Causal, 1.0)],
            Objective::Plm => vec![(prefix, 1.0)],
            Objective::Sc => vec![(sc, 1.0)],
            Objective::Sclm => vec![(sc, 0.5), (Denoiser::Causal, 0.5)],
            Objective::Ul2 => {
                let r = [span(3.0, 0.15, Mode::R), span(8.0, 0.15, Mode::R)];
                let x = [
                    span(3.0, 0.5, Mode::X),
                    span(8.0, 0.5, Mode::X),
                    span(64.0, 0.15, Mode::X),
                    span(64.0, 0.5, Mode::X),
                ];
                let mut entries = Vec::new();
                entries.extend(r.iter().map(|&d| (d, w[0] / 2.0)));
                entries.extend(x.iter().map(|&d| (d, w[1] / 4.0)));
                entries.push((prefix, w[2]));
                entries.retain(|(_, w)| *w > 0.0);
                entries
            }
        };
        Mixture::custom(entries)
    }
}

/// Why an objective cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ObjectiveError {
    /// A mixture written in the pipeline, or `ul2_weights`, is malformed; the message says
    /// where (`objective[1]: …`).
    #[error("{0}")]
    Invalid(String),
    /// A named mixture's options are out of range.
    #[error("invalid objective")]
    Mixture(#[source] NnError),
}

/// One denoiser of a mixture written in the pipeline, as written: the name is checked
/// afterwards, so an unknown one is told what each name means.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomDenoiser {
    /// A [`DenoiserKind`]: `R` or `X` (span corruption), `S` (prefix LM) or `CLM`.
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
        let kind = DenoiserKind::from_name(&d.denoiser).ok_or_else(|| {
            invalid(format!(
                "{at}: unknown denoiser `{}`; expected R, X (span corruption), S (prefix LM) or CLM",
                d.denoiser
            ))
        })?;
        let denoiser = match kind {
            DenoiserKind::R | DenoiserKind::X => Denoiser::Span {
                mu: need("mu", d.mu)?,
                r: need("r", d.r)?,
                mode: if kind == DenoiserKind::R {
                    Mode::R
                } else {
                    Mode::X
                },
            },
            DenoiserKind::S => Denoiser::Prefix {
                mean_target: need("target", d.target)?,
            },
            DenoiserKind::Clm => Denoiser::Causal,
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
/// options; `ul2` as the pipeline's list) or a list of denoisers.
pub fn mixture_of(
    objective: &ObjectiveSpec,
    span_scale: f64,
    s_target: f64,
    ul2: &[f64],
) -> Result<Mixture, ObjectiveError> {
    match objective {
        ObjectiveSpec::Named(objective) => {
            let opts = MixtureOptions {
                span_scale,
                s_target,
                ul2_weights: ul2_weights(ul2)?,
            };
            objective.mixture(&opts).map_err(ObjectiveError::Mixture)
        }
        ObjectiveSpec::Mixture(list) => custom_mixture(list),
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

    /// The objective and its denoisers are spelled in pipelines as they were as strings.
    #[test]
    fn objectives_are_spelled_as_pipelines_write_them() {
        assert_eq!(Objective::NAMES, ["clm", "plm", "sc", "sclm", "ul2"]);
        assert_eq!(DenoiserKind::NAMES, ["R", "X", "S", "CLM"]);
        for (&o, name) in Objective::ALL.iter().zip(Objective::NAMES) {
            assert_eq!(serde_json::to_value(o).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<Objective>(json!(name)).unwrap(), o);
        }
        let e = serde_json::from_value::<Objective>(json!("t5")).unwrap_err();
        assert!(e.to_string().contains("unknown variant `t5`"), "{e}");
        let spec: ObjectiveSpec = serde_json::from_value(json!("sclm")).unwrap();
        assert!(matches!(spec, ObjectiveSpec::Named(Objective::Sclm)));
        let spec: ObjectiveSpec =
            serde_json::from_value(json!([{"denoiser": "CLM", "weight": 1}])).unwrap();
        let m = mixture_of(&spec, 1.0, 0.25, &[0.4, 0.4, 0.2]).unwrap();
        assert_eq!(m.describe(), [("CLM".to_string(), 1.0)]);
        assert!(serde_json::from_value::<ObjectiveSpec>(json!(3)).is_err());
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
