use ablate_run::{OpContext, OpError, OpOutput, OpRunner};
use ablate_spec::{OpCatalog, OpSchema, Params, Value};

/// One built-in op.
pub(crate) trait Op: Send + Sync {
    fn schema(&self) -> &OpSchema;
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError>;
    /// Files whose content enters the key (see [`OpCatalog::file_deps`]).
    fn file_deps(&self, _params: &Params) -> Vec<String> {
        Vec::new()
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
}

impl OpRunner for Registry {
    fn run(&self, ctx: &OpContext<'_>) -> Result<OpOutput, OpError> {
        let name = ctx.job.op();
        let op = self
            .op(name)
            .ok_or_else(|| OpError::msg(format!("this build of ablate has no op `{name}`")))?;
        op.run(ctx)
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

    #[test]
    fn names_are_unique() {
        let reg = Registry::builtin();
        let mut names = reg.op_names();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    /// Deserialises `params` into the typed params of op `name` (tests: schema ↔ struct).
    fn check_typed(name: &str, params: &Params) -> Result<(), OpError> {
        use crate::params::typed;
        match name {
            "data.toy2d" => typed::<crate::data::Toy2dParams>(name, params).map(drop),
            "data.digits" => typed::<crate::digits::DigitsParams>(name, params).map(drop),
            "train.flow" => typed::<crate::flow::TrainParams>(name, params).map(drop),
            "eval.flow" => typed::<crate::flow::EvalParams>(name, params).map(drop),
            "eval.metric" => typed::<crate::metric::MetricParams>(name, params).map(drop),
            "data.text" => typed::<crate::lm::DataTextParams>(name, params).map(drop),
            "train.lm" => typed::<crate::lm::TrainLmParams>(name, params).map(drop),
            "eval.lm" => typed::<crate::lm::EvalLmParams>(name, params).map(drop),
            "report.table" => typed::<crate::report::TableParams>(name, params).map(drop),
            "report.claims" => typed::<crate::claims::ClaimsParams>(name, params).map(drop),
            "report.plot" => typed::<crate::plot::PlotParams>(name, params).map(drop),
            "cmd" => typed::<crate::cmd::CmdParams>(name, params).map(drop),
            "echo" => typed::<crate::echo::EchoParams>(name, params).map(drop),
            other => panic!("add op `{other}` to check_typed"),
        }
    }
}
