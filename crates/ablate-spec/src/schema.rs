//! How an op describes itself to validation, to `ablate ops`, and to the planner.

use std::fmt;

use crate::Value;

/// The type of one op parameter. Validation checks values against it and normalises them
/// (an integer written for a `Float` becomes a float, so `lr: 1` and `lr: 1.0` hash alike).
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    Bool,
    /// An integer within `[min, max]`.
    Int {
        min: i64,
        max: i64,
    },
    /// A finite float within `[min, max]`. Ops compute in 32-bit floats: the constructors
    /// bound every float by [`ParamType::FLOAT_MAX`], so `1e300` is refused when the pipeline is
    /// loaded instead of becoming infinity mid-run.
    Float {
        min: f64,
        max: f64,
    },
    Str,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    List(Box<ParamType>),
    /// Either type (e.g. a metric name or a list of them, or `null | float`).
    OneOf(Box<ParamType>, Box<ParamType>),
    Null,
    /// Any JSON-like value (free-form).
    Any,
}

impl ParamType {
    /// The largest magnitude a float param may have: `f32::MAX` (about 3.4e38).
    pub const FLOAT_MAX: f64 = f32::MAX as f64;

    pub const fn non_negative_int() -> Self {
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        }
    }
    pub const fn positive_int() -> Self {
        ParamType::Int {
            min: 1,
            max: i64::MAX,
        }
    }
    /// Any number a 32-bit float holds: within ±[`Self::FLOAT_MAX`].
    pub const fn float() -> Self {
        ParamType::Float {
            min: -Self::FLOAT_MAX,
            max: Self::FLOAT_MAX,
        }
    }
    /// A number > 0, at most [`Self::FLOAT_MAX`].
    pub const fn positive_float() -> Self {
        ParamType::Float {
            min: f64::MIN_POSITIVE,
            max: Self::FLOAT_MAX,
        }
    }
    /// A number ≥ 0, at most [`Self::FLOAT_MAX`].
    pub const fn non_negative_float() -> Self {
        ParamType::Float {
            min: 0.0,
            max: Self::FLOAT_MAX,
        }
    }
    pub fn list(of: ParamType) -> Self {
        ParamType::List(Box::new(of))
    }
    pub fn one_of(a: ParamType, b: ParamType) -> Self {
        ParamType::OneOf(Box::new(a), Box::new(b))
    }
    pub fn optional(of: ParamType) -> Self {
        Self::one_of(of, ParamType::Null)
    }
}

impl fmt::Display for ParamType {
    /// How an error names the expected type: "an integer ≥ 1", "one of `shared`, `unshared`".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Bool => f.write_str("a boolean"),
            ParamType::Int { min, max } => match (*min, *max) {
                (i64::MIN, i64::MAX) => f.write_str("an integer"),
                (min, i64::MAX) => write!(f, "an integer ≥ {min}"),
                (min, max) => write!(f, "an integer in {min}..={max}"),
            },
            ParamType::Float { min, max } => {
                // The 32-bit limits go without saying, except in the alternate form (`{:#}`),
                // which an error about a value beyond them uses.
                let shown = |b: f64| {
                    b.abs() < Self::FLOAT_MAX || f.alternate() && b.abs() == Self::FLOAT_MAX
                };
                let positive = *min == f64::MIN_POSITIVE;
                match (shown(*min).then_some(*min), shown(*max).then_some(*max)) {
                    (None, None) => f.write_str("a number"),
                    (Some(_), None) if positive => f.write_str("a positive number"),
                    (Some(min), None) => write!(f, "a number ≥ {}", Bound(min)),
                    (None, Some(max)) => write!(f, "a number ≤ {}", Bound(max)),
                    (Some(_), Some(max)) if positive => {
                        write!(f, "a positive number ≤ {}", Bound(max))
                    }
                    (Some(min), Some(max)) => {
                        write!(f, "a number in [{}, {}]", Bound(min), Bound(max))
                    }
                }
            }
            ParamType::Str => f.write_str("a string"),
            ParamType::Enum(options) => {
                f.write_str("one of ")?;
                for (i, o) in options.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{o}`")?;
                }
                Ok(())
            }
            ParamType::List(of) => write!(f, "a list of {}", of.plural()),
            ParamType::OneOf(a, b) if f.alternate() => write!(f, "{a:#} or {b:#}"),
            ParamType::OneOf(a, b) => write!(f, "{a} or {b}"),
            ParamType::Null => f.write_str("null"),
            ParamType::Any => f.write_str("any value"),
        }
    }
}

/// A float bound in a type's description: the 32-bit limit as `3.4e38`, others as written.
struct Bound(f64);

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.abs() == ParamType::FLOAT_MAX {
            f.write_str(if self.0 < 0.0 { "-3.4e38" } else { "3.4e38" })
        } else if self.0 == 0.0 || (1e-5..1e16).contains(&self.0.abs()) {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

impl ParamType {
    fn plural(&self) -> String {
        match self {
            ParamType::Bool => "booleans".into(),
            ParamType::Int { .. } => "integers".into(),
            ParamType::Float { .. } => "numbers".into(),
            ParamType::Str => "strings".into(),
            other => format!("({other})"),
        }
    }
}

/// One parameter of an op.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// `None`: required.
    pub default: Option<Value>,
    pub doc: &'static str,
}

impl ParamSpec {
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        Self {
            name,
            ty,
            default: None,
            doc,
        }
    }
    pub fn with_default(
        name: &'static str,
        ty: ParamType,
        default: Value,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            ty,
            default: Some(default),
            doc,
        }
    }
}

/// What an op declares about itself.
#[derive(Clone, Debug)]
pub struct OpSchema {
    pub name: &'static str,
    /// Bumped whenever the op's outputs for the same params would change; part of every key.
    pub version: u32,
    pub summary: &'static str,
    pub params: Vec<ParamSpec>,
    /// Report-like ops gather every instance of their needs into one instance.
    pub gathers: bool,
    /// Matrix keys that are not declared params are accepted as free params (the `cmd` op
    /// reads them as `{param.NAME}`); for other ops they are errors.
    pub free_params: bool,
    /// The op tells its inputs apart by the stage they come from (`cmd`'s `{in.STAGE}`), so
    /// the stage names of inputs are part of its key; other ops see inputs by content only.
    pub inputs_by_name: bool,
    /// The op computes on its job's `device` (a GPU for `cuda`), so `--device cuda` moves it
    /// and its `resources.gpus` applies only when that device is a GPU; every other op runs on
    /// the CPU, and its `gpus` reserve GPUs for what it starts (`cmd`).
    pub on_device: bool,
    /// How many `needs` the op accepts (min, max); `None` max = unbounded.
    pub needs: (usize, Option<usize>),
}

/// The parameter every op takes besides its own: a label that changes nothing but the key, so
/// the same experiment can be kept apart (`tag: gpu` beside the CPU run's entry, which shares
/// its key otherwise: the device is never part of a key). Optional, with no default, so a stage
/// without it keeps its key. Ops never see it.
pub static TAG: ParamSpec = ParamSpec {
    name: "tag",
    ty: ParamType::Str,
    default: None,
    doc: "a label that only changes the key: it keeps a rerun, e.g. on a GPU, apart from the \
          entry it would otherwise share",
};

impl OpSchema {
    /// The declared parameter `name`, or [`TAG`].
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .or((name == TAG.name).then_some(&TAG))
    }

    /// Whether param `name` is a setting of the op itself rather than a parameter of the
    /// experiment: an op that takes free params (`cmd`) is configured by the ones it declares
    /// (`run`, `deps`, `args`) and hands the free ones to its program; every param of any other
    /// op is a parameter. Settings are part of the key, but neither the program's params
    /// (`$ABLATE_PARAMS`) nor columns of `runs.parquet`.
    pub fn is_setting(&self, name: &str) -> bool {
        self.free_params && self.params.iter().any(|p| p.name == name)
    }
}

/// The set of ops validation knows. Implemented by `ablate-ops`' registry.
pub trait OpCatalog {
    fn schema(&self, op: &str) -> Option<&OpSchema>;
    /// Every op name, for "did you mean" hints.
    fn op_names(&self) -> Vec<&'static str>;
    /// Files whose bytes enter the key of an instance of `op` with these params (`cmd`'s
    /// `deps`), as written: relative to the working directory. Most ops have none.
    fn file_deps(&self, _op: &str, _params: &crate::Params) -> Vec<String> {
        Vec::new()
    }
    /// Checks of a param's value beyond its [`ParamType`] (e.g. the expressions of
    /// `report.claims`), run when the pipeline is loaded so a typo fails before any training,
    /// pointing at the value. `Err` is the message, without the op or param name.
    fn check_value(&self, _op: &str, _param: &str, _value: &Value) -> Result<(), String> {
        Ok(())
    }
    /// The params of `op` whose values may differ between the members of one fused group
    /// (a stage's `fuse:`): values such as `seed` or `lr` that change neither the shapes nor
    /// the step schedule, so the op can compute the members as one batched computation. Ops
    /// that return none (the default) never fuse.
    fn fusible(&self, _op: &str) -> &'static [&'static str] {
        &[]
    }
    /// Whether `fuse: auto` fuses `op` on `device`: where fused is measured faster than
    /// instances side by side (`fuse: on` fuses regardless). Default: yes.
    fn fuses_by_default(&self, _op: &str, _device: crate::Device) -> bool {
        true
    }
    /// The progress unit in which `op` can stop at a budget and resume from its checkpoint
    /// (`epochs`, `steps`), for a stage's `early_stop:`; `None` (the default): it cannot.
    fn budget_unit(&self, _op: &str) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_types_read_as_before_and_show_the_32_bit_limit_only_when_asked() {
        let cases = [
            (
                ParamType::float(),
                "a number",
                "a number in [-3.4e38, 3.4e38]",
            ),
            (
                ParamType::positive_float(),
                "a positive number",
                "a positive number ≤ 3.4e38",
            ),
            (
                ParamType::non_negative_float(),
                "a number ≥ 0",
                "a number in [0, 3.4e38]",
            ),
            (
                ParamType::Float { min: 0.0, max: 1.0 },
                "a number in [0, 1]",
                "a number in [0, 1]",
            ),
            (
                ParamType::Float {
                    min: 0.0,
                    max: f64::MAX,
                },
                "a number ≥ 0",
                "a number ≥ 0",
            ),
            (
                ParamType::Float {
                    min: f64::MIN,
                    max: 2.5,
                },
                "a number ≤ 2.5",
                "a number ≤ 2.5",
            ),
        ];
        for (ty, plain, alternate) in cases {
            assert_eq!(ty.to_string(), plain);
            assert_eq!(format!("{ty:#}"), alternate);
        }
        assert_eq!(
            format!("{:#}", ParamType::optional(ParamType::positive_float())),
            "a positive number ≤ 3.4e38 or null"
        );
        assert_eq!(
            ParamType::list(ParamType::float()).to_string(),
            "a list of numbers"
        );
    }
}
