//! ablate-plan
