//! With the `duckdb` feature: links the prebuilt libduckdb.so found in
//! `DUCKDB_LIB_DIR` and records that folder as the run-time library path
//! of the `flor` binary, this crate's tests, examples and benches (no
//! `LD_LIBRARY_PATH` needed). `flor-store/build.rs` does the same for that
//! crate's own tests.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_DUCKDB").is_none() || std::env::var_os("CARGO_FEATURE_DUCKDB_BUNDLED").is_some()
    {
        return;
    }
    match std::env::var("DUCKDB_LIB_DIR") {
        Ok(dir) if !dir.is_empty() => {
            // An absolute path: the binaries may run from anywhere.
            let dir = std::fs::canonicalize(&dir).map_or(dir, |p| p.display().to_string());
            if std::env::var("CARGO_CFG_TARGET_FAMILY").as_deref() == Ok("unix") {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            }
        }
        _ => panic!(
            "the `duckdb` feature links the prebuilt DuckDB library: run\n    \
             export DUCKDB_LIB_DIR=\"$(bash scripts/fetch_duckdb.sh)\"\nfirst, or build with the \
             `duckdb-bundled` feature instead (compiles DuckDB from source; 45-70 minutes on 2 cores)"
        ),
    }
}
