//! flor-propagate (in progress)
