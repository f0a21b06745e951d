//! Builds the workspace's plugin crates for `wasm32-unknown-unknown` with a
//! nested `cargo build` (its own target folder, `<target>/wasm-plugins`),
//! then embeds the shipped ones (pytorch, jax) and tells the tests where the
//! test fixtures are (`FLOR_TEST_PLUGIN_<NAME>` environment variables).
//!
//! Needs the `wasm32-unknown-unknown` target (`rustup target add
//! wasm32-unknown-unknown`); without it the build stops with that advice.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, folder under the workspace root, embedded in the binary).
const PLUGINS: &[(&str, &str, bool)] = &[
    ("flor-plugin-pytorch", "plugins/pytorch", true),
    ("flor-plugin-jax", "plugins/jax", true),
    ("flor-plugin-template", "plugins/template", false),
    ("flor-plugin-hostile", "plugins/hostile", false),
    ("flor-plugin-hostile-version", "plugins/hostile-version", false),
];

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("flor-plugins lies inside the workspace").to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in ["flor-plugin-sdk", "plugins", "flor-plugins/wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=FLOR_PLUGIN_WASM_TARGET_DIR");
    let present: Vec<_> = PLUGINS.iter().filter(|(_, dir, _)| root.join(dir).join("Cargo.toml").is_file()).collect();
    for (pkg, dir, _) in PLUGINS.iter().filter(|p| !present.contains(p)) {
        println!("cargo:warning={pkg}: {dir} is missing, so it is not built");
    }
    let target_dir =
        env::var_os("FLOR_PLUGIN_WASM_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| wasm_target_dir(&out));
    let packages: Vec<&str> = present.iter().map(|(pkg, _, _)| *pkg).collect();
    if !packages.is_empty() {
        cargo_build(&root, &target_dir, &packages, &[]);
    }
    let built =
        |pkg: &str, dir: &Path| dir.join(TARGET).join("release").join(format!("{}.wasm", pkg.replace('-', "_")));
    let mut embedded = String::from(
        "/// (name, core module bytes) of each built-in plugin.\npub(crate) const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (pkg, _, embed) in &present {
        let wasm = built(pkg, &target_dir);
        let var = pkg.trim_start_matches("flor-plugin-").replace('-', "_").to_uppercase();
        println!("cargo:rustc-env=FLOR_TEST_PLUGIN_{var}={}", wasm.display());
        if *embed {
            let name = pkg.trim_start_matches("flor-plugin-");
            let _ = writeln!(embedded, "    ({name:?}, include_bytes!({:?})),", wasm.display().to_string());
        }
    }
    embedded.push_str("];\n");
    // The hostile fixture again, lying about its interface version.
    if present.iter().any(|(pkg, _, _)| *pkg == "flor-plugin-hostile") {
        let liar_dir = target_dir.join("lie-version");
        cargo_build(&root, &liar_dir, &["flor-plugin-hostile"], &["--features", "lie-version"]);
        println!("cargo:rustc-env=FLOR_TEST_PLUGIN_HOSTILE_LIAR={}", built("flor-plugin-hostile", &liar_dir).display());
    }
    std::fs::write(out.join("builtin.rs"), embedded).expect("write OUT_DIR/builtin.rs");
}

/// `<target>/wasm-plugins`, where `<target>` is the outer build's target
/// folder (OUT_DIR is `<target>/[<triple>/]<profile>/build/<pkg>-<hash>/out`),
/// shared by every profile so the plugins are built once.
fn wasm_target_dir(out: &Path) -> PathBuf {
    let build = out.ancestors().find(|p| p.file_name().is_some_and(|n| n == "build"));
    match build.and_then(Path::parent).and_then(Path::parent) {
        Some(target) => target.join("wasm-plugins"),
        None => out.join("wasm-plugins"),
    }
}

fn cargo_build(root: &Path, target_dir: &Path, packages: &[&str], extra: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .args(extra);
    // The outer build's settings are for the host, not for the plugins.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_PROFILE_RELEASE_LTO",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("flor-plugins: cannot run cargo to build the plugins: {e}"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        let hint = if stderr.contains("wasm32-unknown-unknown") && stderr.contains("target may not be installed") {
            "\nthe wasm32-unknown-unknown target is missing: run `rustup target add wasm32-unknown-unknown`"
        } else {
            ""
        };
        panic!(
            "flor-plugins: building the plugins ({}) for {TARGET} failed:\n{}{hint}",
            packages.join(", "),
            tail.join("\n")
        );
    }
}
