//! With the `duckdb` feature: links the prebuilt libduckdb.so found in
//! `DUCKDB_LIB_DIR` and records that folder as the run-time library path
//! of this crate's tests and examples (no `LD_LIBRARY_PATH` needed). The
//! root crate's build script includes the same logic for the `flor` binary.

include!("build_rpath.rs");
