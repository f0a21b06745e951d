//! The plugin's Python checks, case by case: a source snippet and the
//! findings (code, line) it must produce, negatives included.

use flor_plugin_pytorch::PyTorch;
use flor_plugin_sdk::{Plugin, Severity};

/// A flor training script whose checkpointing call is `ckpt`, with `extra`
/// lines inside the inner loop (6 spaces of indentation given by the caller).
fn script(ckpt: &str, extra: &str) -> String {
    format!(
        "import flor\nimport torch\nnet = Net()\nopt = torch.optim.SGD(net.parameters(), lr=0.1)\nsched = torch.optim.lr_scheduler.StepLR(opt, 10)\n\
         with flor.checkpointing({ckpt}):\n  for epoch in flor.loop('epoch', range(5)):\n    for x, y in data:\n      loss = net(x).sum()\n      loss.backward()\n{extra}"
    )
}

struct Case {
    name: &'static str,
    text: String,
    expect: &'static [(&'static str, u32)],
}

fn case(name: &'static str, text: &str, expect: &'static [(&'static str, u32)]) -> Case {
    Case { name, text: text.to_owned(), expect }
}

fn cases() -> Vec<Case> {
    vec![
        case("benchmark on", "import torch\ntorch.backends.cudnn.benchmark = True\n", &[("cudnn-benchmark", 2)]),
        case("benchmark off", "torch.backends.cudnn.benchmark = False\n", &[]),
        case("benchmark through an import", "from torch.backends import cudnn\ncudnn.benchmark = True\n", &[("cudnn-benchmark", 2)]),
        case(
            "in a comment or a string",
            "# torch.backends.cudnn.benchmark = True\ns = 'torch.backends.cudnn.benchmark = True'\nt = \"\"\"\ntorch.use_deterministic_algorithms(False)\n\"\"\"\n",
            &[],
        ),
        case("benchmark compared, not set", "if torch.backends.cudnn.benchmark == True:\n    pass\n", &[]),
        case("deterministic off", "torch.backends.cudnn.deterministic = False\n", &[("cudnn-nondeterministic", 1)]),
        case("deterministic on", "torch.backends.cudnn.deterministic = True\n", &[]),
        case("algorithms off", "x = 1\ntorch.use_deterministic_algorithms(False)\n", &[("nondeterministic-algorithms", 2)]),
        case("algorithms off by keyword", "torch.use_deterministic_algorithms(mode=False, warn_only=True)\n", &[("nondeterministic-algorithms", 1)]),
        case("algorithms on", "torch.use_deterministic_algorithms(True)\n", &[]),
        case("shuffle without a generator", "loader = DataLoader(ds, batch_size=32,\n    shuffle=True)\n", &[("dataloader-shuffle", 1)]),
        case("shuffle by a variable", "loader = torch.utils.data.DataLoader(ds, shuffle=args.shuffle)\n", &[("dataloader-shuffle", 1)]),
        case("shuffle with a generator", "DataLoader(ds, shuffle=True, generator=torch.Generator().manual_seed(0))\n", &[]),
        case("no shuffle", "DataLoader(ds, shuffle=False)\nDataLoader(ds)\n", &[]),
        case("workers unseeded", "x = 0\ntorch.utils.data.DataLoader(ds, num_workers=4)\n", &[("dataloader-worker-seed", 2)]),
        case("workers seeded", "DataLoader(ds, num_workers=4, worker_init_fn=seed_worker)\n", &[]),
        case("no workers", "DataLoader(ds, num_workers=0)\n", &[]),
        case("shuffling workers", "DataLoader(ds, shuffle=True, num_workers=2)\n", &[("dataloader-shuffle", 1), ("dataloader-worker-seed", 1)]),
        case("a DataLoader-like name", "MyDataLoaderFactory(ds, shuffle=True)\n", &[]),
        Case {
            name: "everything checkpointed",
            text: script("model=net, optimizer=opt, scheduler=sched", "      opt.step()\n    sched.step()\n"),
            expect: &[],
        },
        Case {
            name: "optimizer not checkpointed",
            text: script("model=net", "      opt.step()\n      opt.zero_grad()\n"),
            expect: &[("stepped-not-checkpointed", 11)],
        },
        Case {
            name: "model not checkpointed",
            text: script("optimizer=opt", "      opt.step()\n"),
            expect: &[("trained-not-checkpointed", 11)],
        },
        Case {
            name: "scheduler not checkpointed",
            text: script("net, opt", "      opt.step()\n    sched.step()\n"),
            expect: &[("stepped-not-checkpointed", 12)],
        },
        Case {
            name: "a grad scaler steps the optimizer",
            text: script("model=net, optimizer=opt", "      scaler.step(opt)\n      scaler.update()\n"),
            expect: &[("stepped-not-checkpointed", 11)],
        },
        Case {
            name: "model.train() in the loop",
            text: script("optimizer=opt", "    other.train()\n"),
            expect: &[("trained-not-checkpointed", 11)],
        },
        Case {
            name: "an environment step is not an optimizer",
            text: script("model=net, optimizer=opt", "      obs = env.step(action)\n"),
            expect: &[],
        },
        Case {
            name: "an attribute of a checkpointed object",
            text: script("trainer=trainer", "      trainer.opt.step()\n"),
            expect: &[],
        },
        case("not a flor script", "opt = SGD(net.parameters())\nfor x in data:\n    opt.step()\n", &[]),
        case(
            "stepped outside any loop",
            "import flor\nwith flor.checkpointing(model=net):\n    for e in flor.loop('e', range(3)):\n        pass\nopt.step()\n",
            &[],
        ),
        case(
            "names imported from flor",
            "from flor import checkpointing, loop\nwith checkpointing(model=net):\n    for e in loop('e', range(3)):\n        opt.step()\n",
            &[("stepped-not-checkpointed", 4)],
        ),
        case(
            "a loop on one line",
            "import flor\nwith flor.checkpointing(model=net):\n    for e in flor.loop('e', range(3)): opt.step()\n",
            &[("stepped-not-checkpointed", 3)],
        ),
    ]
}

#[test]
fn each_case_finds_exactly_its_codes() {
    let mut failures = Vec::new();
    for c in cases() {
        let found: Vec<(String, u32)> =
            PyTorch::lint("python", "train.py", &c.text).into_iter().map(|f| (f.code, f.line)).collect();
        let want: Vec<(String, u32)> =
            c.expect.iter().map(|(code, line)| (format!("pytorch::{code}"), *line)).collect();
        if found != want {
            failures.push(format!("{}: found {found:?}, expected {want:?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_finding_says_where_what_and_how_to_fix() {
    let text = script("optimizer=opt", "      opt.step()\n");
    let found = PyTorch::lint("python", "train.py", &text);
    let model = found.iter().find(|f| f.code == "pytorch::trained-not-checkpointed").unwrap();
    assert_eq!((model.line, model.column, model.severity), (11, 7, Severity::Warning));
    assert!(
        model.message.starts_with("`net` is trained in the loop (its parameters are in `opt`)"),
        "{}",
        model.message
    );
    assert_eq!(model.hint, "pass it to flor.checkpointing, e.g. `with flor.checkpointing(..., net=net):`");
    let loader = &PyTorch::lint("python", "t.py", "a = 1; b = DataLoader(d, shuffle=True)")[0];
    assert_eq!((loader.line, loader.column), (1, 12));
    assert!(loader.hint.contains("generator="));
}

#[test]
fn other_languages_get_no_findings() {
    assert!(PyTorch::lint("julia", "t.jl", "torch.backends.cudnn.benchmark = True").is_empty());
}
