"""``minise experiment report DIR``: statistics over seeds, paired differences, results.md/.csv and figures.

Per configuration: the test error (%) at the final epoch (the table's number) and at the best
epoch (picked on the test set itself, so optimistic: for reference only), their mean, standard
deviation (n − 1) and 95% confidence interval of the mean,

    mean ± t_{0.975, n−1} · sd / √n          (Student's t, scipy.stats.t)

and against its baseline the paired difference over the seeds both have, d_k = e_k − b_k:

    mean(d) ± t_{0.975, n−1} · sd(d) / √n,   p = the two-sided paired t-test (scipy.stats.ttest_rel).

A run that diverged, failed or is missing is listed as such and counted in "runs"; the mean is
over the finished runs only and the table says how many those are.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError, one_line
from .runner import RESULT, read_json, read_metrics, write_atomic

__all__ = ["summary_stats", "paired_stats", "collect", "write_report", "ConfigResult", "EXPERIMENT_FILE"]

EXPERIMENT_FILE = "experiment.json"


# ----------------------------------------------------------------------------- statistics
def summary_stats(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, sd (n − 1) and the ``confidence`` interval of the mean from Student's t (nan where n is too small)."""
    from scipy import stats  # noqa: PLC0415

    n = len(values)
    nan = math.nan
    if n == 0:
        return {"n": 0, "mean": nan, "sd": nan, "lo": nan, "hi": nan}
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": nan, "lo": nan, "hi": nan}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half}


def paired_stats(ours: dict[int, float], base: dict[int, float], confidence: float = 0.95) -> dict[str, Any]:
    """Paired difference ours − base over the seeds both have: mean, sd, CI, two-sided p (paired t-test)."""
    from scipy import stats  # noqa: PLC0415

    seeds = sorted(set(ours) & set(base))
    d = [ours[s] - base[s] for s in seeds]
    out: dict[str, Any] = dict(summary_stats(d, confidence), seeds=seeds, p=math.nan)
    if len(seeds) >= 2 and out["sd"] > 0:
        out["p"] = float(stats.ttest_rel([ours[s] for s in seeds], [base[s] for s in seeds]).pvalue)
    return out


# ----------------------------------------------------------------------------- collecting
@dataclass
class RunResult:
    seed: int
    status: str  # done | diverged | failed | running/interrupted | missing
    final_error: float | None = None
    best_error: float | None = None
    best_epoch: int | None = None
    epochs: int = 0
    images_per_s: float | None = None
    wall_s: float | None = None
    curve: list[float] = field(default_factory=list)  # test error % per epoch
    params: int | None = None
    macs: int | None = None
    message: str = ""
    machine: str = ""


@dataclass
class ConfigResult:
    name: str
    label: str
    baseline: str | None
    paper: float | None
    runs: list[RunResult]
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    diff: dict[str, Any] | None = None

    @property
    def done(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "done"]

    def field_of_done(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.done if getattr(r, name) is not None]
        return values[0] if values else next((getattr(r, name) for r in self.runs if getattr(r, name)), None)


def _paper_value(paper: dict[str, float], dataset: str) -> float | None:
    for key in (dataset, "imagenet", "any"):
        if key in paper:
            return float(paper[key])
    return None


STATUSES = ("done", "diverged", "failed")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _run_result(folder: Path, seed: int) -> RunResult:
    """The run in ``folder`` as the report sees it; a run whose files are damaged is "damaged", with the reason."""
    try:
        return _read_run(folder, seed)
    except UserError as exc:
        return RunResult(seed, "damaged", message=one_line(exc, 200))


def _read_run(folder: Path, seed: int) -> RunResult:
    result = read_json(folder / RESULT)
    history = read_metrics(folder)
    if history and "test_acc" not in history[0]:
        raise UserError(f"{folder / 'metrics.csv'} has no test_acc column")
    curve = [100 * (1 - r["test_acc"]) for r in history]
    if result is None:
        status = "interrupted" if (folder / "last.npz").exists() else "missing"
        return RunResult(seed, status, epochs=len(history), curve=curve)
    where = folder / RESULT
    if not isinstance(result, dict):
        raise UserError(f"{where} holds a {type(result).__name__}, not an object")
    status = result.get("status", "failed")
    if status not in STATUSES:
        raise UserError(f"{where}: status {one_line(repr(status), 40)} is none of {', '.join(STATUSES)}")
    checks = {"final_error": _number, "best_error": _number, "images_per_s": _number, "wall_s": _number,
              "best_epoch": lambda v: _number(v) and int(v) == v, "epochs": lambda v: _number(v) and int(v) == v,
              "params": lambda v: _number(v) and int(v) == v, "macs": lambda v: _number(v) and int(v) == v}
    for key, ok in checks.items():
        value = result.get(key)
        if value is not None and not ok(value):
            raise UserError(f"{where}: {key} is {one_line(repr(value), 40)}, not a number")
    final = result.get("final_error")
    if status == "done" and final is None:
        raise UserError(f"{where}: a finished run with no final_error")
    if status == "done" and not math.isfinite(final):
        status = "diverged"  # its last test accuracy was not a number
    return RunResult(seed, status, final if status == "done" else None,
                     result.get("best_error") if status == "done" else None, result.get("best_epoch"),
                     int(result.get("epochs") or len(history)), result.get("images_per_s"), result.get("wall_s"),
                     curve, result.get("params"), result.get("macs"), one_line(result.get("message") or "", 300),
                     one_line(result.get("machine") or "", 300))


def _check_record(path: Path, record: Any) -> None:
    """``experiment.json`` as ``experiment run`` writes it, or a :class:`UserError` naming what is not."""
    def bad(what: str) -> UserError:
        return UserError(f"{path} is damaged ({what}); `minise experiment run` rewrites it")

    if not isinstance(record, dict) or not isinstance(record.get("suites"), dict):
        raise bad("its suites are not an object of suite name: suite")
    for name, suite in record["suites"].items():
        if not isinstance(suite, dict) or not isinstance(suite.get("configs"), list):
            raise bad(f"suite {one_line(repr(name), 40)} has no list of configs")
        seeds = suite.get("seeds")
        if not isinstance(seeds, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                   for v in seeds):
            raise bad(f"suite {one_line(repr(name), 40)}: its seeds are not integers >= 0")
        for c in suite["configs"]:
            cname = c.get("name") if isinstance(c, dict) else None
            if (not isinstance(cname, str) or not cname or cname in (".", "..") or "/" in cname or "\\" in cname
                    or not isinstance(c.get("label", ""), str) or not isinstance(c.get("paper", {}), dict)
                    or not all(_number(v) for v in c.get("paper", {}).values())
                    or not isinstance(c.get("baseline") or "", str)):
                raise bad(f"suite {one_line(repr(name), 40)} has a configuration {one_line(repr(c), 60)} that no "
                          "run writes")
        for key in ("title", "protocol", "protocol_note", "dataset", "paper_note"):
            if not isinstance(suite.get(key, ""), str):
                raise bad(f"suite {one_line(repr(name), 40)}: {key} is not text")


def collect(root: Path) -> dict[str, Any]:
    """Every suite recorded in ``root/experiment.json`` with the results of its runs and their statistics."""
    root = Path(root)
    record = read_json(root / EXPERIMENT_FILE)
    if record is None:
        raise UserError(f"{root} holds no {EXPERIMENT_FILE}: give the folder that `minise experiment run --out` "
                        "wrote")
    _check_record(root / EXPERIMENT_FILE, record)
    suites = []
    for name, suite in record["suites"].items():
        configs: list[ConfigResult] = []
        for c in suite["configs"]:
            runs = [_run_result(root / c["name"] / f"seed{s}", s) for s in suite["seeds"]]
            cr = ConfigResult(c["name"], c.get("label", c["name"]), c.get("baseline"),
                              _paper_value(c.get("paper", {}), suite.get("dataset", "cifar10")), runs)
            cr.final = summary_stats([r.final_error for r in cr.done])
            cr.best = summary_stats([r.best_error for r in cr.done if r.best_error is not None])
            configs.append(cr)
        by_name = {c.name: c for c in configs}
        for c in configs:
            base = by_name.get(c.baseline) if c.baseline else None
            if base is not None:
                c.diff = paired_stats({r.seed: r.final_error for r in c.done},
                                      {r.seed: r.final_error for r in base.done})
        suites.append({"name": name, **{k: v for k, v in suite.items() if k != "configs"}, "configs": configs})
    return {"root": str(root), "suites": suites}


# ----------------------------------------------------------------------------- writing
def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _runs_cell(c: ConfigResult) -> str:
    done = len(c.done)
    others: dict[str, int] = {}
    for r in c.runs:
        if r.status != "done":
            others[r.status] = others.get(r.status, 0) + 1
    extra = ", ".join(f"{n} {status}" for status, n in others.items())
    return f"{done}/{len(c.runs)}" + (f" ({extra})" if extra else "")


def _row(c: ConfigResult) -> str:
    params, macs = c.field_of_done("params"), c.field_of_done("macs")
    speeds = [r.images_per_s for r in c.done if r.images_per_s]
    fin, best, d = c.final, c.best, c.diff
    if d:
        delta = f"{_f(d['mean'])} (n={d['n']}) | [{_f(d['lo'])}, {_f(d['hi'])}] | {_f(d['p'], 3)}"
    else:
        delta = "— | — | —"
    return (f"| {c.label} (`{c.name}`) | {_runs_cell(c)} | {_f(fin['mean'])} ± {_f(fin['sd'])} "
            f"| [{_f(fin['lo'])}, {_f(fin['hi'])}] | {_f(best['mean'])} ± {_f(best['sd'])} "
            f"| {f'{params:,}' if params else '—'} | {_f(macs / 1e6 if macs else None, 1)} "
            f"| {_f(sum(speeds) / len(speeds) if speeds else None, 0)} "
            f"| {('`' + c.baseline + '`') if c.baseline else '(baseline)'} | {delta} | {_f(c.paper)} |")


def _markdown(data: dict[str, Any], figures: dict[str, list[str]]) -> str:
    lines = [f"# Experiment results: {data['root']}", ""]
    lines += ["Written by `minise experiment report`. Test error in % (100 − accuracy). **The tables use the error "
              "at the final epoch**; the best-epoch error is chosen on the test set itself and therefore optimistic "
              "(shown for reference). ± is one standard deviation over seeds; CI is the 95% confidence interval of "
              "the mean (Student's t). Δ is the paired difference against the configuration's baseline over the "
              "seeds both finished (negative: fewer errors), with its 95% CI and the two-sided paired t-test's p.",
              ""]
    for suite in data["suites"]:
        configs: list[ConfigResult] = suite["configs"]
        lines += [f"## {suite['name']}: {suite.get('title', '')}", ""]
        lines.append(f"Protocol: {suite.get('protocol_note', suite.get('protocol', '?'))}.")
        if suite.get("overrides"):
            lines.append(f"Overrides: {json.dumps(suite['overrides'], sort_keys=True)}.")
        lines.append(f"Seeds: {', '.join(str(s) for s in suite['seeds'])}. Data set: {suite.get('dataset', '?')}.")
        if suite.get("paper_note"):
            lines.append(f"Paper column: {suite['paper_note']}.")
        lines.append("")
        lines.append("| configuration | runs | error % (final) | 95% CI | best-epoch error % | params | M mult-adds "
                     "| img/s | baseline | Δ (pp) | 95% CI of Δ | p | paper |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        lines += [_row(c) for c in configs]
        lines.append("")
        notes = []
        for c in configs:
            for r in c.runs:
                if r.status == "diverged":
                    notes.append(f"- `{c.name}` seed {r.seed} **diverged** after {r.epochs} epoch(s); it is not in "
                                 "the mean.")
                elif r.status == "failed":
                    notes.append(f"- `{c.name}` seed {r.seed} **failed**: {r.message}")
                elif r.status == "damaged":
                    notes.append(f"- `{c.name}` seed {r.seed} is **damaged** ({r.message}): not in the mean.")
                elif r.status in ("missing", "interrupted"):
                    notes.append(f"- `{c.name}` seed {r.seed} is **{r.status}**"
                                 + (f" (after {r.epochs} epoch(s))" if r.epochs else "") + ": not in the mean.")
            d = c.diff
            if d and d["n"] >= 2 and not math.isnan(d["lo"]):
                inside = d["lo"] <= 0 <= d["hi"]
                notes.append(f"- `{c.name}` vs `{c.baseline}`: Δ = {_f(d['mean'])} pp, 95% CI [{_f(d['lo'])}, "
                             f"{_f(d['hi'])}] over {d['n']} seeds: "
                             + ("**0 is inside the interval: not distinguishable from seed-to-seed noise**."
                                if inside else "the interval excludes 0."))
            elif d:
                notes.append(f"- `{c.name}` vs `{c.baseline}`: {d['n']} paired seed(s), too few for an interval.")
        if notes:
            lines += notes + [""]
        for fig in figures.get(suite["name"], []):
            lines.append(f"![{fig}]({fig})")
        lines.append("")
    machines = sorted({r.machine for s in data["suites"] for c in s["configs"] for r in c.runs if r.machine})
    wall = sum(r.wall_s or 0.0 for s in data["suites"] for c in s["configs"] for r in c.runs)
    lines.append(f"Machine(s): {'; '.join(machines) or 'not recorded'}. Sum of the runs' wall times: "
                 f"{wall / 60:.1f} minutes (runs shared by several suites counted once per suite).")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["suite", "config", "label", "runs", "done", "diverged", "failed", "missing", "damaged",
              "final_error_mean", "final_error_sd", "final_error_ci_low", "final_error_ci_high",
              "best_error_mean", "best_error_sd", "params", "macs", "images_per_s", "baseline", "paired_n",
              "diff_mean", "diff_sd", "diff_ci_low", "diff_ci_high", "diff_p", "paper_error"]
RUN_FIELDS = ["suite", "config", "seed", "status", "final_error", "best_error", "best_epoch", "epochs",
              "images_per_s", "wall_s"]


def _csv(data: dict[str, Any]) -> tuple[str, str]:
    out, runs_out = io.StringIO(), io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    rw = csv.DictWriter(runs_out, RUN_FIELDS, lineterminator="\n")
    w.writeheader()
    rw.writeheader()
    for suite in data["suites"]:
        for c in suite["configs"]:
            speeds = [r.images_per_s for r in c.done if r.images_per_s]
            count = {s: sum(r.status == s for r in c.runs) for s in ("diverged", "failed", "damaged")}
            d = c.diff or {}
            w.writerow({
                "suite": suite["name"], "config": c.name, "label": c.label, "runs": len(c.runs), "done": len(c.done),
                "diverged": count["diverged"], "failed": count["failed"],
                "missing": len(c.runs) - len(c.done) - count["diverged"] - count["failed"] - count["damaged"],
                "damaged": count["damaged"],
                "final_error_mean": c.final["mean"], "final_error_sd": c.final["sd"],
                "final_error_ci_low": c.final["lo"], "final_error_ci_high": c.final["hi"],
                "best_error_mean": c.best["mean"], "best_error_sd": c.best["sd"],
                "params": c.field_of_done("params"), "macs": c.field_of_done("macs"),
                "images_per_s": sum(speeds) / len(speeds) if speeds else None, "baseline": c.baseline or "",
                "paired_n": d.get("n", ""), "diff_mean": d.get("mean", ""), "diff_sd": d.get("sd", ""),
                "diff_ci_low": d.get("lo", ""), "diff_ci_high": d.get("hi", ""), "diff_p": d.get("p", ""),
                "paper_error": c.paper if c.paper is not None else "",
            })
            for r in c.runs:
                rw.writerow({"suite": suite["name"], "config": c.name, "seed": r.seed, "status": r.status,
                             "final_error": r.final_error, "best_error": r.best_error, "best_epoch": r.best_epoch,
                             "epochs": r.epochs, "images_per_s": r.images_per_s, "wall_s": r.wall_s})
    return out.getvalue(), runs_out.getvalue()


def _figures(data: dict[str, Any], root: Path) -> dict[str, list[str]]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written: dict[str, list[str]] = {}
    for suite in data["suites"]:
        configs: list[ConfigResult] = suite["configs"]
        names = []
        # 1. error bars per configuration (mean, 95% CI, each seed as a dot) beside the paper's values
        has_paper = any(c.paper is not None for c in configs)
        fig, axes = plt.subplots(1, 2 if has_paper else 1, figsize=(11 if has_paper else 6.5, 0.5 * len(configs) + 2),
                                 squeeze=False)
        ax = axes[0][0]
        ys = list(range(len(configs)))[::-1]
        for y, c in zip(ys, configs):
            seeds = [r.final_error for r in c.done]
            ax.scatter(seeds, [y] * len(seeds), s=14, color="0.5", zorder=2)
            if c.final["n"]:
                lo, hi = c.final["lo"], c.final["hi"]
                err = None if math.isnan(lo) else [[c.final["mean"] - lo], [hi - c.final["mean"]]]
                ax.errorbar([c.final["mean"]], [y], xerr=err, fmt="o", color="C0", capsize=4, zorder=3)
            bad = [r for r in c.runs if r.status != "done"]
            if bad:
                ax.annotate(", ".join(f"seed {r.seed} {r.status}" for r in bad), (1.0, y),
                            xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7, color="C3")
        ax.set_yticks(ys, [c.name for c in configs], fontsize=8)
        ax.set_xlabel("test error % (final epoch): mean, 95% CI, seeds")
        ax.set_title(f"{suite['name']} ({suite.get('protocol', '')} protocol)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if has_paper:
            pax = axes[0][1]
            for y, c in zip(ys, configs):
                if c.paper is not None:
                    pax.plot([c.paper], [y], "s", color="C1")
            pax.set_yticks(ys, [c.name for c in configs], fontsize=8)
            pax.set_xlabel("the paper's error %")
            pax.set_title("paper (see the table's note on its source)", fontsize=10)
            pax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        name = f"{suite['name']}_errors.png"
        _save(fig, root / name)
        plt.close(fig)
        names.append(name)
        # 2. test-error curves: every seed thin, the mean thick, the band from the lowest to the highest seed
        cols = min(3, len(configs))
        rows = math.ceil(len(configs) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
        for k, c in enumerate(configs):
            ax = axes[k // cols][k % cols]
            curves = [r.curve for r in c.runs if r.curve]
            for r in c.runs:
                if r.curve:
                    ax.plot(range(1, len(r.curve) + 1), r.curve, lw=0.8, alpha=0.6, marker=".", ms=3,
                            color="C3" if r.status != "done" else "0.5", label=f"seed {r.seed} ({r.status})")
            full = [cv for cv, r in zip(curves, [r for r in c.runs if r.curve]) if r.status == "done"]
            if full:
                length = min(len(cv) for cv in full)
                epochs = range(1, length + 1)
                cols_ = list(zip(*[cv[:length] for cv in full]))
                ax.fill_between(epochs, [min(v) for v in cols_], [max(v) for v in cols_], alpha=0.2, color="C0")
                ax.plot(epochs, [sum(v) / len(v) for v in cols_], lw=2, color="C0", marker="o", ms=4, label="mean")
            ax.set_title(c.name, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # a configuration with no curve at all has no legend
                ax.legend(fontsize=6)
        for k in range(len(configs), rows * cols):
            axes[k // cols][k % cols].axis("off")
        axes[0][0].set_ylabel("test error %")
        fig.tight_layout()
        name = f"{suite['name']}_curves.png"
        _save(fig, root / name)
        plt.close(fig)
        names.append(name)
        written[suite["name"]] = names
    return written


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


def write_report(root: Path, figures: bool = True) -> dict[str, Any]:
    """Write results.md, results.csv, runs.csv (and the figures) into ``root``; returns the collected data."""
    root = Path(root)
    data = collect(root)
    figs = _figures(data, root) if figures else {}
    write_atomic(root / "results.md", _markdown(data, figs))
    table, runs = _csv(data)
    write_atomic(root / "results.csv", table)
    write_atomic(root / "runs.csv", runs)
    return data
