//! flor-replay: the hindsight-replay planner and executor. Not implemented
//! yet (its own issue); it will build on `flor-core` (records, timings,
//! checkpoints), `flor-git` (materializing old versions) and
//! `flor-propagate`. Nothing here pretends to work.
