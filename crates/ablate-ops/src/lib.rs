//! ablate-ops
