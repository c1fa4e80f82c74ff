use ablate_run::{OpContext, OpError, OpOutput, OpRunner};
use ablate_spec::{Device, OpCatalog, OpSchema, Params, Value};

/// One built-in op.
pub(crate) trait Op: Send + Sync {
    fn schema(&self) -> &OpSchema;
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError>;
    /// Files whose content enters the key (see [`OpCatalog::file_deps`]).
    fn file_deps(&self, _params: &Params) -> Vec<String> {
        Vec::new()
    }
    /// The params whose values may differ within a fused group (see [`OpCatalog::fusible`]).
    fn fusible(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether `fuse: auto` fuses this op on `device` (see [`OpCatalog::fuses_by_default`]).
    fn fuses_by_default(&self, _device: Device) -> bool {
        true
    }
    /// The progress unit it stops at a budget in (see [`OpCatalog::budget_unit`]).
    fn budget_unit(&self) -> Option<&'static str> {
        None
    }
    /// Computes a fused group (see [`OpRunner::run_group`]): one result per context, in order.
    /// By default each in turn, as unfused.
    fn run_group(&self, ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
        ablate_run::run_each(ctxs, |ctx| self.run(ctx))
    }
    /// Checks of a param beyond its type, when the pipeline is loaded (see
    /// [`OpCatalog::check_value`]).
    fn check_value(&self, _param: &str, _value: &Value) -> Result<(), String> {
        Ok(())
    }
    /// Checks of one planned instance that need its inputs and the cache's place: what would
    /// otherwise fail only once its inputs have been computed (see [`Registry::check_instance`]).
    fn check_instance(
        &self,
        _params: &Params,
        _planned: &Planned<'_>,
    ) -> Result<(), InstanceProblem> {
        Ok(())
    }
}

/// What [`Op::check_instance`] found wrong with a planned instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceProblem {
    /// The param the problem is with, where the error points in the pipeline file (`run`).
    pub param: &'static str,
    /// What is wrong (and what to do instead, where `hint` is `None`).
    pub message: String,
    /// What to do instead.
    pub hint: Option<String>,
}

/// What [`Op::check_instance`] knows of a planned instance besides its params.
pub struct Planned<'a> {
    /// The stage of each of its inputs, one per input instance.
    pub input_stages: Vec<&'a str>,
    /// The length in bytes of an entry directory's absolute path in the cache it will use.
    pub entry_dir_len: usize,
}

/// Every built-in op, by name.
pub struct Registry {
    ops: Vec<Box<dyn Op>>,
}

impl Registry {
    pub fn builtin() -> Self {
        let ops: Vec<Box<dyn Op>> = vec![
            Box::new(crate::data::Toy2d::new()),
            Box::new(crate::digits::Digits::new()),
            Box::new(crate::flow::TrainFlow::new()),
            Box::new(crate::flow::EvalFlow::new()),
            Box::new(crate::metric::EvalMetric::new()),
            Box::new(crate::lm::DataText::new()),
            Box::new(crate::lm::TrainLm::new()),
            Box::new(crate::lm::EvalLm::new()),
            Box::new(crate::report::Table::new()),
            Box::new(crate::claims::Claims::new()),
            Box::new(crate::plot::Plot::new()),
            Box::new(crate::cmd::Cmd::new()),
            Box::new(crate::echo::Echo::new()),
        ];
        Registry { ops }
    }

    pub fn schemas(&self) -> impl Iterator<Item = &OpSchema> {
        self.ops.iter().map(|op| op.schema())
    }

    /// Checks one planned instance of `op` (e.g. that `cmd`'s command line will fit once its
    /// `{in.STAGE}` are expanded): the message says what is wrong and what to do instead.
    pub fn check_instance(
        &self,
        op: &str,
        params: &Params,
        planned: &Planned<'_>,
    ) -> Result<(), InstanceProblem> {
        self.op(op)
            .map_or(Ok(()), |o| o.check_instance(params, planned))
    }

    fn op(&self, name: &str) -> Option<&dyn Op> {
        self.ops
            .iter()
            .find(|op| op.schema().name == name)
            .map(|b| &**b)
    }
}

impl OpCatalog for Registry {
    fn schema(&self, op: &str) -> Option<&OpSchema> {
        self.op(op).map(|o| o.schema())
    }

    fn op_names(&self) -> Vec<&'static str> {
        self.ops.iter().map(|o| o.schema().name).collect()
    }

    fn file_deps(&self, op: &str, params: &Params) -> Vec<String> {
        self.op(op).map(|o| o.file_deps(params)).unwrap_or_default()
    }

    fn check_value(&self, op: &str, param: &str, value: &Value) -> Result<(), String> {
        self.op(op).map_or(Ok(()), |o| o.check_value(param, value))
    }

    fn fusible(&self, op: &str) -> &'static [&'static str] {
        self.op(op).map_or(&[], |o| o.fusible())
    }

    fn fuses_by_default(&self, op: &str, device: Device) -> bool {
        self.op(op).is_some_and(|o| o.fuses_by_default(device))
    }

    fn budget_unit(&self, op: &str) -> Option<&'static str> {
        self.op(op).and_then(|o| o.budget_unit())
    }
}

impl OpRunner for Registry {
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let name = ctx.job.op();
        let op = self
            .op(name)
            .ok_or_else(|| OpError::msg(format!("this build of ablate has no op `{name}`")))?;
        op.run(ctx)
    }

    /// A group's members are instances of one stage, so of one op.
    fn run_group(&self, ctxs: &[OpContext<'_>]) -> Vec<Result<OpOutput, OpError>> {
        let Some(first) = ctxs.first() else {
            return Vec::new();
        };
        let name = first.job.op();
        match self.op(name) {
            Some(op) if ctxs.iter().all(|c| c.job.op() == name) => op.run_group(ctxs),
            Some(_) => ctxs.iter().map(|ctx| OpRunner::run(self, ctx)).collect(),
            None => ctxs
                .iter()
                .map(|_| {
                    Err(OpError::msg(format!(
                        "this build of ablate has no op `{name}`"
                    )))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every schema's params (defaults, plus an example for required ones) deserialise into the
    /// op's typed params: the schema and the struct cannot drift apart.
    #[test]
    fn schemas_match_typed_params() {
        let reg = Registry::builtin();
        for op in &reg.ops {
            let s = op.schema();
            let mut params = Params::new();
            for p in &s.params {
                let v = p.default.clone().unwrap_or_else(|| example(&p.ty));
                params.insert(p.name.to_owned(), v);
            }
            check_typed(s.name, &params).unwrap_or_else(|e| panic!("op `{}`: {e}", s.name));
            // An unknown param is refused by every op that does not take free params.
            if !s.free_params {
                params.insert("no_such_param".into(), json!(1));
                assert!(
                    check_typed(s.name, &params).is_err(),
                    "op `{}` accepted an unknown param",
                    s.name
                );
            }
        }
    }

    fn example(ty: &ablate_spec::ParamType) -> serde_json::Value {
        use ablate_spec::ParamType::*;
        match ty {
            Bool => json!(true),
            Int { min, .. } => json!((*min).max(1)),
            Float { .. } => json!(1.0),
            Str => json!("x"),
            Enum(opts) => json!(opts[0]),
            List(of) => json!([example(of)]),
            OneOf(a, _) => example(a),
            Null => json!(null),
            Any => json!("x"),
        }
    }

    /// A fusible param the op does not declare would never vary within a group: a typo.
    #[test]
    fn fusible_params_are_declared_params_of_their_op() {
        let reg = Registry::builtin();
        for op in &reg.ops {
            let s = op.schema();
            for f in reg.fusible(s.name) {
                assert!(
                    s.param(f).is_some(),
                    "op `{}`: fusible `{f}` is no param",
                    s.name
                );
            }
        }
        assert_eq!(reg.fusible("echo"), ["seed", "fail"]);
        assert!(reg.fusible("no.such.op").is_empty());
    }

    #[test]
    fn names_are_unique() {
        let reg = Registry::builtin();
        let mut names = reg.op_names();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    /// What the tests know of an op's typed params: the fields its derived `Deserialize`
    /// declares, and a parse of a params map (as its `Debug` text, to compare two parses).
    struct TypedParams {
        fields: fn() -> Result<&'static [&'static str], String>,
        parse: fn(&str, &Params) -> Result<String, OpError>,
    }

    fn typed_params<P: serde::de::DeserializeOwned + std::fmt::Debug>() -> TypedParams {
        TypedParams {
            fields: struct_fields::<P>,
            parse: |name, params| crate::params::typed::<P>(name, params).map(|p| format!("{p:?}")),
        }
    }

    /// The typed params of op `name`: each op of the registry must be listed here.
    fn typed_params_of(name: &str) -> TypedParams {
        match name {
            "data.toy2d" => typed_params::<crate::data::Toy2dParams>(),
            "data.digits" => typed_params::<crate::digits::DigitsParams>(),
            "train.flow" => typed_params::<crate::flow::TrainParams>(),
            "eval.flow" => typed_params::<crate::flow::EvalParams>(),
            "eval.metric" => typed_params::<crate::metric::MetricParams>(),
            "data.text" => typed_params::<crate::lm::data_text::DataTextParams>(),
            "train.lm" => typed_params::<crate::lm::train::TrainLmParams>(),
            "eval.lm" => typed_params::<crate::lm::eval::EvalLmParams>(),
            "report.table" => typed_params::<crate::report::TableParams>(),
            "report.claims" => typed_params::<crate::claims::ClaimsParams>(),
            "report.plot" => typed_params::<crate::plot::PlotParams>(),
            "cmd" => typed_params::<crate::cmd::CmdParams>(),
            "echo" => typed_params::<crate::echo::EchoParams>(),
            other => panic!("add op `{other}` to typed_params_of"),
        }
    }

    /// Deserialises `params` into the typed params of op `name` (tests: schema ↔ struct).
    fn check_typed(name: &str, params: &Params) -> Result<(), OpError> {
        (typed_params_of(name).parse)(name, params).map(drop)
    }

    /// The field names a derived `Deserialize` of a struct declares: it hands them to
    /// `deserialize_struct`, where this deserializer stops with them.
    fn struct_fields<P: serde::de::DeserializeOwned>() -> Result<&'static [&'static str], String> {
        use serde::de::{self, Visitor};
        use serde::forward_to_deserialize_any;
        struct Fields;
        #[derive(Debug)]
        struct Found(Result<&'static [&'static str], String>);
        impl std::fmt::Display for Found {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::error::Error for Found {}
        impl de::Error for Found {
            fn custom<T: std::fmt::Display>(msg: T) -> Self {
                Found(Err(msg.to_string()))
            }
        }
        impl<'de> de::Deserializer<'de> for Fields {
            type Error = Found;
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Found> {
                Err(Found(Ok(fields)))
            }
            fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Found> {
                Err(Found(Err(
                    "not a plain struct (a map, a flattened or an untagged type)".into(),
                )))
            }
            forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        match P::deserialize(Fields) {
            Ok(_) => Err("deserialised from nothing".into()),
            Err(Found(found)) => found,
        }
    }

    /// Schema params that the params struct does not read, by op, and why: each one is the op
    /// reading it some other way, stated here rather than skipped.
    const SCHEMA_ONLY: &[(&str, &str, &str)] = &[];

    /// Params struct fields that no schema param declares, by op, and why.
    const STRUCT_ONLY: &[(&str, &str, &str)] = &[];

    /// #22: a parameter is declared twice, in the schema (validation, `ablate ops`) and in the
    /// op's params struct (what `run` reads). For every op of the registry they declare the
    /// same names; a param the schema requires the struct requires; and a field the struct may
    /// go without (an `Option`, a `#[serde(default)]`) has a schema default, which gives the
    /// struct what going without gives it. (Besides `tag`, which `typed` drops for every op.)
    #[test]
    fn every_schema_declares_its_params_structs_fields() {
        let reg = Registry::builtin();
        let mut problems = Vec::new();
        for op in &reg.ops {
            let s = op.schema();
            let typed = typed_params_of(s.name);
            let fields = match (typed.fields)() {
                Ok(fields) => fields,
                Err(e) => {
                    problems.push(format!(
                        "`{}`: cannot list the struct's fields: {e}",
                        s.name
                    ));
                    continue;
                }
            };
            let excused = |list: &[(&str, &str, &str)], name: &str| {
                list.iter().any(|(o, p, _)| *o == s.name && *p == name)
            };
            for p in &s.params {
                if !fields.contains(&p.name) && !excused(SCHEMA_ONLY, p.name) {
                    problems.push(format!(
                        "`{}`: the schema declares `{}`, the params struct has no such field",
                        s.name, p.name
                    ));
                }
            }
            for f in fields {
                if !s.params.iter().any(|p| p.name == *f) && !excused(STRUCT_ONLY, f) {
                    problems.push(format!(
                        "`{}`: the params struct has `{f}`, the schema does not declare it",
                        s.name
                    ));
                }
            }
            // Every param at its default (or an example), then each one left out in turn.
            let full: Params = s
                .params
                .iter()
                .map(|p| {
                    let v = p.default.clone().unwrap_or_else(|| example(&p.ty));
                    (p.name.to_owned(), v)
                })
                .collect();
            let Ok(with_all) = (typed.parse)(s.name, &full) else {
                continue; // `schemas_match_typed_params` reports it.
            };
            // `tag` is every op's, read by no struct: `typed` drops it.
            let mut tagged = full.clone();
            tagged.insert(ablate_spec::TAG.name.to_owned(), json!("x"));
            if (typed.parse)(s.name, &tagged).as_ref().ok() != Some(&with_all) {
                problems.push(format!("`{}`: the params struct reads `tag`", s.name));
            }
            for p in &s.params {
                // Every value a schema allows by name is one the struct takes (an enum's
                // spellings).
                let names = match &p.ty {
                    ablate_spec::ParamType::Enum(names) => *names,
                    ablate_spec::ParamType::OneOf(a, _) => match &**a {
                        ablate_spec::ParamType::Enum(names) => *names,
                        _ => &[],
                    },
                    _ => &[],
                };
                for name in names {
                    let mut one = full.clone();
                    one.insert(p.name.to_owned(), json!(name));
                    if let Err(e) = (typed.parse)(s.name, &one) {
                        problems.push(format!(
                            "`{}`: the schema allows `{}: {name}`, the params struct does not: {e:?}",
                            s.name, p.name
                        ));
                    }
                }
            }
            for p in s.params.iter().filter(|p| fields.contains(&p.name)) {
                let mut without = full.clone();
                without.remove(p.name);
                match ((typed.parse)(s.name, &without), &p.default) {
                    (Ok(_), None) => problems.push(format!(
                        "`{}`: the schema requires `{}`, the params struct goes without it",
                        s.name, p.name
                    )),
                    (Ok(parsed), Some(default)) if parsed != with_all => problems.push(format!(
                        "`{}`: without `{}` the params struct takes another value than the \
                         schema's default `{default}`",
                        s.name, p.name
                    )),
                    _ => {}
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
