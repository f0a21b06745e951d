//! A plugin built against `flor:plugin@0.9.0`: a copy of the real interface
//! (`flor-plugins/wit/plugin.wit`) whose package version alone differs, in
//! `wit/`. Its module's interface section names package
//! `flor:plugin@0.9.0`, its component imports `flor:plugin/source@0.9.0`
//! and its `describe` says `0.9.0`: flor must refuse it, naming both
//! versions.
//! The bindings exist on wasm32 only; natively this crate only checks that
//! its interface copy has not drifted from the real one.

/// The interface version this plugin is built for.
pub const INTERFACE_VERSION: &str = "0.9.0";

#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({ path: "wit", world: "plugin" });

    struct FromTheFuture;

    impl Guest for FromTheFuture {
        fn describe() -> Info {
            Info {
                name: "hostile-version".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                interface_version: super::INTERFACE_VERSION.into(),
                summary: "Built for interface 0.9.0; flor 0.1.0 must refuse it".into(),
                formats: Vec::new(),
                languages: Vec::new(),
            }
        }

        fn sniff(_head: Vec<u8>) -> Option<String> {
            None
        }

        fn layout(format: String) -> Result<TensorLayout, String> {
            // Uses the `source` import, so the component imports
            // `flor:plugin/source@0.9.0` as a real plugin would.
            let size = flor::plugin::source::size();
            Err(format!("unknown format `{format}` ({size} bytes)"))
        }

        fn split(_format: String) -> Result<Vec<u64>, String> {
            Ok(Vec::new())
        }

        fn lint(_language: String, _path: String, _text: String) -> Vec<Finding> {
            Vec::new()
        }
    }

    export!(FromTheFuture);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_interface_copy_differs_from_the_real_one_in_its_version_only() {
        // Embedded, not read at run time: a test binary reused from a build
        // in another checkout (a shared target folder) keeps that
        // checkout's CARGO_MANIFEST_DIR.
        let copy = include_str!("../wit/plugin.wit");
        let real = include_str!("../../../flor-plugins/wit/plugin.wit");
        assert!(copy.contains(&format!("package flor:plugin@{};", super::INTERFACE_VERSION)));
        assert_eq!(copy.replace("package flor:plugin@0.9.0;", "package flor:plugin@0.1.0;"), real);
    }
}
