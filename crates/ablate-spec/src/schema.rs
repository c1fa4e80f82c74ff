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
    /// A finite float within `[min, max]`.
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
    pub const fn float() -> Self {
        ParamType::Float {
            min: f64::MIN,
            max: f64::MAX,
        }
    }
    pub const fn positive_float() -> Self {
        ParamType::Float {
            min: f64::MIN_POSITIVE,
            max: f64::MAX,
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
                if *min == f64::MIN && *max == f64::MAX {
                    f.write_str("a number")
                } else if *min == f64::MIN_POSITIVE && *max == f64::MAX {
                    f.write_str("a positive number")
                } else if *max == f64::MAX {
                    write!(f, "a number ≥ {min}")
                } else {
                    write!(f, "a number in [{min}, {max}]")
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
            ParamType::OneOf(a, b) => write!(f, "{a} or {b}"),
            ParamType::Null => f.write_str("null"),
            ParamType::Any => f.write_str("any value"),
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
}
