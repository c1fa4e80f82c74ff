use crate::{FlowConfig, NnError};

/// Row-major features (len = n * dim) and integer class labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    pub dim: usize,
    pub classes: usize,
}

impl Dataset {
    /// The number of examples (the number of labels).
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Checks the shapes, that every label is below `classes` and every feature is finite.
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |msg: String| Err(NnError::InvalidData(msg));
        if self.dim == 0 {
            return bad("`dim` must be at least 1".into());
        }
        if self.x.len() != self.y.len() * self.dim {
            return bad(format!(
                "{} labels of dimension {} need {} features, got {}",
                self.y.len(),
                self.dim,
                self.y.len() * self.dim,
                self.x.len()
            ));
        }
        if let Some((i, &label)) = self
            .y
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= self.classes)
        {
            return bad(format!(
                "label {label} of example {i} is out of range for {} classes",
                self.classes
            ));
        }
        if let Some(i) = self.x.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "feature {} of example {} is not finite ({})",
                i % self.dim,
                i / self.dim,
                self.x[i]
            ));
        }
        Ok(())
    }

    /// Checks the data set and that it fits the model `cfg`.
    pub(crate) fn validate_for(&self, cfg: &FlowConfig) -> Result<(), NnError> {
        self.validate()?;
        if self.dim != cfg.in_dim {
            return Err(NnError::InvalidData(format!(
                "the data has dimension {} but the model takes `in_dim` = {}",
                self.dim, cfg.in_dim
            )));
        }
        if self.classes != cfg.classes {
            return Err(NnError::InvalidData(format!(
                "the data has {} classes but the model has `classes` = {}",
                self.classes, cfg.classes
            )));
        }
        Ok(())
    }
}
