//! ablate-run
