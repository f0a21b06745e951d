"""Recording never disturbs the user's git state."""

import pytest

from conftest import dataframe, git, query, run_script

SCRIPT = """
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", epoch * lr)
"""


def git_state(repo):
    return {
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        # Ignored files other than flor's own folder.
        "ignored": "".join(
            ln + "\n"
            for ln in git(repo, "status", "--porcelain=v1", "--ignored", "--untracked-files=all").splitlines()
            if ln.startswith("!! ") and not ln.startswith("!! .flor/")
        ),
        "head": git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False),
        "symbolic": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "branches": git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"),
        "index": git(repo, "ls-files", "--stage"),
        "staged": git(repo, "diff", "--cached"),
        "unstaged": git(repo, "diff"),
        "stash": git(repo, "stash", "list"),
        "reflog": git(repo, "reflog", "show", "--format=%H %gs", "HEAD", check=False),
        "commits": git(repo, "log", "--format=%H", "--exclude=refs/flor/*", "--all", check=False),
        "config": (repo / ".git" / "config").read_text(),
    }


def _setup_committed_dirty(repo):
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "README.md").write_text("hello\n")
    (repo / "train.py").write_text(SCRIPT)
    (repo / "data.txt").write_text("v1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "data.txt").write_text("v2 dirty\n")  # modified, unstaged
    (repo / "README.md").write_text("hello staged\n")
    git(repo, "add", "README.md")  # modified, staged
    (repo / "untracked.txt").write_text("new\n")
    (repo / "ignored.log").write_text("ignored\n")


@pytest.mark.parametrize("layout", ["committed-dirty", "detached", "no-commits"])
def test_git_state_untouched(repo, layout):
    if layout == "no-commits":
        (repo / "train.py").write_text(SCRIPT)
        (repo / "untracked.txt").write_text("new\n")
    else:
        _setup_committed_dirty(repo)
        if layout == "detached":
            git(repo, "checkout", "-q", "--detach")
    before = git_state(repo)
    run_script(repo, SCRIPT)
    run_script(repo, SCRIPT, "--kwargs", "lr=0.5")
    after = git_state(repo)
    assert after == before

    # The runs were recorded, and snapshotted under refs/flor/runs/.
    assert [r["status"] for r in query(repo, "SELECT status FROM runs")] == ["finished", "finished"]
    assert len(dataframe(repo, "loss")) == 4
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/runs/").split()
    assert len(refs) == 2
    assert git_state(repo) == before


def test_snapshot_holds_the_working_tree_and_parents_head(repo):
    _setup_committed_dirty(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    run_script(repo, SCRIPT)
    (ref,) = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/runs/").split()
    files = set(git(repo, "ls-tree", "-r", "--name-only", ref).split())
    assert {"train.py", "data.txt", "README.md", "untracked.txt", ".gitignore"} <= files
    assert "ignored.log" not in files
    assert not any(f.startswith(".flor/") and not f.startswith(".flor/records/") for f in files)
    assert git(repo, "show", f"{ref}:data.txt") == "v2 dirty\n"
    assert git(repo, "show", f"{ref}:README.md") == "hello staged\n"
    # The ref is the records commit on top of the code snapshot, whose parent is HEAD.
    assert git(repo, "rev-parse", f"{ref}~2").strip() == head
    assert git(repo, "diff", "--name-only", f"{ref}~1", ref).split()[0].startswith(".flor/records/")
