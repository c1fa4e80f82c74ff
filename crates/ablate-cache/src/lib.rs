//! ablate-cache
