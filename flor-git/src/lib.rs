//! flor's access to git: reading and writing flor's own git objects and refs.
//!
//! flor keeps, for every recorded run, a snapshot of the user's code and the
//! run's record files as ordinary git commits under its own refs (e.g.
//! `refs/flor/runs/<run id>`). This crate owns that layer:
//!
//! - [`discover`] finds the repository a run happens in;
//! - [`snapshot_worktree`] commits the working tree as `git add -A` would see
//!   it, without touching HEAD, the branch, the index file or the working
//!   tree ([`snapshot_worktree_unique`] picks the first free of several ref
//!   names);
//! - [`attach_files`] adds files (e.g. records) on top of such a commit;
//! - [`list_refs`], [`read_dir_at`], [`read_file_at`] read them back
//!   ([`RepoReader`]: many reads through one open repository);
//! - [`materialize`] exports a commit into a plain folder for replay;
//! - [`unignored_files`] lists the working tree's files git does not ignore;
//! - [`delete_ref`] removes a ref;
//! - [`set_fsync`] makes this process's git writes durable (fsynced).
//!
//! Every ref write is a compare-and-swap checked under git's lock file, so
//! processes writing the same refs at the same instant never overwrite each
//! other's work: one creator of a name wins, the others are told the name is
//! taken; concurrent additions to one ref are all kept.
//!
//! It knows nothing of what the record files contain. Every function takes a
//! path inside the repository and opens it itself, so callers can use it from
//! any thread; a [`RepoReader`] is opened once by the thread that uses it.

#![warn(missing_docs)]

mod error;
mod materialize;
mod objects;
mod refs;
mod repo;
mod snapshot;
mod worktree;

pub use error::{Error, Result};
pub use materialize::materialize;
pub use objects::{
    attach_files, attach_files_expecting, delete_ref, list_dir_at, list_refs, read_dir_at, read_file_at, ref_tip,
    RepoReader, MAX_TREE_DEPTH,
};
pub use repo::{discover, set_fsync, RepoInfo};
pub use snapshot::{
    snapshot_worktree, snapshot_worktree_unique, Snapshot, SnapshotOptions, DEFAULT_MAX_FILE_MB, MAX_FILE_MB_ENV,
    MAX_NAME_ATTEMPTS,
};
pub use worktree::unignored_files;
