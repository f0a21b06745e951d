//! With the `duckdb` feature: links the prebuilt libduckdb.so found in
//! `DUCKDB_LIB_DIR` and records that folder as the run-time library path
//! of the `flor` binary, this crate's tests, examples and benches (no
//! `LD_LIBRARY_PATH` needed). The logic is shared with `flor-store`.

include!("flor-store/build_rpath.rs");
