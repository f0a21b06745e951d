//! flor-plugins (in progress)
