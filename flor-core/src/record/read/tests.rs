use super::*;
use crate::record::{LineEncoder, RunStatus};

fn meta() -> RunMeta {
    RunMeta::new("p", "2026-01-02T03:04:05.000006", "train.py")
}

/// A file of `header` (forward or replay) followed by `body` lines.
fn file(source: Source, body: &[&str]) -> Vec<u8> {
    let mut e = LineEncoder::new();
    e.header(&meta(), source);
    for l in body {
        e.buf.extend_from_slice(l.as_bytes());
        e.buf.push(b'\n');
    }
    e.buf
}

fn errors(p: &Parsed) -> Vec<(u64, &str)> {
    p.errors.iter().map(|e| (e.line, e.message.as_str())).collect()
}

/// The measured defect: one line claiming context 4,000,000,000 made the
/// stores and the pivot size tables by it. Refused, the rest kept.
#[test]
fn a_context_id_beyond_the_file_is_refused() {
    let bytes = file(
        Source::Forward,
        &[
            r#"{"k":"iter","c":0,"l":"epoch","it":0}"#,
            r#"{"k":"log","c":0,"n":"loss","vf":1.5}"#,
            r#"{"k":"iter","c":4000000000,"l":"epoch","it":7}"#,
            r#"{"k":"log","c":4000000000,"n":"loss","vf":2.5}"#,
            r#"{"k":"iter","c":1,"l":"epoch","it":1}"#,
            r#"{"k":"log","c":1,"n":"loss","vf":3.5}"#,
        ],
    );
    let mut r = RecordReader::new();
    let p = r.read(&bytes);
    assert_eq!(p.loops.iter().map(|l| l.ctx).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(p.records.iter().map(|r| r.ctx).collect::<Vec<_>>(), vec![Some(0), Some(1)]);
    let e = errors(&p);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].0, 4);
    assert!(e[0].1.contains("does not fit the file") && e[0].1.contains("context 2 at most"), "{}", e[0].1);
    assert_eq!(e[1].0, 5);
    assert!(e[1].1.contains("context 4000000000 is not declared"), "{}", e[1].1);
    assert_eq!(r.contexts().len(), 2);
    assert!(r.contexts().depth.len() <= 7, "sized by the lines read, not by an id");
}

#[test]
fn the_tightest_bound_is_exact() {
    // Line 2 can declare context 0 only; line 3 context 1 at most.
    let ok = file(Source::Forward, &[r#"{"k":"iter","c":0,"l":"a","it":0}"#, r#"{"k":"iter","c":1,"l":"a","it":1}"#]);
    assert!(RecordReader::new().read(&ok).errors.is_empty());
    let skipped_one = file(Source::Forward, &["garbage", r#"{"k":"iter","c":1,"l":"a","it":1}"#]);
    let p = RecordReader::new().read(&skipped_one);
    assert_eq!(p.loops.len(), 1, "a lost line still counts: {:?}", p.errors);
    let too_far = file(Source::Forward, &[r#"{"k":"iter","c":1,"l":"a","it":0}"#]);
    let p = RecordReader::new().read(&too_far);
    assert_eq!(errors(&p), vec![(2, p.errors[0].message.as_str())]);
    assert!(p.loops.is_empty());
}

#[test]
fn a_context_is_declared_before_use() {
    let bytes = file(
        Source::Forward,
        &[
            r#"{"k":"log","c":0,"n":"early","vi":1}"#,
            r#"{"k":"iter","c":0,"l":"epoch","it":0}"#,
            r#"{"k":"log","c":0,"n":"late","vi":2}"#,
            r#"{"k":"time","c":3,"n":"iteration","vf":0.1}"#,
            r#"{"k":"ckpt","c":2,"n":"w","digest":"0000000000000000000000000000000000000000000000000000000000000000","bytes":1}"#,
            r#"{"k":"arg","n":"lr","vf":0.1}"#,
        ],
    );
    let p = RecordReader::new().read(&bytes);
    assert_eq!(p.records.iter().map(|r| &*r.name).collect::<Vec<_>>(), vec!["late", "lr"]);
    assert!(p.checkpoints.is_empty());
    assert_eq!(p.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 5, 6]);
    assert!(p.errors.iter().all(|e| e.message.contains("not declared")), "{:?}", p.errors);
}

#[test]
fn a_parent_must_be_declared_earlier() {
    let bytes = file(
        Source::Forward,
        &[
            r#"{"k":"iter","c":0,"l":"epoch","it":0}"#,
            r#"{"k":"iter","c":1,"p":0,"l":"step","it":0}"#,
            r#"{"k":"iter","c":2,"p":2,"l":"step","it":1}"#,
            r#"{"k":"iter","c":3,"p":7,"l":"step","it":1}"#,
        ],
    );
    let p = RecordReader::new().read(&bytes);
    assert_eq!(p.loops.len(), 2);
    assert_eq!(p.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    assert!(p.errors.iter().all(|e| e.message.contains("parent context")), "{:?}", p.errors);
}

#[test]
fn ids_increase_and_are_declared_once() {
    let bytes = file(
        Source::Forward,
        &[
            r#"{"k":"iter","c":0,"l":"a","it":0}"#,
            r#"{"k":"arg","n":"x","vi":1}"#,
            r#"{"k":"arg","n":"y","vi":1}"#,
            r#"{"k":"iter","c":2,"l":"a","it":1}"#,
            r#"{"k":"iter","c":2,"l":"a","it":2}"#,
            r#"{"k":"iter","c":1,"l":"a","it":3}"#,
        ],
    );
    let p = RecordReader::new().read(&bytes);
    assert_eq!(p.loops.iter().map(|l| l.ctx).collect::<Vec<_>>(), vec![0, 2]);
    assert!(p.errors[0].message.contains("declared twice"), "{:?}", p.errors);
    assert!(p.errors[1].message.contains("increase"), "{:?}", p.errors);
}

#[test]
fn limits_on_lines_names_and_nesting() {
    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    let long_loop = "l".repeat(MAX_LOOP_NAME_BYTES + 1);
    let long_value = "v".repeat(MAX_LINE_BYTES);
    let lines = [
        format!(r#"{{"k":"log","n":"{long_name}","vi":1}}"#),
        format!(r#"{{"k":"iter","c":0,"l":"{long_loop}","it":0}}"#),
        format!(r#"{{"k":"log","n":"big","vs":"{long_value}"}}"#),
        format!(r#"{{"k":"log","n":"{}","vi":1}}"#, "n".repeat(MAX_NAME_BYTES)),
        r#"{"k":"iter","c":0,"l":"a","it":9223372036854775808}"#.to_owned(),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let p = RecordReader::new().read(&file(Source::Forward, &refs));
    assert_eq!(p.records.len(), 1, "a name of exactly the limit is kept");
    let e = errors(&p);
    assert_eq!(e.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3, 4, 6], "{e:?}");
    assert!(e[0].1.contains("the name (`n`)") && e[0].1.contains("at most 4096"), "{}", e[0].1);
    assert!(e[1].1.contains("loop name"), "{}", e[1].1);
    assert!(e[2].1.contains("bytes long; at most"), "{}", e[2].1);
    assert!(e[3].1.contains("out of range"), "{}", e[3].1);

    // Nesting: MAX_DEPTH levels are fine, one more is refused (and so is
    // anything inside it).
    let mut body = Vec::new();
    for d in 0..=MAX_DEPTH {
        let parent = if d == 0 { String::new() } else { format!(r#","p":{}"#, d - 1) };
        body.push(format!(r#"{{"k":"iter","c":{d}{parent},"l":"l{d}","it":0}}"#));
    }
    body.push(format!(r#"{{"k":"log","c":{},"n":"x","vi":1}}"#, MAX_DEPTH));
    let refs: Vec<&str> = body.iter().map(String::as_str).collect();
    let p = RecordReader::new().read(&file(Source::Forward, &refs));
    assert_eq!(p.loops.len(), MAX_DEPTH);
    assert!(p.errors[0].message.contains("nested 65 deep"), "{:?}", p.errors);
    assert!(p.errors[1].message.contains("not declared"), "{:?}", p.errors);
}

#[test]
fn error_messages_quote_little() {
    let kind = "z".repeat(10_000);
    let p = RecordReader::new().read(&file(Source::Forward, &[&format!(r#"{{"k":"{kind}"}}"#)]));
    assert!(p.errors[0].message.len() < 200, "{}", p.errors[0].message);
    assert!(p.errors[0].message.contains("10000 bytes"));
}

#[test]
fn the_header_is_line_one_only_and_the_kind_unescaped() {
    let header = String::from_utf8(file(Source::Forward, &[])).unwrap();
    let bytes = file(
        Source::Forward,
        &[header.trim_end(), r#"{"k":"l\u006fg","n":"x","vi":1}"#, r#"{"k":"log","n":"y","vi":1}"#],
    );
    let p = RecordReader::new().read(&bytes);
    assert!(p.header.is_some());
    assert_eq!(p.records.len(), 1);
    assert!(p.errors[0].message.contains("second run header"), "{:?}", p.errors);
    assert!(p.errors[1].message.contains("escapes"), "{:?}", p.errors);
    let late = parse_lines(header.as_bytes(), 3);
    assert!(late.header.is_none() && late.errors[0].message.contains("first line"), "{:?}", late.errors);
}

/// The contexts of a forward file declaring epoch 0 (context 0) and its
/// step 0 (context 1).
fn epoch_and_step() -> Arc<Contexts> {
    let mut e = LineEncoder::new();
    e.header(&meta(), Source::Forward);
    e.iter(0, None, "epoch", 0, None);
    e.iter(1, Some(0), "step", 0, None);
    let mut fwd = RecordReader::new();
    assert!(fwd.read(&e.buf).errors.is_empty());
    Arc::new(fwd.into_contexts())
}

#[test]
fn a_replay_file_uses_the_forward_runs_contexts() {
    let forward = epoch_and_step();

    let replay = file(
        Source::Replay,
        &[
            r#"{"k":"log","c":1,"n":"grad","vf":1.0}"#,
            r#"{"k":"log","c":2,"n":"grad","vf":2.0}"#,
            r#"{"k":"iter","c":2,"l":"epoch","it":1}"#,
            r#"{"k":"log","n":"total","vi":3}"#,
        ],
    );
    let mut r = RecordReader::new().with_forward(Arc::clone(&forward)).with_line_keys(1 << 40);
    let p = r.read(&replay);
    assert_eq!(
        p.records.iter().map(|r| (r.ctx, r.line)).collect::<Vec<_>>(),
        vec![(Some(1), (1 << 40) + 2), (None, (1 << 40) + 5)]
    );
    let e = errors(&p);
    assert_eq!(e.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4], "errors keep the line in the file");
    assert!(e[0].1.contains("forward record file"), "{}", e[0].1);
    assert!(e[1].1.contains("declares no loop iterations"), "{}", e[1].1);
    // Without the forward contexts (nothing to check against), contexts pass.
    assert_eq!(parse_lines(&replay, 1).records.len(), 3);
}

/// An extraction file uses its forward file's contexts and declares
/// iterations of its own, numbered on from the forward file's.
#[test]
fn an_extraction_file_extends_the_forward_runs_contexts() {
    let forward = epoch_and_step();

    let extract = file(
        Source::Extract,
        &[
            r#"{"k":"log","c":1,"n":"loss","vf":0.5}"#,
            r#"{"k":"iter","c":2,"p":0,"l":"batch","it":3}"#,
            r#"{"k":"log","c":2,"n":"acc","vf":0.9}"#,
            r#"{"k":"iter","c":1,"l":"epoch","it":1}"#,
            r#"{"k":"iter","c":9,"l":"epoch","it":1}"#,
            r#"{"k":"log","c":7,"n":"acc","vf":0.9}"#,
        ],
    );
    let mut r = RecordReader::new().with_forward(Arc::clone(&forward));
    let p = r.read(&extract);
    assert_eq!(p.header.as_ref().map(|h| h.1), Some(Source::Extract));
    assert_eq!(p.loops.iter().map(|l| (l.ctx, l.parent)).collect::<Vec<_>>(), vec![(2, Some(0))]);
    assert_eq!(
        p.records.iter().map(|r| (r.ctx, r.name.as_ref())).collect::<Vec<_>>(),
        vec![(Some(1), "loss"), (Some(2), "acc")]
    );
    let e = errors(&p);
    assert_eq!(e.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert!(e[0].1.contains("declared twice"), "{}", e[0].1);
    assert!(e[1].1.contains("does not fit the file"), "{}", e[1].1);
    assert!(e[2].1.contains("not declared"), "{}", e[2].1);
    // `skip` learns the same, so a later span may use context 2.
    let mut again = RecordReader::new().with_forward(forward);
    again.skip(&extract);
    let more = again.read(b"{\"k\":\"log\",\"c\":2,\"n\":\"acc\",\"vf\":1.0}\n");
    assert!(more.errors.is_empty(), "{:?}", more.errors);
}

/// `skip` over a span read earlier learns exactly what `read` declared, so
/// reading the rest gives the same answer as reading the file at once.
#[test]
fn skip_learns_what_read_declared() {
    let bytes = file(
        Source::Forward,
        &[
            r#"{"k":"iter","c":0,"l":"epoch","it":0}"#,
            r#"{"c":1,"p":0,"k":"iter","l":"step","it":0}"#,
            r#" {"k":"iter","c":2,"p":1,"l":"inner","it":0}"#,
            r#"{"k":"iter","c":3,"p":9,"l":"step","it":1}"#,
            r#"{"k":"log","c":0,"n":"iter","vs":"\"iter\""}"#,
            r#"{"k":"iter","c":4,"p":0,"l":"step","it":1}"#,
            r#"{"k":"it\u0065r","c":5,"p":0,"l":"step","it":2}"#,
            "",
            r#"{"k":"log","c":1,"n":"a","vi":1}"#,
            r#"{"k":"log","c":2,"n":"a","vi":1}"#,
            r#"{"k":"log","c":3,"n":"a","vi":1}"#,
            r#"{"k":"log","c":4,"n":"a","vi":1}"#,
            r#"{"k":"log","c":5,"n":"a","vi":1}"#,
        ],
    );
    let mut whole = RecordReader::new();
    let all = whole.read(&bytes);
    let cut = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(8).map(|(i, _)| i + 1).unwrap();
    let mut resumed = RecordReader::new();
    assert_eq!(resumed.skip(&bytes[..cut]), cut);
    assert_eq!(resumed.next_line(), 10);
    let rest = resumed.read(&bytes[cut..]);
    assert_eq!(resumed.contexts(), whole.contexts());
    let tail: Vec<_> = all.records.iter().filter(|r| r.line >= 10).cloned().collect();
    assert_eq!(rest.records, tail);
    assert_eq!(rest.errors, all.errors.iter().filter(|e| e.line >= 10).cloned().collect::<Vec<_>>());
    assert_eq!(whole.contexts().len(), 4, "{:?}", all.errors);
}

#[test]
fn the_recorders_files_read_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let mut r = crate::Recorder::create(&path, meta(), Default::default(), None).unwrap();
    r.loop_begin("epoch").unwrap();
    for _ in 0..3 {
        r.iteration_begin(None).unwrap();
        r.loop_begin("step").unwrap();
        for _ in 0..4 {
            r.iteration_begin(None).unwrap();
            r.log("loss", &Value::Float(1.0));
            r.iteration_end().unwrap();
        }
        r.loop_end().unwrap();
        r.log("acc", &Value::Float(0.5));
        r.iteration_end().unwrap();
    }
    r.loop_end().unwrap();
    r.finish(RunStatus::Finished).unwrap();
    drop(r);
    let p = RecordReader::new().read(&std::fs::read(&path).unwrap());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.loops.len(), 3 + 12);
}
