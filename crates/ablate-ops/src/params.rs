use ablate_run::OpError;
use ablate_spec::Params;
use serde::de::DeserializeOwned;

/// Deserialises an instance's params into an op's typed params. Validation already checked
/// them against the schema, so a failure here means the schema and the struct disagree.
pub(crate) fn typed<P: DeserializeOwned>(op: &str, params: &Params) -> Result<P, OpError> {
    // `tag` only changes the key; no op reads it.
    let map: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .filter(|(k, _)| k.as_str() != ablate_spec::TAG.name)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        OpError::with(
            format!("the params of op `{op}` do not match its schema"),
            e,
        )
    })
}
