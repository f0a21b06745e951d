#!/usr/bin/env bash
# Fetches the official prebuilt DuckDB shared library (libduckdb.so, DuckDB
# 1.5.6, linux x86-64) that `flor-store`'s `duckdb` feature links against,
# into a cache folder outside the checkout, verifies it, and prints the folder.
#
#   export DUCKDB_LIB_DIR="$(bash scripts/fetch_duckdb.sh)"
#   cargo build --features duckdb
#
# DuckDB publishes this library in its npm package
# `@duckdb/node-bindings-linux-x64`; `npm pack` downloads the package without
# installing anything. The crate `duckdb = "=1.10506.0"` (Cargo.toml) is the
# Rust binding of exactly this DuckDB version: the two must match.
#
# Environment: FLOR_DUCKDB_DIR overrides the cache folder (default
# ~/.cache/flor/duckdb-1.5.6). Progress goes to stderr; stdout is the folder.
set -euo pipefail

version=1.5.6
package="@duckdb/node-bindings-linux-x64@${version}-r.1"
# sha256 of libduckdb.so inside that package.
sha256=3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633
dir="${FLOR_DUCKDB_DIR:-$HOME/.cache/flor/duckdb-${version}}"
lib="$dir/libduckdb.so"

verify() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    echo "fetch_duckdb.sh: the prebuilt library is fetched for Linux x86-64 only; elsewhere build with" \
      "the duckdb crate's \`bundled\` feature (see the README)" >&2
    exit 1
    ;;
esac

if verify "$lib"; then
  echo "$dir"
  exit 0
fi

command -v npm >/dev/null 2>&1 || {
  echo "fetch_duckdb.sh: npm is needed to download $package (install Node.js/npm)" >&2
  exit 1
}
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetch_duckdb.sh: downloading $package" >&2
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/libduckdb.so
if ! verify "$tmp/package/libduckdb.so"; then
  echo "fetch_duckdb.sh: checksum mismatch for libduckdb.so from $package (expected sha256 $sha256)" >&2
  exit 1
fi
mv -f "$tmp/package/libduckdb.so" "$lib"
echo "fetch_duckdb.sh: libduckdb.so ($(stat -c %s "$lib") bytes) in $dir" >&2
echo "$dir"
