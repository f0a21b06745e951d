//! flor-replay through its public API: the local executor on real
//! processes (a shell stands in for the interpreter), resumption,
//! cancellation and crash reports; the orchestrator on a second, in-memory
//! executor; concurrent attaches to one run.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flor_core::layout::{ref_for, replay_label, RECORDS_DIR};
use flor_core::propagate::{LoopScope, Outcome};
use flor_core::RunMeta;
use flor_replay::{
    attach_replay, execute, CodeRef, ContextSpan, Event, Executor, Finished, Forward, Level, LocalExecutor,
    LocalOptions, Plan, RunPlan, RunReplay, Segment, SegmentSpec, SegmentTask, StatementPlan, Step, TaskId,
    TaskProgress, VersionPlan, SPEC_VERSION,
};

/// A repository with one committed file, and a run ref on it.
fn repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let st = Command::new("git").args(["init", "-q"]).current_dir(root).status().unwrap();
    assert!(st.success());
    std::fs::write(root.join("train.sh"), "echo old\n").unwrap();
    let snap = flor_git::snapshot_worktree(
        root,
        &ref_for("2026-01-01T00-00-00.000001"),
        "code",
        &flor_git::SnapshotOptions::from_env().unwrap(),
    )
    .unwrap();
    (dir, snap.commit)
}

fn meta(commit: &str) -> RunMeta {
    let mut m = RunMeta::new("proj", "2026-01-01T00:00:00.000001", "train.sh");
    m.interpreter = "/bin/sh".into();
    m.argv = vec!["train.sh".into(), "--kwargs".into(), "lr=0.1".into()];
    m.commit = Some(commit.to_owned());
    m
}

fn segment(index: usize, steps: u64) -> Segment {
    Segment {
        index,
        steps: (0..steps).map(|i| Step { iteration: i, restore: None, record: true, skip_nested: false }).collect(),
        record_setup: index == 0,
        teardown: false,
        final_restore: None,
        estimate_secs: 0.1,
    }
}

/// A spec whose "script" is `source`, run by /bin/sh.
fn spec(commit: &str, index: usize, source: &str) -> Arc<SegmentSpec> {
    Arc::new(SegmentSpec {
        version: SPEC_VERSION,
        run: meta(commit),
        code: CodeRef { commit: commit.to_owned(), script: "train.sh".into(), source: source.to_owned() },
        names: vec!["grad".into()],
        outer_loop: Some("epoch".into()),
        segment: segment(index, 2),
        checkpoints: BTreeMap::new(),
        contexts: vec![ContextSpan { first_ctx: 0, count: 2, parent: None, name: "epoch".into(), first_iteration: 0 }],
        check: vec![],
        iters: vec![],
        overrides: BTreeMap::new(),
        loads: vec![],
    })
}

/// A shell "front end": checks its binding, writes a record line naming
/// its segment and argument, reports progress.
const WRITES: &str = r#"test -f "$FLOR_REPLAY" || exit 3
test -d "$FLOR_REPLAY_OBJECTS" || exit 4
echo "2 2" > "$FLOR_REPLAY_PROGRESS"
printf 'segment %s %s\n' "$(grep -o '"index": [0-9]*' "$FLOR_REPLAY")" "$2" > "$FLOR_REPLAY_OUTPUT"
"#;

fn executor(root: &Path, jobs: usize) -> LocalExecutor {
    std::fs::create_dir_all(root.join(".flor/objects")).unwrap();
    LocalExecutor::new(LocalOptions {
        root: root.to_owned(),
        work_dir: root.join(".flor/replay"),
        objects: root.join(".flor/objects"),
        jobs,
        isolation: None,
    })
}

/// Drains events until `n` segments finished (or 30 s).
fn finish(ex: &mut dyn Executor, n: usize) -> (Vec<Finished>, Vec<Event>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut done, mut started) = (Vec::new(), Vec::new());
    while done.len() < n {
        assert!(Instant::now() < deadline, "segments did not finish: {done:?}");
        match ex.next_event(Duration::from_millis(100)).unwrap() {
            Some(Event::Finished(f)) => done.push(f),
            Some(e) => started.push(e),
            None => {}
        }
    }
    done.sort_by_key(|f| f.id);
    (done, started)
}

#[test]
fn local_executor_runs_segments_in_processes_and_hands_records_back() {
    let (dir, commit) = repo();
    let root = dir.path();
    let mut ex = executor(root, 2);
    assert_eq!(ex.workers(), 2);
    for k in 0..3 {
        ex.submit(SegmentTask { id: TaskId { run: 0, segment: k }, spec: spec(&commit, k, WRITES) }).unwrap();
    }
    let (done, started) = finish(&mut ex, 3);
    assert_eq!(started.len(), 3, "{started:?}");
    for (k, f) in done.iter().enumerate() {
        let text = String::from_utf8(f.result.clone().unwrap()).unwrap();
        assert_eq!(text, format!("segment \"index\": {k} lr=0.1\n"));
        assert!(!f.resumed);
    }
    // The user's checkout is untouched; the code ran from an exported copy.
    assert_eq!(std::fs::read_to_string(root.join("train.sh")).unwrap(), "echo old\n");
    assert!(ex.progress().iter().all(Option::is_none));
}

#[test]
fn a_segment_finished_by_an_interrupted_replay_is_answered_without_running() {
    let (dir, commit) = repo();
    let root = dir.path();
    {
        let mut ex = executor(root, 1);
        ex.submit(SegmentTask { id: TaskId { run: 0, segment: 0 }, spec: spec(&commit, 0, WRITES) }).unwrap();
        let (done, _) = finish(&mut ex, 1);
        assert!(done[0].result.is_ok());
    } // the orchestrator died before attaching
    let mut ex = executor(root, 1);
    // The script would now fail: it must not run again.
    ex.submit(SegmentTask { id: TaskId { run: 0, segment: 0 }, spec: spec(&commit, 0, WRITES) }).unwrap();
    ex.submit(SegmentTask { id: TaskId { run: 0, segment: 1 }, spec: spec(&commit, 1, WRITES) }).unwrap();
    let (done, started) = finish(&mut ex, 2);
    assert!(done[0].resumed && done[0].secs == 0.0, "{:?}", done[0]);
    assert_eq!(done[0].result.as_deref().unwrap(), b"segment \"index\": 0 lr=0.1\n");
    assert!(!done[1].resumed);
    assert_eq!(started.len(), 1, "only the new segment ran: {started:?}");
    ex.forget_run(&meta(&commit).run_id()).unwrap();
    assert!(!root.join(".flor/replay").exists(), "forgotten runs leave nothing behind");
}

#[test]
fn a_crashing_segment_reports_its_exit_and_last_stderr_lines() {
    let (dir, commit) = repo();
    let mut ex = executor(dir.path(), 1);
    let crash = "echo 'Traceback: the data loader broke' >&2\nexit 7\n";
    ex.submit(SegmentTask { id: TaskId { run: 0, segment: 0 }, spec: spec(&commit, 0, crash) }).unwrap();
    ex.submit(SegmentTask { id: TaskId { run: 0, segment: 1 }, spec: spec(&commit, 1, "exit 0\n") }).unwrap();
    let (done, _) = finish(&mut ex, 2);
    let why = done[0].result.as_ref().unwrap_err();
    assert!(why.contains("crashed") && why.contains("7") && why.contains("the data loader broke"), "{why}");
    let why = done[1].result.as_ref().unwrap_err();
    assert!(why.contains("without recording"), "{why}");
}

#[test]
fn cancel_stops_the_running_segment_and_the_queued_ones() {
    let (dir, commit) = repo();
    let mut ex = executor(dir.path(), 1);
    for k in 0..3 {
        ex.submit(SegmentTask { id: TaskId { run: 0, segment: k }, spec: spec(&commit, k, "sleep 30\n") }).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "never started");
        if let Some(Event::Started { .. }) = ex.next_event(Duration::from_millis(100)).unwrap() {
            break;
        }
    }
    let p: Vec<Option<TaskProgress>> = ex.progress();
    assert!(p[0].as_ref().is_some_and(|t| t.total == 2), "{p:?}");
    let t = Instant::now();
    ex.cancel().unwrap();
    let (done, _) = finish(&mut ex, 3);
    assert!(t.elapsed() < Duration::from_secs(5), "cancel took {:?}", t.elapsed());
    assert!(done.iter().all(|f| f.result.as_ref().is_err_and(|e| e == "cancelled")), "{done:?}");
}

/// The second executor: answers from a table, in submission order.
struct Canned {
    answers: BTreeMap<TaskId, Result<Vec<u8>, String>>,
    queue: VecDeque<TaskId>,
    forgotten: Vec<String>,
}

impl Executor for Canned {
    fn name(&self) -> &'static str {
        "canned"
    }
    fn workers(&self) -> usize {
        1
    }
    fn submit(&mut self, task: SegmentTask) -> flor_replay::Result<()> {
        assert_eq!(task.spec.version, SPEC_VERSION);
        self.queue.push_back(task.id);
        Ok(())
    }
    fn next_event(&mut self, _: Duration) -> flor_replay::Result<Option<Event>> {
        Ok(self.queue.pop_front().map(|id| {
            let result = self.answers.remove(&id).unwrap_or_else(|| Err("no answer".into()));
            Event::Finished(Finished { id, result, secs: 0.5, resumed: false })
        }))
    }
    fn progress(&self) -> Vec<Option<TaskProgress>> {
        vec![None]
    }
    fn cancel(&mut self) -> flor_replay::Result<()> {
        self.queue.clear();
        Ok(())
    }
    fn forget_run(&mut self, run_id: &str) -> flor_replay::Result<()> {
        self.forgotten.push(run_id.to_owned());
        Ok(())
    }
}

/// A segment's output: a replay file's header, then one value.
const RECORD: &[u8] = b"{\"k\":\"run\",\"format\":1,\"source\":\"replay\",\"projid\":\"p\",\
\"tstamp\":\"2026-01-01T00:00:00.000001\",\"filename\":\"train.sh\",\"argv\":[\"train.sh\"],\
\"interpreter\":\"sh\",\"host\":\"h\",\"pid\":1,\"status\":\"finished\"}\n\
{\"k\":\"log\",\"c\":0,\"n\":\"grad\",\"vf\":1.5}\n";

#[test]
fn execute_attaches_a_run_once_all_its_segments_are_in_and_keeps_failed_runs_out() {
    let (dir, commit) = repo();
    let root = dir.path();
    // A second run on the same code.
    let mut other = meta(&commit);
    other.tstamp = "2026-01-01T00:00:00.000002".into();
    flor_git::snapshot_worktree(
        root,
        &ref_for(&other.run_id()),
        "code",
        &flor_git::SnapshotOptions::from_env().unwrap(),
    )
    .unwrap();
    let run = |m: RunMeta, segments: usize| RunReplay {
        meta: m,
        version: 0,
        plan: RunPlan {
            level: Level::Inner,
            teardown: false,
            segments: (0..segments).map(|k| segment(k, 1)).collect(),
            estimate_secs: 1.0,
            forward_secs: 2.0,
        },
        forward: Forward::default(),
    };
    let plan = Plan {
        names: vec!["grad".into()],
        versions: vec![VersionPlan {
            commit: commit.clone(),
            script: "train.sh".into(),
            statements: vec![],
            source: Some("exit 0\n".into()),
            failure: None,
            diff: String::new(),
            findings: vec![],
        }],
        runs: vec![run(meta(&commit), 2), run(other.clone(), 2)],
        skipped: vec![],
        jobs: 1,
        total_secs: 2.0,
        makespan_secs: 2.0,
        no_check: vec![],
        strict: false,
        isolation: None,
        iters: vec![],
        overrides: BTreeMap::new(),
        executor: None,
    };
    let id = |run, segment| TaskId { run, segment };
    let mut ex = Canned {
        answers: BTreeMap::from([
            (id(0, 0), Ok(RECORD.to_vec())),
            (id(0, 1), Ok(RECORD.to_vec())),
            (id(1, 0), Ok(RECORD.to_vec())),
            (id(1, 1), Err("the script crashed".into())),
        ]),
        queue: VecDeque::new(),
        forgotten: vec![],
    };
    let mut lines = Vec::new();
    let summary =
        execute(root, &root.join(".flor/locks"), &plan, &mut ex, &mut |l: &str| lines.push(l.to_owned())).unwrap();
    assert_eq!(summary.runs[0].values, 2);
    assert!(summary.runs[0].failure.is_none());
    assert_eq!(summary.runs[1].failure.as_deref(), Some("the script crashed"));
    assert_eq!(ex.forgotten, vec![meta(&commit).run_id()]);
    let first = meta(&commit).run_id();
    for k in 0..2 {
        let bytes =
            flor_git::read_file_at(root, &ref_for(&first), &format!("{RECORDS_DIR}/{}", replay_label(&first, 1, k)))
                .unwrap();
        assert!(bytes.starts_with(RECORD), "the segment's records, then its check line");
        let checks = flor_core::record::parse_lines(&bytes[RECORD.len()..], 2).checks;
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].compared, checks[0].recovered.as_slice()), (0, &["grad".to_owned()][..]));
    }
    let files = flor_git::list_dir_at(root, &ref_for(&other.run_id()), RECORDS_DIR).unwrap();
    assert!(files.is_empty(), "a failed run attaches nothing: {files:?}");
    assert!(lines.iter().any(|l| l.contains("2 values attached as replay 1")), "{lines:?}");
    let text = summary.render(&plan);
    assert!(text.contains("2 values recovered") && text.contains("FAILED: the script crashed"), "{text}");
    assert!(text.contains("nothing could be checked"), "{text}");
}

#[test]
fn the_plan_says_why_a_statement_replays_every_iteration() {
    let mut plan = Plan {
        names: vec!["grad".into()],
        versions: vec![VersionPlan {
            commit: "0123456789abcdef".into(),
            script: "train.py".into(),
            statements: vec![StatementPlan {
                new_line: 7,
                outcome: Outcome::Placed { line: 6, renames: vec![] },
                scope: Some(LoopScope::Dynamic {
                    reason: "inside function `helper`, which may be called from any loop".into(),
                }),
                level: Some(Level::Inner),
            }],
            source: Some(String::new()),
            failure: None,
            diff: String::new(),
            findings: vec![],
        }],
        runs: vec![],
        skipped: vec![],
        jobs: 1,
        total_secs: 0.0,
        makespan_secs: 0.0,
        no_check: vec![],
        strict: false,
        isolation: None,
        iters: vec![],
        overrides: BTreeMap::new(),
        executor: None,
    };
    let text = plan.render();
    assert!(text.contains("line 7 of the newest version: placed at line 6; inside a nested loop"), "{text}");
    assert!(text.contains("(runs anywhere: inside function `helper`"), "{text}");
    plan.versions[0].statements[0].scope =
        Some(LoopScope::Static { loops: vec!["epoch".into()], after_first_loop: true });
    assert!(!plan.render().contains("runs anywhere"));
}

#[test]
fn replays_attached_to_one_run_at_once_each_get_their_own_number() {
    // Replays (of different names) finishing together on one run: each
    // attach lands under its own replay number; no file replaces another's.
    let (dir, _) = repo();
    let root = dir.path();
    let id = "2026-01-01T00-00-00.000001";
    const N: usize = 8;
    let barrier = std::sync::Barrier::new(N);
    let numbers: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let segs =
                        vec![format!("replay {i} seg 0\n").into_bytes(), format!("replay {i} seg 1\n").into_bytes()];
                    barrier.wait();
                    attach_replay(root, id, &segs, &format!("replay {i}")).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = numbers.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=N as u64).collect::<Vec<_>>());
    for (i, n) in numbers.iter().enumerate() {
        for k in 0..2 {
            let path = format!("{RECORDS_DIR}/{}", replay_label(id, *n, k));
            let bytes = flor_git::read_file_at(root, &ref_for(id), &path).unwrap();
            assert_eq!(bytes, format!("replay {i} seg {k}\n").into_bytes());
        }
    }
}
