// Shared by `build.rs` (root crate) and `flor-store/build.rs` through
// `include!`: with the `duckdb` feature, link the prebuilt libduckdb.so found
// in `DUCKDB_LIB_DIR` and record that folder as the run-time library path of
// the crate's binaries, tests, examples and benches (no `LD_LIBRARY_PATH`).

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
