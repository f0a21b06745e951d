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
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let copy = std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap();
        let real = std::fs::read_to_string(dir.join("../../flor-plugins/wit/plugin.wit")).unwrap();
        assert!(copy.contains(&format!("package flor:plugin@{};", super::INTERFACE_VERSION)));
        assert_eq!(copy.replace("package flor:plugin@0.9.0;", "package flor:plugin@0.1.0;"), real);
    }
}
