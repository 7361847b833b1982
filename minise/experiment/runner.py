"""Planning and carrying out the runs of a suite: one process, N local worker processes, or a Dask cluster.

Every run is an ordinary training run (:func:`minise.train.train`) in ``DIR/<config>/seed<k>/``,
which then also holds ``result.json`` (status, errors, time, parameters, multiply-adds) and
``train.log``. A run is

- finished when its ``result.json`` says ``done`` or ``diverged`` (a seeded run that diverged
  would diverge again): it is skipped;
- continued from its ``last.npz`` when it was interrupted;
- refused (an error, nothing touched) when its folder holds a different configuration.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fileio
from ..config import resolve_config
from ..errors import MiniseError, UserError, one_line
from ..runfolder import check_run_folder, lock_run_folder
from ..train import Interrupted, NonFiniteLoss
from .suites import PROTOCOLS, Config, Suite

__all__ = ["Run", "plan", "check", "execute", "run_local", "run_dask", "remote_execute", "model_cost",
           "read_metrics", "Progress", "write_atomic", "RESULT", "CPU_MACS_PER_S"]

RESULT = "result.json"
FINISHED = ("done", "diverged")
# Multiply-adds per second of minise on an idle 2-core CPU, from its ResNet-20 speed (about 200 training images/s
# at 3 x 41 M multiply-adds each, 600 evaluation images/s at 41 M): only for `list` and the ETA before the
# first run ends.
CPU_MACS_PER_S = 25e9
_DATASET_SIZES = {"cifar10": (50_000, 10_000, 10), "cifar100": (50_000, 10_000, 100)}


@dataclass
class Run:
    """One configuration × one seed: where it lives, what it trains, what it will cost."""

    config: Config
    seed: int
    folder: Path
    train_config: dict[str, Any]
    macs: int  # multiply-adds of one forward pass of one image
    params: int
    cost: float  # multiply-adds of the whole run (training ≈ 3 forward passes), for the ETA
    state: str = "new"  # new | resume | finished | failed (planned again)

    @property
    def label(self) -> str:
        return f"{self.config.name} seed {self.seed}"


# ----------------------------------------------------------------------------- small helpers
def write_atomic(path: Path, data: bytes | str) -> None:
    """:func:`minise.fileio.write_atomic`, creating the folder first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fileio.write_atomic(path, data)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); move it away to run again") from None


def read_metrics(folder: Path) -> list[dict[str, float]]:
    """The per-epoch rows of ``metrics.csv`` as numbers (empty when there is none yet).

    A file that is not such a table (not text, a row with more fields than the header, a field that
    is not a number) is a :class:`UserError` that says where."""
    path = Path(folder) / "metrics.csv"
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = []
            for line, row in enumerate(csv.DictReader(f), start=2):
                if None in row:
                    raise UserError(f"{path}: line {line} has more fields than the header")
                try:
                    rows.append({k: float(v) if v not in ("", None) else math.nan for k, v in row.items()})
                except ValueError:
                    raise UserError(f"{path}: line {line} holds a field that is not a number") from None
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable metrics table ({type(exc).__name__}: {one_line(exc, 80)})") from None


def model_cost(train_config: dict[str, Any]) -> tuple[int, int]:
    """(parameters, multiply-adds of one 32×32 image) of the configuration's network."""
    from .. import models  # noqa: PLC0415

    name = train_config["model"]
    _, _, classes = _DATASET_SIZES[train_config["dataset"]]
    kwargs = dict(train_config.get("model_options") or {})
    if name.startswith("se_"):
        kwargs["reduction"] = train_config["reduction"]
    try:
        model = models.create(name, num_classes=classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {name!r} with options {train_config.get('model_options')}: {exc}") from None
    s = models.summary(model, (3, 32, 32))
    return int(s.total_params), int(s.total_macs)


def run_cost(train_config: dict[str, Any], macs: int) -> float:
    """Multiply-adds of a whole run: 3 per image and layer when training, 1 when evaluating."""
    n_train, n_test, _ = _DATASET_SIZES[train_config["dataset"]]
    n_train = min(n_train, train_config["limit_train"] or n_train)
    n_test = min(n_test, train_config["limit_test"] or n_test)
    per_epoch = math.ceil(n_train / train_config["batch_size"])
    if train_config.get("iterations"):
        steps = int(train_config["iterations"])
        epochs = math.ceil(steps / per_epoch)
        images = steps * train_config["batch_size"]
    else:
        epochs = int(train_config["epochs"])
        images = epochs * n_train
    return float(macs) * (3 * images + epochs * n_test)


def _differences(planned: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    # "data" is set by train (cifar | synthetic) once it knows where the images came from
    keys = (set(planned) | set(stored)) - ({"data"} if planned.get("data") is None else set())
    return [f"{k}: {stored.get(k)!r} there, {planned.get(k)!r} planned" for k in sorted(keys)
            if json.dumps(planned.get(k), sort_keys=True) != json.dumps(stored.get(k), sort_keys=True)]


# ----------------------------------------------------------------------------- planning
def plan(suite: Suite, configs: Iterable[Config], seeds: Iterable[int], protocol: str, out: Path,
         extra: dict[str, Any] | None = None) -> list[Run]:
    """Every run of ``configs`` × ``seeds`` on ``protocol``, with its resolved training configuration."""
    runs = []
    costs: dict[str, tuple[int, int]] = {}
    for config in configs:
        for seed in seeds:
            options = {**PROTOCOLS[protocol], **suite.overrides, **config.options, "seed": int(seed)}
            train_config = resolve_config(options)
            if config.name not in costs:
                costs[config.name] = model_cost(train_config)
            params, macs = costs[config.name]
            runs.append(Run(config, int(seed), Path(out) / config.name / f"seed{seed}", train_config, macs, params,
                            run_cost(train_config, macs)))
    return runs


def check(runs: list[Run]) -> None:
    """Set each run's state from its folder; refuse (before anything runs) folders of another configuration."""
    problems = []
    for run in runs:
        folder = run.folder
        stored = read_json(folder / "config.json")
        if stored is None:
            if (folder / "last.npz").exists() or (folder / RESULT).exists():
                problems.append(f"{folder}: holds a run but no config.json")
            run.state = "new"
            continue
        if not isinstance(stored, dict):
            problems.append(f"{folder}: its config.json holds a {type(stored).__name__}, not a run configuration")
            continue
        diff = _differences(run.train_config, stored)
        if diff:
            problems.append(f"{folder} holds a different configuration ({'; '.join(diff)})")
            continue
        result = read_json(folder / RESULT)
        if isinstance(result, dict) and result.get("status") in FINISHED:
            run.state = "finished"
        elif (folder / "last.npz").exists():
            run.state = "resume"
        else:
            run.state = "new"  # stopped before its first epoch ended: nothing to continue from
    if problems:
        raise UserError("refusing to touch runs that are not the planned ones (use another --out, or move them "
                        "away): " + " | ".join(problems))


# ----------------------------------------------------------------------------- one run
def _summarise(folder: Path, status: str, message: str, task: dict[str, Any], wall_s: float) -> dict[str, Any]:
    history = read_metrics(folder)
    acc = [r["test_acc"] for r in history]
    result: dict[str, Any] = {
        "status": status, "message": message, "config": task["name"], "seed": task["seed"],
        "epochs": len(history), "final_error": None, "best_error": None, "best_epoch": None,
        "params": task["params"], "macs": task["macs"],
        "train_time_s": sum(r.get("train_time_s", 0.0) for r in history),
        "eval_time_s": sum(r.get("eval_time_s", 0.0) for r in history),
        "wall_s": wall_s,
        "images_per_s": (sum(r["images_per_s"] for r in history) / len(history)) if history else None,
        "device": task["device"], "threads": task.get("threads"),
        "machine": f"{platform.node()}: {platform.machine()}, {_cores()} core(s) usable, {platform.system()}, "
                   f"Python {platform.python_version()}, {task['device']}"
                   + (f", {task['threads']} thread(s) per run" if task.get("threads") else ""),
    }
    if history and status == "done":
        best = max(range(len(acc)), key=lambda i: acc[i])
        result.update(final_error=100 * (1 - acc[-1]), best_error=100 * (1 - acc[best]),
                      best_epoch=int(history[best]["epoch"]))
    return result


def execute(task: dict[str, Any], log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or continue) the run ``task`` describes in its folder; write and return its ``result.json``.

    A loss that became NaN or infinite ends the run as "diverged"; any other error propagates.
    """
    from ..train import train  # noqa: PLC0415

    folder = Path(task["folder"])
    with lock_run_folder(folder):  # one writer per run folder: a second `experiment run` is refused here
        return _execute(task, folder, train, log)


def _execute(task: dict[str, Any], folder: Path, train: Callable[..., Any],
             log: Callable[[str], None] | None) -> dict[str, Any]:
    previous = read_json(folder / RESULT)
    previous = previous if isinstance(previous, dict) else {}
    resume = folder / "last.npz" if (folder / "last.npz").exists() else None
    if resume is None:  # stopped before its first epoch ended (check() found its config.json the planned one)
        (folder / "config.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    status, message = "done", ""
    with open(folder / "train.log", "a", encoding="utf-8") as log_file:
        def write(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            if log is not None:
                log(line)

        write(f"--- minise experiment: {task['name']} seed {task['seed']} "
              f"({'continuing from ' + str(resume) if resume else 'new run'}) at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            train(task["config"], out=folder, data_dir=task.get("data_dir"), device=task["device"],
                  resume=resume, log=write, progress=False)
        except NonFiniteLoss as exc:
            status, message = "diverged", str(exc)
            write(f"diverged: {exc}")
        except Interrupted as exc:
            how = "terminated (SIGTERM)" if exc.exit_code == 143 else "interrupted"
            raise Interrupted(f"{how} during {task['name']} seed {task['seed']}: run the same `minise "
                              "experiment run` command again (finished runs are skipped, this one continues "
                              f"from {folder / 'last.npz'} if an epoch had ended)", exc.exit_code) from None
    check_run_folder(folder)  # deleted during the run: write nothing more there
    earlier = previous.get("wall_s")
    wall = time.perf_counter() - t0 + (float(earlier) if isinstance(earlier, (int, float)) and earlier > 0 else 0.0)
    result = _summarise(folder, status, message, task, wall)
    write_atomic(folder / RESULT, json.dumps(result, indent=1) + "\n")
    return result


def task_of(run: Run, device: str, data_dir: str | None, threads: int | None = None) -> dict[str, Any]:
    return {"name": run.config.name, "seed": run.seed, "folder": str(run.folder), "config": run.train_config,
            "device": device, "data_dir": data_dir, "params": run.params, "macs": run.macs, "threads": threads}


# ----------------------------------------------------------------------------- progress
class Progress:
    """One line per finished run, then an overall bar with the estimated time left."""

    def __init__(self, runs: list[Run], print_fn: Callable[[str], None] = print) -> None:
        self.total = len(runs)
        self.total_cost = sum(r.cost for r in runs)
        self.done = 0
        self.done_cost = 0.0
        self.start = time.perf_counter()
        self.print = print_fn

    def finished(self, run: Run, result: dict[str, Any]) -> None:
        self.done += 1
        self.done_cost += run.cost
        status = result.get("status")
        if status == "done":
            what = (f"test error {result['final_error']:.2f}% (best {result['best_error']:.2f}% at epoch "
                    f"{result['best_epoch']})")
        elif status == "diverged":
            what = f"DIVERGED after {result.get('epochs', 0)} epoch(s)"
        else:
            what = f"FAILED: {result.get('message', '')}"
        width = len(str(self.total))
        self.print(f"[{self.done:>{width}}/{self.total}] {run.config.name} seed {run.seed}: {what}; "
                   f"{_duration(result.get('wall_s') or 0.0)}")
        self.print(self.bar())

    def bar(self, width: int = 30) -> str:
        frac = self.done_cost / self.total_cost if self.total_cost else 1.0
        filled = int(round(width * frac))
        elapsed = time.perf_counter() - self.start
        if self.done_cost > 0 and self.done < self.total:
            eta = f"about {_duration(elapsed / self.done_cost * (self.total_cost - self.done_cost))} left"
        elif self.done < self.total:
            eta = f"about {_duration(self.total_cost / CPU_MACS_PER_S)} left (estimate for a 2-core CPU)"
        else:
            eta = "all done"
        return (f"  [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} runs, "
                f"{_duration(elapsed)} elapsed, {eta}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# ----------------------------------------------------------------------------- local execution
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_env(threads: int) -> dict[str, str]:
    """Environment that holds every thread pool of a worker process (minise's, BLAS's, OpenMP's) to ``threads``."""
    n = str(threads)
    return {"MINISE_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
            "BLIS_NUM_THREADS": n, "VECLIB_MAXIMUM_THREADS": n, "NUMEXPR_NUM_THREADS": n}


def run_local(runs: list[Run], jobs: int, device: str, data_dir: str | None, progress: Progress) -> list[dict]:
    """Carry out ``runs``: in this process when ``jobs`` is 1, else in ``jobs`` worker processes at once,
    each with its share of the cores (CPU) or its own GPU (``CUDA_VISIBLE_DEVICES``)."""
    results = []
    if jobs == 1:
        for run in runs:
            result = execute(task_of(run, device, data_dir))
            progress.finished(run, result)
            results.append(result)
        return results

    cores = _cores()
    if device == "cpu" and jobs > cores:
        raise UserError(f"--jobs {jobs} on {cores} core(s) would oversubscribe them; use --jobs {cores} or fewer")
    threads = max(1, cores // jobs) if device == "cpu" else None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(jobs)]
    if device != "cpu" and len(gpus) < jobs:
        raise UserError(f"--jobs {jobs} on {device} needs {jobs} GPUs, CUDA_VISIBLE_DEVICES lists {len(gpus)}")
    pending = list(runs)
    running: dict[int, tuple[subprocess.Popen, Run, Any]] = {}  # slot -> (process, run, log file)
    fatal: str | None = None
    try:
        while pending or running:
            for slot in range(jobs):
                if slot in running or not pending or fatal is not None:
                    continue
                run = pending.pop(0)
                env = dict(os.environ, MINISE_PARENT_PID=str(os.getpid()))  # the worker dies with this process
                if threads is not None:
                    env.update(thread_env(threads))
                else:
                    env["CUDA_VISIBLE_DEVICES"] = gpus[slot]
                run.folder.mkdir(parents=True, exist_ok=True)
                log_file = open(run.folder / "worker.log", "ab")
                proc = subprocess.Popen([sys.executable, "-m", "minise.experiment.worker"], stdin=subprocess.PIPE,
                                        stdout=log_file, stderr=subprocess.STDOUT, env=env)
                proc.stdin.write(json.dumps(task_of(run, device, data_dir, threads)).encode())
                proc.stdin.close()
                running[slot] = (proc, run, log_file)
            if not running:
                break
            time.sleep(0.2)
            for slot, (proc, run, log_file) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log_file.close()
                del running[slot]
                result = read_json(run.folder / RESULT) if rc == 0 else None
                if rc == 2:  # a usage or data error: every other run would fail the same way
                    fatal = _last_line(run.folder / "worker.log").removeprefix("minise: ")
                    continue
                if result is None:
                    result = {"status": "failed", "config": run.config.name, "seed": run.seed, "wall_s": None,
                              "message": f"worker exited with code {rc}: {_last_line(run.folder / 'worker.log')} "
                                         f"(see {run.folder / 'worker.log'})"}
                    write_atomic(run.folder / RESULT, json.dumps(result, indent=1) + "\n")
                progress.finished(run, result)
                results.append(result)
    except BaseException:
        for proc, _, log_file in running.values():  # Ctrl-C: stop the workers; their last.npz stays
            proc.terminate()
            proc.wait()
            log_file.close()
        raise
    if fatal is not None:
        raise UserError(fatal)
    return results


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


# ----------------------------------------------------------------------------- Dask
def remote_execute(task: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """A run as a Dask task: train in a temporary folder of the worker (starting from ``files``, e.g. the
    ``last.npz`` of an interrupted run) and return ``{"result": ..., "files": {name: bytes}}``: every file
    of the run folder (config.json, metrics.csv, result.json, train.log, curves.png, last.npz, best.npz), so
    no shared file system is needed."""
    tmp = Path(tempfile.mkdtemp(prefix="minise-run-"))
    try:
        folder = tmp / "run"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        result = execute({**task, "folder": str(folder)})
        out = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
        return {"result": result, "files": out}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SCHEDULER_TIMEOUT_S = 20.0  # to connect to a Dask scheduler and to hear its first message
_MAX_HANDSHAKE_BYTES = 64 << 20  # a scheduler's first message (its handshake) is a few hundred bytes


def probe_scheduler(address: str, timeout: float | None = None) -> None:
    """A :class:`UserError` unless a Dask scheduler answers at the ``tcp://`` ``address`` within
    ``timeout`` seconds (default ``SCHEDULER_TIMEOUT_S``).

    A scheduler sends its handshake as soon as a connection opens: 8 bytes of message length (little
    endian), then the message. Distributed's own client waits for it without a time limit and takes
    any 8 bytes as that length (an HTTP server's "HTTP/1.1" asks for 3.07 EiB), so the probe reads
    them first, bounded in time and size. Other schemes (tls://, ws://, inproc://) are left to Dask.
    """
    timeout = SCHEDULER_TIMEOUT_S if timeout is None else timeout
    scheme, _, location = address.rpartition("://")
    host, _, port = location.rpartition(":")
    if scheme not in ("", "tcp") or not port.isdigit() or not host:
        return
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            head = b""
            while len(head) < 8:
                chunk = conn.recv(8 - len(head))
                if not chunk:
                    raise UserError(f"{address!r} closed the connection without a word: not a Dask scheduler")
                head += chunk
    except TimeoutError:
        raise UserError(f"{address!r} accepts connections but sent no Dask handshake within {timeout:g} s: is "
                        "it a Dask scheduler (and not, say, a web server)?") from None
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address!r}: {exc.strerror or exc}") from None
    (length,) = struct.unpack("<Q", head)
    if not 0 < length <= _MAX_HANDSHAKE_BYTES:
        raise UserError(f"{address!r} answers, but not as a Dask scheduler (its first bytes are "
                        f"{head.decode('latin-1')!r}, not the length of a Dask message)")


def run_dask(runs: list[Run], address: str, device: str, data_dir: str | None, progress: Progress) -> list[dict]:
    """Send ``runs`` as tasks to the Dask scheduler at ``address``; write each run's files as they come back."""
    try:
        from distributed import Client, as_completed  # noqa: PLC0415
    except ImportError:
        raise UserError("--scheduler needs Dask's distributed package: pip install 'minise[cluster]'") from None
    probe_scheduler(address)
    try:
        client = Client(address, timeout=f"{SCHEDULER_TIMEOUT_S:g}s")
    except (OSError, TimeoutError, ValueError, MemoryError) as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address!r}: {one_line(exc, 200)}") from None
    results = []
    try:
        futures = {}
        for run in runs:
            files = {}
            for name in ("last.npz", "best.npz", "metrics.csv", "train.log", RESULT):
                if run.state == "resume" and (run.folder / name).is_file():
                    files[name] = (run.folder / name).read_bytes()
            future = client.submit(remote_execute, task_of(run, device, data_dir), files, pure=False,
                                   key=f"minise-{run.config.name}-seed{run.seed}-{os.urandom(4).hex()}")
            futures[future] = run
        for future in as_completed(list(futures)):
            run = futures[future]
            try:
                answer = future.result()
            except (MiniseError, OSError) as exc:
                raise UserError(f"{run.label} on the cluster: {exc}") from None
            except Exception as exc:  # a failed task is recorded and the others go on
                answer = {"result": {"status": "failed", "config": run.config.name, "seed": run.seed,
                                     "wall_s": None, "message": f"{type(exc).__name__}: {exc}"}, "files": {}}
            for name, data in answer["files"].items():
                if name != RESULT:
                    write_atomic(run.folder / name, data)
            result = answer["result"]
            write_atomic(run.folder / RESULT, json.dumps(result, indent=1) + "\n")  # last: marks it finished
            progress.finished(run, result)
            results.append(result)
    finally:
        client.close()
    return results
