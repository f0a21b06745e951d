//! flor-replay (in progress)
