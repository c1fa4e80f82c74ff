//! The in-memory table every writer, reader and renderer of this crate speaks.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::ResultsError;

/// A rectangular table of named, typed, nullable columns (all of the same length).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// The four cell kinds a result table holds; `None` is a null cell.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table from columns, checked for equal lengths and unique names.
    pub fn from_columns(columns: Vec<Column>) -> Result<Self, ResultsError> {
        let table = Self { columns };
        table.validate()?;
        Ok(table)
    }

    /// Appends a column (builder style); checked by [`Table::validate`] and on write.
    #[must_use]
    pub fn with_column(mut self, name: impl Into<String>, data: impl Into<ColumnData>) -> Self {
        self.push_column(name, data);
        self
    }

    pub fn push_column(&mut self, name: impl Into<String>, data: impl Into<ColumnData>) {
        self.columns.push(Column::new(name, data));
    }

    /// The number of rows, taken from the first column (0 for a table without columns).
    pub fn num_rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.data.len())
    }

    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// Checks that all columns have the same length and distinct names.
    pub fn validate(&self) -> Result<(), ResultsError> {
        let mut names = HashSet::new();
        for column in &self.columns {
            if !names.insert(column.name.as_str()) {
                return Err(ResultsError::DuplicateColumn {
                    name: column.name.clone(),
                });
            }
        }
        if let Some(first) = self.columns.first() {
            let expected = first.data.len();
            if let Some(bad) = self.columns.iter().find(|c| c.data.len() != expected) {
                return Err(ResultsError::RaggedTable {
                    column: bad.name.clone(),
                    len: bad.data.len(),
                    first: first.name.clone(),
                    expected,
                });
            }
        }
        Ok(())
    }

    /// The table as one Arrow batch (Boolean, Int64, Float64, Utf8 columns, all nullable).
    pub(crate) fn to_record_batch(&self) -> Result<RecordBatch, ArrowError> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data.data_type(), true))
            .collect();
        let arrays: Vec<ArrayRef> = self.columns.iter().map(|c| c.data.to_array()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.num_rows()));
        RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
    }
}

impl Column {
    pub fn new(name: impl Into<String>, data: impl Into<ColumnData>) -> Self {
        Self {
            name: name.into(),
            data: data.into(),
        }
    }
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Bool(v) => v.len(),
            ColumnData::Int(v) => v.len(),
            ColumnData::Float(v) => v.len(),
            ColumnData::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_null(&self, row: usize) -> bool {
        match self {
            ColumnData::Bool(v) => v[row].is_none(),
            ColumnData::Int(v) => v[row].is_none(),
            ColumnData::Float(v) => v[row].is_none(),
            ColumnData::Str(v) => v[row].is_none(),
        }
    }

    /// Whether the column holds numbers (rendered right-aligned).
    pub fn is_numeric(&self) -> bool {
        matches!(self, ColumnData::Int(_) | ColumnData::Float(_))
    }

    /// `bool`, `int`, `float` or `str`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ColumnData::Bool(_) => "bool",
            ColumnData::Int(_) => "int",
            ColumnData::Float(_) => "float",
            ColumnData::Str(_) => "str",
        }
    }

    pub(crate) fn data_type(&self) -> DataType {
        match self {
            ColumnData::Bool(_) => DataType::Boolean,
            ColumnData::Int(_) => DataType::Int64,
            ColumnData::Float(_) => DataType::Float64,
            ColumnData::Str(_) => DataType::Utf8,
        }
    }

    pub(crate) fn to_array(&self) -> ArrayRef {
        match self {
            ColumnData::Bool(v) => Arc::new(BooleanArray::from(v.clone())),
            ColumnData::Int(v) => Arc::new(Int64Array::from(v.clone())),
            ColumnData::Float(v) => Arc::new(Float64Array::from(v.clone())),
            ColumnData::Str(v) => Arc::new(v.iter().map(Option::as_deref).collect::<StringArray>()),
        }
    }

    /// Reads an array already normalised to Boolean, Int64, Float64 or Utf8.
    pub(crate) fn from_normalized(array: &dyn Array) -> Self {
        match array.data_type() {
            DataType::Boolean => ColumnData::Bool(array.as_boolean().iter().collect()),
            DataType::Int64 => ColumnData::Int(array.as_primitive::<Int64Type>().iter().collect()),
            DataType::Float64 => {
                ColumnData::Float(array.as_primitive::<Float64Type>().iter().collect())
            }
            DataType::Utf8 => ColumnData::Str(
                array
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_owned))
                    .collect(),
            ),
            other => unreachable!("array of type {other} was not normalised"),
        }
    }
}

impl From<Vec<Option<bool>>> for ColumnData {
    fn from(v: Vec<Option<bool>>) -> Self {
        ColumnData::Bool(v)
    }
}

impl From<Vec<Option<i64>>> for ColumnData {
    fn from(v: Vec<Option<i64>>) -> Self {
        ColumnData::Int(v)
    }
}

impl From<Vec<Option<f64>>> for ColumnData {
    fn from(v: Vec<Option<f64>>) -> Self {
        ColumnData::Float(v)
    }
}

impl From<Vec<Option<String>>> for ColumnData {
    fn from(v: Vec<Option<String>>) -> Self {
        ColumnData::Str(v)
    }
}

impl From<Vec<bool>> for ColumnData {
    fn from(v: Vec<bool>) -> Self {
        ColumnData::Bool(v.into_iter().map(Some).collect())
    }
}

impl From<Vec<i64>> for ColumnData {
    fn from(v: Vec<i64>) -> Self {
        ColumnData::Int(v.into_iter().map(Some).collect())
    }
}

impl From<Vec<f64>> for ColumnData {
    fn from(v: Vec<f64>) -> Self {
        ColumnData::Float(v.into_iter().map(Some).collect())
    }
}

impl From<Vec<String>> for ColumnData {
    fn from(v: Vec<String>) -> Self {
        ColumnData::Str(v.into_iter().map(Some).collect())
    }
}

impl From<Vec<&str>> for ColumnData {
    fn from(v: Vec<&str>) -> Self {
        ColumnData::Str(v.into_iter().map(|s| Some(s.to_owned())).collect())
    }
}

impl From<Vec<Option<&str>>> for ColumnData {
    fn from(v: Vec<Option<&str>>) -> Self {
        ColumnData::Str(v.into_iter().map(|s| s.map(str::to_owned)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_and_duplicate_tables_are_rejected() {
        let ragged = Table::new()
            .with_column("a", vec![1_i64, 2])
            .with_column("b", vec![1.0_f64]);
        let err = ragged.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `b` has 1 rows but column `a` has 2"
        );

        let dup = Table::new()
            .with_column("a", vec![1_i64])
            .with_column("a", vec!["x"]);
        assert!(
            matches!(dup.validate(), Err(ResultsError::DuplicateColumn { name }) if name == "a")
        );
    }

    #[test]
    fn column_lookup_and_row_count() {
        let t = Table::new()
            .with_column("x", vec![Some(1_i64), None])
            .with_column("y", vec![Some("a"), None]);
        assert_eq!(t.num_rows(), 2);
        assert_eq!(t.column("y").unwrap().data.kind_name(), "str");
        assert!(t.column("z").is_none());
        assert_eq!(Table::new().num_rows(), 0);
    }
}
