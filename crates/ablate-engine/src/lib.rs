//! ablate-engine
