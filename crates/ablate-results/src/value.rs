//! How `serde_json::Value`s (params and matrix values) become typed columns, cells and sort keys.

use std::cmp::Ordering;

use arrow::datatypes::DataType;
use serde_json::Value;

use crate::table::ColumnData;

/// The column kinds, ordered by how much they can hold: a column widens towards `Str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Str,
}

impl Kind {
    /// The kind a single non-null value asks for; lists and maps are stored as JSON text.
    pub fn of(value: &Value) -> Option<Kind> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(Kind::Bool),
            Value::Number(n) if n.is_i64() => Some(Kind::Int),
            Value::Number(_) => Some(Kind::Float),
            Value::String(_) | Value::Array(_) | Value::Object(_) => Some(Kind::Str),
        }
    }

    /// The narrowest kind that holds both: Int+Float → Float, any other mix → Str.
    pub fn unify(a: Kind, b: Kind) -> Kind {
        match (a, b) {
            _ if a == b => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            _ => Kind::Str,
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Str => DataType::Utf8,
        }
    }

    /// The kind of a column of values; `None` when every value is null (or there are none).
    pub fn infer<'a>(values: impl IntoIterator<Item = Option<&'a Value>>) -> Option<Kind> {
        values
            .into_iter()
            .flatten()
            .filter_map(Kind::of)
            .reduce(Kind::unify)
    }
}

/// Builds a column of `kind` (`Str` when `None`) from values whose kinds unify to at most `kind`.
pub fn column_data(values: &[Option<&Value>], kind: Option<Kind>) -> ColumnData {
    let cells = values.iter().map(|v| v.filter(|v| !v.is_null()));
    match kind.unwrap_or(Kind::Str) {
        Kind::Bool => ColumnData::Bool(cells.map(|v| v.and_then(Value::as_bool)).collect()),
        Kind::Int => ColumnData::Int(cells.map(|v| v.and_then(Value::as_i64)).collect()),
        Kind::Float => ColumnData::Float(cells.map(|v| v.and_then(Value::as_f64)).collect()),
        Kind::Str => ColumnData::Str(cells.map(|v| v.map(display)).collect()),
    }
}

/// A value as a cell or a column-name fragment: strings as-is, anything else as compact JSON.
pub fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A float as JSON would write it (`4.0`, `0.1`), so widened columns read the same as new values.
pub fn display_f64(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string())
}

/// A total order for label values: null < bools < numbers (numerically) < strings (lexically)
/// < lists < maps.
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            // Exact for integers beyond 2^53, where f64 would tie distinct values.
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                x.total_cmp(&y)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                let ord = cmp_values(x, y);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(_), Value::Object(_)) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Lexicographic order of tuples of values.
pub fn cmp_tuples(a: &[&Value], b: &[&Value]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| cmp_values(x, y))
        .find(|ord| ord.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_widen_int_to_float_and_mixes_to_str() {
        let infer = |vals: &[Value]| Kind::infer(vals.iter().map(Some));
        assert_eq!(infer(&[json!(1), json!(2)]), Some(Kind::Int));
        assert_eq!(infer(&[json!(1), json!(2.5)]), Some(Kind::Float));
        assert_eq!(infer(&[json!(true), json!(null)]), Some(Kind::Bool));
        assert_eq!(infer(&[json!(true), json!(1)]), Some(Kind::Str));
        assert_eq!(infer(&[json!([1, 2])]), Some(Kind::Str));
        assert_eq!(infer(&[json!(null)]), None);
    }

    #[test]
    fn numbers_sort_numerically_and_before_strings() {
        let mut vals = [
            json!("b"),
            json!(10),
            json!(2.5),
            json!("a"),
            json!(2),
            json!(false),
        ];
        vals.sort_by(cmp_values);
        assert_eq!(
            vals,
            [
                json!(false),
                json!(2),
                json!(2.5),
                json!(10),
                json!("a"),
                json!("b")
            ]
        );
    }

    #[test]
    fn lists_and_maps_display_as_compact_json() {
        assert_eq!(display(&json!([1, "a"])), r#"[1,"a"]"#);
        assert_eq!(display(&json!({"k": 1})), r#"{"k":1}"#);
        assert_eq!(display(&json!("plain")), "plain");
        assert_eq!(display_f64(4.0), "4.0");
    }
}
