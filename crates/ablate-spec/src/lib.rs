//! ablate-spec
