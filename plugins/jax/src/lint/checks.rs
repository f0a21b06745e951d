//! The two checks, over a [`Script`]'s checkpointings and flor loops.

use std::collections::{HashMap, HashSet};

use super::scan::{Kind, Stmt};
use flor_plugin_sdk::{Finding, Severity};

use super::{held, reads, targets, Checkpointing, Loop, Script, PRNG_KEY, TRAIN_STATE};

/// What a call's name ends with (`optax.apply_updates` → `apply_updates`).
fn last(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn finding(s: &Stmt, code: &str, message: String, hint: String) -> Finding {
    let (line, column) = s.toks.first().map_or((1, 1), |t| (t.line, t.col));
    Finding { line, column, code: code.to_owned(), severity: Severity::Warning, message, hint }
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

const KEY_HINT: &str = "keep the key in a container passed to flor.checkpointing and update the container: \
    `state = {\"key\": key, ...}`, `flor.checkpointing(state=state)`, then `state[\"key\"], sub = \
    jax.random.split(state[\"key\"])`; or derive each iteration's key from the loop position: \
    `key = jax.random.fold_in(base_key, epoch)`";

impl Script {
    /// `jax::prng-key-not-checkpointed` in loop `l` under checkpointing `c`.
    pub(super) fn key_findings(&self, c: &Checkpointing, l: &Loop, seen: &mut HashSet<String>) -> Vec<Finding> {
        let (bound, mutated) = self.changed(l);
        let mut out = Vec::new();
        for i in self.own(&l.body) {
            let s = &self.stmts[i];
            for call in self.calls(&s.toks) {
                if !matches!(call.name.as_str(), "jax.random.split" | "jax.random.fold_in") {
                    continue;
                }
                let Some((_, r)) = call.args.iter().find(|(kw, _)| kw.is_none() || kw.as_deref() == Some("key")) else {
                    continue;
                };
                let arg = &s.toks[r.clone()];
                let Some(root) = arg.first().filter(|t| t.kind == Kind::Name).map(|t| t.text.clone()) else { continue };
                let full: String = arg.iter().map(|t| t.text.as_str()).collect();
                let how = last(&call.name);
                let message = if arg.len() == 1 {
                    if !bound.contains(&root) || c.roots.contains(&root) || !self.carried(l, &root) {
                        continue;
                    }
                    if c.captured.contains(&root) {
                        format!(
                            "`{root}` is copied into a container passed to flor.checkpointing at line {}, but {} \
                             rebinds the name (`jax.random.{how}`), not the container's entry: every checkpoint \
                             keeps the key from before the loop, so a replay's random draws differ from the \
                             recorded run's",
                            c.line, l.describe
                        )
                    } else {
                        format!(
                            "`{root}` is a JAX PRNG key that {} advances (`jax.random.{how}`) and carries to the \
                             next iteration, but no flor.checkpointing holds it: a replay that starts from a \
                             checkpoint starts again from the setup's key, so its random draws differ from the \
                             recorded run's",
                            l.describe
                        )
                    }
                } else if arg.get(1).is_some_and(|t| t.is("[") || t.is(".")) {
                    if held(c, &root, &full) || !(mutated.contains(&root) || bound.contains(&root)) {
                        continue;
                    }
                    format!(
                        "`{full}` is a JAX PRNG key that {} advances (`jax.random.{how}`), but `{root}`, which \
                         holds it, is not passed to flor.checkpointing: a replay that starts from a checkpoint \
                         starts again from the setup's key, so its random draws differ from the recorded run's",
                        l.describe
                    )
                } else {
                    continue;
                };
                if seen.insert(root.clone()) {
                    out.push(finding(s, PRNG_KEY, message, KEY_HINT.to_owned()));
                }
            }
        }
        out
    }

    /// Names the setup (before loop `l`) makes as flax/optax state, with
    /// the call that made each: `.init(...)`, `.create(...)`, and names
    /// taken out of those (`params = variables["params"]`).
    fn setup_state(&self, l: &Loop) -> HashMap<String, String> {
        let mut out: HashMap<String, String> = HashMap::new();
        for s in &self.stmts[..l.header] {
            let t = targets(s);
            let Some(v) = t.value else { continue };
            let value = &s.toks[v..];
            let made = self.calls(value).into_iter().find(|c| {
                matches!(last(&c.name), "init" | "create")
                    && !c.name.starts_with("jax.random")
                    && !c.name.starts_with("flordb")
            });
            let via = match made {
                Some(c) => Some(format!("`{}(...)`", c.name.trim_start_matches("….").replace("….", ""))),
                None => match value {
                    [n, next, ..] if n.kind == Kind::Name && (next.is("[") || next.is(".")) => {
                        out.get(&n.text).map(|_| format!("`{}`", n.text))
                    }
                    _ => None,
                },
            };
            if let Some(via) = via {
                for name in t.bound {
                    out.insert(name, via.clone());
                }
            }
        }
        out
    }

    /// `jax::train-state-not-checkpointed` in loop `l` under checkpointing `c`.
    pub(super) fn state_findings(&self, c: &Checkpointing, l: &Loop, seen: &mut HashSet<String>) -> Vec<Finding> {
        let state = self.setup_state(l);
        let mut out = Vec::new();
        for i in self.own(&l.body) {
            let s = &self.stmts[i];
            let t = targets(s);
            let Some(v) = t.value else { continue };
            let value = &s.toks[v..];
            let read = reads(value);
            let updates = self.calls(value).iter().any(|call| match last(&call.name) {
                "apply_updates" | "apply_gradients" => true,
                "update" => call.args.len() >= 2 && t.bound.len() + t.mutated.len() >= 2,
                _ => false,
            });
            let names: Vec<String> = t
                .bound
                .iter()
                .filter(|n| !seen.contains(*n) && !c.roots.contains(*n))
                .filter(|n| state.contains_key(*n) || (updates && read.contains(*n)))
                .filter(|n| self.carried(l, n))
                .cloned()
                .collect();
            let containers: Vec<String> = if updates {
                t.mutated
                    .iter()
                    .filter(|r| !seen.contains(*r) && !held(c, r, r) && read.contains(*r))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            if names.is_empty() && containers.is_empty() {
                continue;
            }
            let captured: Vec<String> = names.iter().filter(|n| c.captured.contains(*n)).cloned().collect();
            let free: Vec<String> =
                names.iter().chain(&containers).filter(|n| !captured.contains(*n)).cloned().collect();
            seen.extend(names.iter().chain(&containers).cloned());
            if !captured.is_empty() {
                let message = format!(
                    "{} (flax/optax training state) are copied into a container passed to flor.checkpointing at \
                     line {}, but {} rebinds the names, not the container's entries: every checkpoint keeps the \
                     state from before the loop, so a replay trains from it and its values differ from the \
                     recorded run's",
                    quoted(&captured),
                    c.line,
                    l.describe
                );
                out.push(finding(s, TRAIN_STATE, message, state_hint(&captured)));
            }
            if !free.is_empty() {
                let made: Vec<String> =
                    free.iter().filter_map(|n| state.get(n).map(|via| format!("`{n}` from {via}"))).collect();
                let origin = if made.is_empty() { String::new() } else { format!(" ({})", made.join(", ")) };
                let message = format!(
                    "{}{origin}: flax/optax training state that {} updates and carries to the next iteration, \
                     but no flor.checkpointing holds it: a replay that starts from a checkpoint trains from the \
                     setup's state, so its values differ from the recorded run's",
                    quoted(&free),
                    l.describe
                );
                out.push(finding(s, TRAIN_STATE, message, state_hint(&free)));
            }
        }
        out
    }
}

fn state_hint(names: &[String]) -> String {
    let entries: Vec<String> = names.iter().map(|n| format!("\"{n}\": {n}")).collect();
    let updated: Vec<String> = names.iter().map(|n| format!("state[\"{n}\"]")).collect();
    format!(
        "keep it in a dict passed to flor.checkpointing and update the dict in place: `state = {{{}}}`, \
         `flor.checkpointing(state=state)`, then `{} = ...` in the loop",
        entries.join(", "),
        updated.join(", ")
    )
}
