//! ablate-results
