//! flor facade (in progress)
