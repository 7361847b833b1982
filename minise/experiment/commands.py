"""One function per ``minise experiment`` sub-command: run, list, report."""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import runner
from .report import EXPERIMENT_FILE, write_report
from .suites import PROTOCOL_NOTES, PROTOCOLS, SUITES, Config, Suite, load_suite

DEFAULT_SEEDS = (0, 1, 2)


def dispatch(args: argparse.Namespace) -> int:
    command = getattr(args, "experiment_command", None)
    if command == "run":
        return run_command(args)
    if command == "list":
        return list_command(args)
    if command == "report":
        return report_command(args)
    raise UserError(f"unknown experiment command {command!r}: expected run, list or report")


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must name distinct integers >= 0, got {text!r}")
    return seeds


def select(suite: Suite, patterns: str | None) -> list[Config]:
    """The configurations named by ``patterns`` (comma-separated names or globs) and their baselines."""
    if not patterns:
        return list(suite.configs)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = {c.name for c in suite.configs if any(fnmatch.fnmatchcase(c.name, p) for p in wanted)}
    unmatched = [p for p in wanted if not any(fnmatch.fnmatchcase(c.name, p) for c in suite.configs)]
    if unmatched:
        raise UserError(f"--configs {', '.join(unmatched)}: no such configuration in suite {suite.name!r} "
                        f"({', '.join(c.name for c in suite.configs)})")
    chosen |= {suite.config(n).baseline for n in chosen if suite.config(n).baseline}  # type: ignore[misc]
    return [c for c in suite.configs if c.name in chosen]


def _record(out: Path, suite: Suite, configs: list[Config], seeds: tuple[int, ...], protocol: str,
            dataset: str) -> None:
    """Add this suite (its configurations, seeds, protocol) to ``out/experiment.json`` for the report."""
    path = out / EXPERIMENT_FILE
    record: dict[str, Any] = runner.read_json(path) or {"suites": {}}
    old = record["suites"].get(suite.name)
    if old is not None and (old.get("protocol"), old.get("overrides", {})) != (protocol, suite.overrides):
        raise UserError(f"{out} already holds suite {suite.name!r} on protocol {old.get('protocol')!r} with "
                        f"overrides {old.get('overrides', {})}; use another --out for protocol {protocol!r} "
                        f"with overrides {suite.overrides}")
    names = {c.name for c in configs} | {c["name"] for c in (old or {}).get("configs", [])}
    record["suites"][suite.name] = {
        "title": suite.title, "paper_note": suite.paper_note, "protocol": protocol,
        "protocol_note": PROTOCOL_NOTES.get(protocol, protocol), "overrides": suite.overrides, "dataset": dataset,
        "seeds": sorted(set(seeds) | set((old or {}).get("seeds", []))),
        "configs": [{"name": c.name, "label": c.label, "baseline": c.baseline if c.baseline in names else None,
                     "paper": c.paper, "options": c.options} for c in suite.configs if c.name in names],
    }
    out.mkdir(parents=True, exist_ok=True)
    runner.write_atomic(path, json.dumps(record, indent=1) + "\n")


def run_command(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    protocol = args.protocol or suite.protocol or "budget"
    seeds = parse_seeds(args.seeds) or suite.seeds or DEFAULT_SEEDS
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.scheduler and args.jobs != 1:
        raise UserError("--jobs is for this machine; with --scheduler the Dask cluster's workers decide")
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {args.device!r}")
    configs = select(suite, getattr(args, "configs", None))
    out = Path(args.out)
    runs = runner.plan(suite, configs, seeds, protocol, out)
    runner.check(runs)  # before anything is written
    _record(out, suite, configs, seeds, protocol, runs[0].train_config["dataset"])
    todo = [r for r in runs if r.state != "finished"]
    resumed = sum(r.state == "resume" for r in runs)
    cost = sum(r.cost for r in todo)
    print(f"suite {suite.name}: {len(configs)} configuration(s) x {len(seeds)} seed(s) = {len(runs)} run(s) on the "
          f"{protocol} protocol in {out}; {len(runs) - len(todo)} already finished (skipped), {resumed} to continue "
          f"from last.npz, {len(todo) - resumed} new; {cost / 1e12:.1f} T multiply-adds "
          f"(about {runner._duration(cost / runner.CPU_MACS_PER_S)} on a 2-core CPU)", flush=True)
    progress = runner.Progress(todo, print_fn=lambda line: print(line, flush=True))
    if args.scheduler:
        results = runner.run_dask(todo, args.scheduler, args.device, args.data_dir, progress)
    else:
        results = runner.run_local(todo, args.jobs, args.device, args.data_dir, progress)
    failed = [r for r in results if r.get("status") == "failed"]
    diverged = [r for r in results if r.get("status") == "diverged"]
    print(f"finished: {len(results) - len(failed) - len(diverged)} done, {len(diverged)} diverged, {len(failed)} "
          f"failed (run the same command again to retry failed runs); tables: minise experiment report {out}",
          flush=True)
    return 1 if failed or (results and len(diverged) == len(results)) else 0  # all diverged: as `train` does


def list_command(args: argparse.Namespace) -> int:
    protocol = args.protocol
    seeds = parse_seeds(args.seeds) or DEFAULT_SEEDS
    fields = ", ".join(f"{k}={v}" for k, v in PROTOCOLS[protocol].items())
    print(f"protocol {PROTOCOL_NOTES[protocol]}\n  ({fields})")
    print(f"cost: multiply-adds of all runs x {len(seeds)} seed(s); time at {runner.CPU_MACS_PER_S / 1e9:.0f} G "
          "multiply-adds/s (minise on an idle 2-core CPU: ResNet-20 at ~200 training images/s); a GPU is far faster\n")
    for suite in SUITES.values():
        runs = runner.plan(suite, suite.configs, seeds, protocol, Path("."))
        cost = sum(r.cost for r in runs)
        print(f"{suite.name}: {suite.title}")
        print(f"  {len(suite.configs)} configurations x {len(seeds)} seeds = {len(runs)} runs, "
              f"{cost / 1e12:.1f} T multiply-adds, about {runner._duration(cost / runner.CPU_MACS_PER_S)}")
        for c in suite.configs:
            r = next(r for r in runs if r.config is c)
            base = f"vs {c.baseline}" if c.baseline else "baseline"
            print(f"    {c.name:<28} {r.params:>10,} params {r.macs / 1e6:>8.1f} M mult-adds  "
                  f"{runner._duration(r.cost / runner.CPU_MACS_PER_S):>8} per run  ({base})")
        print()
    print("a TOML file of your own is a suite too: see `minise.experiment.suites` or docs/results.md")
    return 0


def report_command(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: give the folder that `minise experiment run --out` wrote")
    data = write_report(root)
    for suite in data["suites"]:
        print(f"{suite['name']}:")
        for c in suite["configs"]:
            fin = c.final
            mean = "—" if fin["n"] == 0 else f"{fin['mean']:.2f}%"
            print(f"  {c.name:<28} error {mean:>7} over {fin['n']}/{len(c.runs)} run(s)")
            for r in c.runs:
                if r.status == "damaged":
                    print(f"    seed {r.seed} is damaged, not in the mean: {r.message}")
    print(f"wrote {root / 'results.md'}, {root / 'results.csv'}, {root / 'runs.csv'} and the figures")
    return 0
