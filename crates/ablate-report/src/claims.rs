//! Claims: `expr` parses a claim (`mean(acc | weights=shared) >= mean(acc | weights=unshared)`)
//! and `eval` judges it over observations (labels + final metrics).

pub mod eval;
pub mod expr;
