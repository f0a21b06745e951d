"""The driver of `flor replay --executor ray`: runs replay segments as Ray
tasks on a cluster (`python -m flordb._ray --address HOST:PORT`).

flor starts this module on the machine it runs on and talks to it in JSON
lines: requests on stdin, answers and events on stdout (one object a line,
`op` says what it is). Nothing is assumed shared with the cluster's nodes:
each segment's code (the run's code version with the statements carried
in, as a tar archive), the checkpoint objects it restores (a small object
store of just those) and its spec travel through Ray's object store; the
record file it writes comes back as the task's result. A task works in a
fresh temporary folder, so a retried task (Ray retries a task whose worker
process or node died, `--retries` times) starts clean and nothing it wrote
before is kept.

Requests:
  {"op": "check", "sources": [...], "local": [...]}
      every node has `flordb` and the top-level modules the scripts import
      (other than `local`: modules inside the code version) ->
      {"op": "checked", "missing": {"<node>": ["torch", ...]}}
  {"op": "submit", "key": "R/S", "code": DIR, "objects": DIR, "spec": FILE,
   "output": FILE, "steps": N}
      runs one segment; its events: {"op": "started", "key", "node"},
      {"op": "progress", "key", "done"}, {"op": "finished", "key", "ok",
      "error", "secs", "attempts"} (the records written to "output" first)
  {"op": "cancel"}  cancels every segment not finished
At start, after connecting: {"op": "ready", "cpus", "nodes", "python",
"flordb", "ray"}; or {"op": "error", "message"} and exit status 2.
"""

import argparse
import ast
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

_out_lock = threading.Lock()


def _say(obj):
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _tar(folder):
    """`folder` as an uncompressed tar archive (bytes), paths relative to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(folder, arcname=".")
    return buf.getvalue()


def _untar(data, folder):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as t:
        try:
            t.extractall(folder, filter="data")
        except TypeError:  # Python without extraction filters
            t.extractall(folder)


def imported_modules(source):
    """Top-level module names a script imports (absolute imports only),
    leaving out imports inside a `try` (optional ones, with a fallback)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()

    def visit(node, guarded):
        if isinstance(node, ast.Import) and not guarded:
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not guarded and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, guarded or isinstance(node, ast.Try))

    visit(tree, False)
    return names


_FIND = (
    "import importlib.util, json, sys\n"
    "def found(m):\n"
    "    try:\n"
    "        return importlib.util.find_spec(m) is not None\n"
    "    except (ImportError, ValueError):\n"
    "        return False\n"
    "print(json.dumps({'python': sys.executable, 'missing': [m for m in sys.argv[1:] if not found(m)]}))\n"
)


def _check_node(modules, python):
    """Which of `modules` the interpreter segments run with lacks (this
    worker's own, or `python`)."""
    cmd = [python or sys.executable, "-c", _FIND, *sorted(modules)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except OSError as e:
        return {"python": python, "missing": [f"the interpreter itself ({e.strerror or e})"]}
    if out.returncode != 0:
        return {"python": python, "missing": [f"a working interpreter ({out.stderr.strip()[-300:]})"]}
    return json.loads(out.stdout)


def _run_segment(key, code, objects, spec, script, args, python, progress, fail_once):
    """One segment, on a node: unpack, run the script as a replay worker,
    return its record file."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    progress.report.remote(key, node, 0)
    started = time.time()
    work = tempfile.mkdtemp(prefix="flor-ray-")
    try:
        code_dir = os.path.join(work, "code")
        objects_dir = os.path.join(work, "objects")
        _untar(code, code_dir)
        _untar(objects, objects_dir)
        spec_path = os.path.join(work, "spec.json")
        output = os.path.join(work, "out.jsonl")
        prog = os.path.join(work, "progress")
        err_path = os.path.join(work, "stderr")
        with open(spec_path, "wb") as f:
            f.write(spec)
        env = dict(os.environ)
        env.update(
            {
                "FLOR_REPLAY": spec_path,
                "FLOR_REPLAY_OUTPUT": output,
                "FLOR_REPLAY_OBJECTS": objects_dir,
                "FLOR_REPLAY_PROGRESS": prog,
            }
        )
        script_path = os.path.join(code_dir, script)
        cwd = os.path.dirname(script_path)
        with open(err_path, "wb") as err:
            p = subprocess.Popen(
                [python or sys.executable, script_path, *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            done = 0
            while p.poll() is None:
                time.sleep(0.1)
                now = _read_progress(prog)
                if now != done:
                    done = now
                    progress.report.remote(key, node, done)
                if fail_once is not None and done >= 1 and ray.get(fail_once.first.remote()):
                    # Test hook: this worker dies mid-segment, as a lost node would.
                    p.kill()
                    p.wait()
                    shutil.rmtree(work, ignore_errors=True)
                    os._exit(1)
        if p.returncode != 0:
            with open(err_path, "rb") as f:
                tail = f.read()[-4000:].decode("utf-8", "replace")
            return {"ok": False, "error": f"the script exited with status {p.returncode} on node {node}:\n{tail}"}
        with open(output, "rb") as f:
            records = f.read()
        return {"ok": True, "records": records, "node": node, "secs": time.time() - started}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reachable(address, timeout=5.0):
    """Why `address` (HOST:PORT) takes no connection, or None (also for
    addresses of other forms, which `ray.init` resolves itself)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or address.startswith(("ray://", "auto")):
        return None
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
        return None
    except OSError as e:
        return f"{e.strerror or e} (is a Ray head running there? `ray start --head --port {port}`)"


def _read_progress(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class Driver:
    def __init__(self, ray, python, retries, fail_once):
        self.ray = ray
        self.python = python
        self.retries = retries

        @ray.remote(num_cpus=0)
        class Progress:
            def __init__(self):
                self.state = {}

            def report(self, key, node, done):
                # A report of 0 after others is a new attempt (a retry).
                _, _, attempt = self.state.get(key, (None, None, 0))
                self.state[key] = (node, done, attempt + 1 if done == 0 else attempt)

            def snapshot(self):
                return dict(self.state)

        @ray.remote(num_cpus=0)
        class FailOnce:
            def __init__(self):
                self.failed = False

            def first(self):
                was, self.failed = self.failed, True
                return not was

        self.progress = Progress.remote()
        self.fail_once = FailOnce.remote() if fail_once else None
        task = ray.remote(num_cpus=1, max_retries=retries)(_run_segment)
        # Test hook: custom resources every segment needs (to send them all
        # to one node).
        pinned = os.environ.get("FLOR_RAY_TEST_RESOURCES")
        self.task = task.options(resources=json.loads(pinned)) if pinned else task
        self.check = ray.remote(num_cpus=0)(_check_node)
        self.running = {}  # ObjectRef -> (key, output, started)
        self.code_refs = {}  # code folder -> ObjectRef of its archive
        self.seen = {}  # key -> last reported (node, done)
        self.lock = threading.Lock()

    def nodes(self):
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def check_imports(self, sources, local):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        wanted = {"flordb"}
        for s in sources:
            wanted |= imported_modules(s)
        wanted -= set(local)
        wanted = {m for m in wanted if m not in sys.builtin_module_names and m != "__future__"}
        refs = {}
        for n in self.nodes():
            strategy = NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
            refs[n["NodeID"]] = self.check.options(scheduling_strategy=strategy).remote(sorted(wanted), self.python)
        missing = {}
        pythons = {}
        for node, ref in refs.items():
            got = self.ray.get(ref, timeout=120)
            pythons[node] = got["python"]
            if got["missing"]:
                missing[node] = got["missing"]
        return {"op": "checked", "missing": missing, "python": pythons}

    def submit(self, req):
        code = req["code"]
        if code not in self.code_refs:
            archive = _tar(code)
            print(f"code {code}: {len(archive)} bytes shipped once", file=sys.stderr, flush=True)
            self.code_refs[code] = self.ray.put(archive)
        archive = _tar(req["objects"])
        print(f"segment {req['key']}: {len(archive)} bytes of checkpoint objects", file=sys.stderr, flush=True)
        objects = self.ray.put(archive)
        with open(req["spec"], "rb") as f:
            spec = f.read()
        run = json.loads(spec)
        script = run["code"]["script"]
        args = run["run"].get("argv", [])[1:]
        ref = self.task.remote(
            req["key"], self.code_refs[code], objects, spec, script, args, self.python, self.progress, self.fail_once
        )
        with self.lock:
            self.running[ref] = (req["key"], req["output"], time.time())

    def cancel(self):
        with self.lock:
            refs = list(self.running)
        for ref in refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished
                pass

    def watch(self, stop):
        """Reports progress and finished segments until `stop` is set."""
        while not stop.is_set():
            with self.lock:
                refs = list(self.running)
            if refs:
                ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0.2)
                for ref in ready:
                    self.finish(ref)
            else:
                time.sleep(0.1)
            try:
                state = self.ray.get(self.progress.snapshot.remote(), timeout=10)
            except Exception:
                continue
            for key, (node, done, attempt) in state.items():
                last = self.seen.get(key)
                if last is None or last[2] != attempt:
                    _say({"op": "started", "key": key, "node": node, "attempt": attempt})
                if last is None or last[1] != done:
                    _say({"op": "progress", "key": key, "done": done})
                self.seen[key] = (node, done, attempt)

    def finish(self, ref):
        with self.lock:
            key, output, started = self.running.pop(ref)
        secs = time.time() - started
        try:
            result = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 -- cancelled, or failed beyond its retries
            name = type(e).__name__
            why = "cancelled" if "Cancel" in name else f"{name}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            _say({"op": "finished", "key": key, "ok": False, "error": why, "secs": secs})
            return
        if not result["ok"]:
            _say({"op": "finished", "key": key, "ok": False, "error": result["error"], "secs": secs})
            return
        tmp = output + ".part"
        with open(tmp, "wb") as f:
            f.write(result["records"])
        os.replace(tmp, output)
        print(f"segment {key} ran on node {result.get('node')}", file=sys.stderr, flush=True)
        _say({"op": "finished", "key": key, "ok": True, "secs": result.get("secs", secs), "node": result.get("node")})


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m flordb._ray", description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", required=True, help="the Ray cluster (HOST:PORT, or `auto`)")
    ap.add_argument("--python", default="", help="the interpreter segments run with on the nodes (default: Ray's)")
    ap.add_argument("--retries", type=int, default=2, help="retries of a segment whose worker or node died")
    ap.add_argument("--connect-timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    try:
        import ray
    except ImportError:
        _say({"op": "error", "message": f"{sys.executable} has no `ray` module (pip install ray)"})
        return 2
    reachable = _reachable(a.address)
    if reachable is not None:
        _say({"op": "error", "message": f"cannot reach the Ray cluster at {a.address}: {reachable}"})
        return 2
    connected = {}

    def connect():
        try:
            ray.init(address=a.address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
            connected["ok"] = True
        except Exception as e:  # noqa: BLE001 -- any failure to connect is reported
            connected["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(a.connect_timeout)
    if not connected.get("ok"):
        why = connected.get("error") or f"no answer in {a.connect_timeout:.0f} s"
        _say({"op": "error", "message": f"cannot reach the Ray cluster at {a.address}: {why}"})
        sys.stdout.flush()
        os._exit(2)  # a connection attempt may still be running
    try:
        from importlib.metadata import version

        flordb_version = version("flordb")
    except Exception:  # noqa: BLE001 -- only shown in the plan
        flordb_version = "?"
    driver = Driver(ray, a.python, a.retries, os.environ.get("FLOR_RAY_TEST_FAIL_ONCE") == "1")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    _say(
        {
            "op": "ready",
            "cpus": cpus,
            "nodes": len(driver.nodes()),
            "python": a.python or "the Python each Ray node runs",
            "flordb": flordb_version,
            "ray": ray.__version__,
        }
    )
    stop = threading.Event()
    watcher = threading.Thread(target=driver.watch, args=(stop,), daemon=True)
    watcher.start()
    requests = queue.Queue()

    def read():
        for line in sys.stdin:
            requests.put(line)
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        line = requests.get()
        if line is None:
            break
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "submit":
                driver.submit(req)
            elif op == "check":
                _say(driver.check_imports(req.get("sources", []), req.get("local", [])))
            elif op == "cancel":
                driver.cancel()
            else:
                _say({"op": "error", "message": f"unknown request {op!r}"})
        except Exception as e:  # noqa: BLE001 -- reported, the driver goes on
            _say({"op": "error", "message": f"{type(e).__name__}: {e}"})
    driver.cancel()
    stop.set()
    watcher.join(5)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
