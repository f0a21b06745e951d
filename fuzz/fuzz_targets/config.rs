//! `.flor/config.toml` as anyone may write it. Checks that an error names a
//! line of the file, and that a value read back is the one written.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new(".flor/config.toml");
    match flor::Config::parse(text, path) {
        Ok(config) => {
            if let Some(kind) = config.store {
                let again = flor::Config::parse(&format!("store = \"{kind}\"\n"), path).expect("its own value");
                assert_eq!(again.store, Some(kind));
            }
        }
        Err(flor::Error::Config { line, .. }) => {
            assert!((1..=text.lines().count()).contains(&line), "error on line {line} of {}", text.lines().count());
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
});
