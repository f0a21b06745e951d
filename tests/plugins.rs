//! `flor plugins` and plugin findings at the command line, in real
//! temporary git repositories: the built-in plugins listed on a fresh
//! install, a plugin installed into a project and used by `flor lint`, a
//! broken plugin file reported without stopping the others, and a
//! framework finding in the replay plan.

mod support;

use std::path::PathBuf;

use support::{flor, git, ok, python, train};

/// A plugin crate of the workspace as the build script compiled it
/// (`<target>/wasm-plugins/wasm32-unknown-unknown/release/<crate>.wasm`).
fn built_plugin(krate: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test> → <target>
    let target = exe.ancestors().nth(3).expect("target folder");
    let path = target.join("wasm-plugins/wasm32-unknown-unknown/release").join(format!("{krate}.wasm"));
    assert!(path.is_file(), "{} is missing: flor-plugins' build script builds it", path.display());
    path
}

fn repo() -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    git(dir.path(), home.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(dir.path().join(".flor")).unwrap();
    (dir, home)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_fresh_install_lists_the_built_in_plugins() {
    let (dir, home) = repo();
    let out = flor(dir.path(), home.path(), &["plugins", "list", "--format", "csv"]);
    let text = ok(out, "flor plugins list");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("name,version,interface,formats,languages,origin,digest"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names, ["pytorch", "jax"]);
    assert!(text.contains("torch.zip"), "{text}");
    assert!(text.contains("flax.msgpack"), "{text}");
    assert!(rows.iter().all(|r| r[2] == "0.1.0" && r.contains(&"builtin")), "{text}");

    let out = flor(dir.path(), home.path(), &["plugins", "inspect", "pytorch"]);
    let text = ok(out, "flor plugins inspect pytorch");
    assert!(text.starts_with("pytorch "), "{text}");
    assert!(text.contains("interface:  flor:plugin@0.1.0"), "{text}");
    assert!(text.contains("1s per call, 64 MiB of memory"), "{text}");
}

#[test]
fn an_installed_plugin_checks_scripts_and_a_broken_one_is_reported() {
    let (dir, home) = repo();
    let template = built_plugin("flor_plugin_template");
    let out = flor(dir.path(), home.path(), &["plugins", "install", template.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("installed plugin toy"), "{}", stderr(&out));
    assert!(dir.path().join(".flor/plugins/toy.wasm").is_file());

    let script = "import random, time\nimport flordb as flor\nrandom.seed(time.time())\n";
    std::fs::write(dir.path().join("train.py"), script).unwrap();
    let out = flor(dir.path(), home.path(), &["lint", "train.py"]);
    assert_eq!(out.status.code(), Some(6), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("train.py:3:8: warning[toy::clock-seed]"), "{}", stdout(&out));

    // A file that is not a plugin: reported, the others still work.
    std::fs::write(dir.path().join(".flor/plugins/broken.wasm"), b"garbage").unwrap();
    let out = flor(dir.path(), home.path(), &["plugins", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken.wasm not loaded"), "{}", stderr(&out));
    assert!(stdout(&out).contains("toy"), "{}", stdout(&out));
    let out = flor(dir.path(), home.path(), &["lint", "train.py"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(stdout(&out).contains("toy::clock-seed"));

    // Installing something that is not a plugin changes nothing.
    let out = flor(dir.path(), home.path(), &["plugins", "install", "train.py"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not WebAssembly"), "{}", stderr(&out));
}

#[test]
fn framework_findings_appear_in_flor_lint_and_the_replay_plan() {
    let Some(py) = python() else { return };
    let (dir, home) = repo();
    let root = dir.path();
    let script = "\
import flordb as flor
import torch

torch.backends.cudnn.benchmark = True
w = [0.0]
with flor.checkpointing(w=w):
    for epoch in flor.loop('epoch', range(2)):
        w[0] += 1.0
        flor.log('w', w[0])
";
    // The script never runs torch: recording only needs flordb, so a stub
    // module stands in for it.
    let stub = "class backends:\n    class cudnn:\n        benchmark = False\n\n\nclass cuda:\n    \
                is_available = staticmethod(lambda: False)\n\n\ndef get_rng_state():\n    return 0\n\n\n\
                def set_rng_state(state):\n    pass\n";
    std::fs::write(root.join("torch.py"), stub).unwrap();
    std::fs::write(root.join("train.py"), script).unwrap();
    git(root, home.path(), &["add", "-A"]);
    git(root, home.path(), &["commit", "-qm", "v1"]);
    let out = flor(root, home.path(), &["lint", "train.py"]);
    assert_eq!(out.status.code(), Some(6), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("pytorch::"), "{}", stdout(&out));

    train(&py, root, home.path(), &[]);
    let newer = script.replace("flor.log('w', w[0])", "flor.log('w', w[0])\n        flor.log('w2', w[0] * 2)");
    std::fs::write(root.join("train.py"), newer).unwrap();
    let out = flor(root, home.path(), &["replay", "--apply", "w2", "--dry-run"]);
    let plan = stdout(&out);
    assert!(out.status.success(), "{plan}{}", stderr(&out));
    assert!(plan.contains("pytorch::"), "the plan shows the framework finding:\n{plan}");
}
