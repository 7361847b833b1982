"""The experiments: protocols (how long each run trains) and suites (which networks, against which baseline).

A suite is a list of configurations, each an ordinary ``minise train`` configuration (model,
reduction, model options), compared with the suite's baseline. The built-in suites are named
after the tables of the journal version of the paper; a user's own suite is a small TOML file::

    name = "my-gates"                 # optional (default: the file's name)
    title = "SE gates on ResNet-32"   # optional
    baseline = "se_resnet32"          # the configuration the others are compared with
    protocol = "budget"               # optional: budget | paper (the command line's --protocol wins)
    seeds = [0, 1, 2]                 # optional (the command line's --seeds wins)

    [overrides]                       # optional: protocol fields to change (any `minise train` option)
    epochs = 5
    limit_train = 20000

    [[config]]
    name = "se_resnet32"
    model = "se_resnet32"

    [[config]]
    name = "se_resnet32-tanh"
    model = "se_resnet32"
    model_options = { se_options = { gate = "tanh" } }
    paper = 23.00                     # optional: the paper's error (%) to show beside ours
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DEFAULTS
from ..errors import UserError

__all__ = ["PROTOCOLS", "PROTOCOL_NOTES", "Config", "Suite", "SUITES", "load_suite", "suite_names"]

# ----------------------------------------------------------------------------- protocols
# budget: sized so that a 2-core CPU runs one ResNet-20 in about 2.5 minutes (~200 images/s training,
# ~600 images/s evaluation): 3 epochs over the first 10,000 CIFAR training images (237 SGD steps of
# batch 128), cosine learning rate from 0.1, evaluated after every epoch on the first 5,000 test
# images. It ranks configurations cheaply; its errors are far above the paper's (see docs/results.md).
# paper: He et al.'s CIFAR schedule, the he2016 preset (64k iterations of batch 128, lr 0.1 / 10 at
# 32k and 48k, its warm-up), on the whole of CIFAR.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "budget": {
        "epochs": 3, "limit_train": 10_000, "limit_test": 5_000, "batch_size": 128, "lr": 0.1,
        "schedule": "cosine", "momentum": 0.9, "weight_decay": 1e-4, "warmup_epochs": 0.0,
    },
    "paper": {"preset": "he2016"},
}
PROTOCOL_NOTES: dict[str, str] = {
    "budget": ("budget: 3 epochs over the first 10,000 CIFAR training images (batch 128, 237 steps, cosine lr from "
               "0.1, momentum 0.9, weight decay 1e-4), test error on the first 5,000 test images; a CPU-sized "
               "ranking protocol whose errors are far above the paper's full-schedule ones"),
    "paper": ("paper: He et al.'s CIFAR schedule (preset he2016: 64k iterations of batch 128, lr 0.1 with its "
              "warm-up, / 10 at 32k and 48k, momentum 0.9, weight decay 1e-4) on all of CIFAR"),
}


@dataclass(frozen=True)
class Config:
    """One configuration of a suite: a name (its folder), the training options, its baseline."""

    name: str
    label: str
    options: dict[str, Any]  # minise train options: model, reduction, model_options, ...
    baseline: str | None = None  # the configuration it is compared with (None: it is the baseline)
    paper: dict[str, float] = field(default_factory=dict)  # data set (or "imagenet") -> the paper's error %


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    configs: tuple[Config, ...]
    paper_note: str = ""  # where the paper's numbers come from
    protocol: str | None = None
    seeds: tuple[int, ...] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, name: str) -> Config:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def baseline(self) -> str | None:
        return next((c.name for c in self.configs if c.baseline is None), None)


def _se(model: str, suffix: str = "", label: str = "", baseline: str | None = None, reduction: int | None = None,
        paper: dict[str, float] | None = None, **model_options: Any) -> Config:
    options: dict[str, Any] = {"model": model}
    if reduction is not None:
        options["reduction"] = reduction
    if model_options:
        options["model_options"] = model_options
    return Config(model + suffix, label or model, options, baseline, dict(paper or {}))


_IMAGENET = ("the paper's values are ImageNet top-1 errors of SE-ResNet-50 (journal version, Sec. 6): another data "
             "set and network, shown for the ranking only, not as a target for these numbers")


def _se_vs_plain() -> Suite:
    rows: list[Config] = []
    he2016a = {"resnet20": 8.75, "resnet32": 7.51, "resnet56": 6.97, "resnet110": 6.43}
    for depth in (20, 32, 56, 110):
        plain = f"resnet{depth}"
        rows.append(_se(plain, label=f"ResNet-{depth}", paper={"cifar10": he2016a[plain]}))
        rows.append(_se(f"se_{plain}", label=f"SE-ResNet-{depth}", baseline=plain))
    table4 = {110: ((6.37, 26.88), (5.21, 23.85)), 164: ((5.46, 24.33), (4.39, 21.31))}
    for depth, ((p10, p100), (s10, s100)) in table4.items():
        plain = f"preact_resnet{depth}"
        rows.append(_se(plain, label=f"pre-act ResNet-{depth}", paper={"cifar10": p10, "cifar100": p100}))
        rows.append(_se(f"se_{plain}", label=f"SE pre-act ResNet-{depth}", baseline=plain,
                        paper={"cifar10": s10, "cifar100": s100}))
    # each SE network is compared with its own plain twin (the suite's first baseline is ResNet-20)
    return Suite("se-vs-plain", "SE against the plain network (the paper's Table 4 for CIFAR)", tuple(rows),
                 "the paper's values: ResNet-20/32/56/110 from He et al. (2016a, option A); the pre-activation "
                 "ResNet-110/164 rows and their SE versions from the journal's Table 4 (the pre-activation "
                 "networks are the paper's CIFAR baselines); all for the full he2016 schedule")


def _ablation(name: str, title: str, variants: list[tuple[str, str, dict[str, Any], float]],
              baseline_paper: float, plain: bool = False) -> Suite:
    base = "se_resnet20"
    rows: list[Config] = []
    if plain:
        rows.append(_se("resnet20", label="ResNet-20 (no SE)", paper={"imagenet": 23.30}))
        base_row = _se(base, label="SE-ResNet-20 (SE on all stages)", baseline="resnet20",
                       paper={"imagenet": baseline_paper})
    else:
        base_row = _se(base, label="SE-ResNet-20 (r = 16, avg, sigmoid, standard)", paper={"imagenet": baseline_paper})
    rows.append(base_row)
    compare_with = "resnet20" if plain else base
    for suffix, label, kwargs, paper in variants:
        rows.append(_se(base, suffix, label=label, baseline=compare_with, paper={"imagenet": paper}, **kwargs))
    return Suite(name, title, tuple(rows), _IMAGENET)


def _builtin() -> dict[str, Suite]:
    suites = [
        _se_vs_plain(),
        _ablation("reduction", "reduction ratio r (paper: Table 10 / Sec. 6.1)", [
            (f"-r{r}", f"SE-ResNet-20, r = {r}", {"reduction": r}, paper)
            for r, paper in ((2, 22.29), (4, 22.25), (8, 22.26), (32, 22.72))], 22.28),
        _ablation("squeeze", "squeeze operator (paper: Sec. 6.2)", [
            ("-maxsqueeze", "SE-ResNet-20, max squeeze", {"se_options": {"squeeze": "max"}}, 22.57)], 22.28),
        _ablation("gate", "excitation gate (paper: Sec. 6.3)", [
            ("-tanh", "SE-ResNet-20, tanh gate", {"se_options": {"gate": "tanh"}}, 23.00),
            ("-relu", "SE-ResNet-20, ReLU gate", {"se_options": {"gate": "relu"}}, 23.47)], 22.28),
        _ablation("integration", "integration strategy (paper: Sec. 6.5, Fig. 5)", [
            (f"-{pos}", f"SE-ResNet-20, SE-{pos.upper() if pos != 'identity' else 'Identity'}",
             {"se_position": pos}, paper)
            for pos, paper in (("pre", 22.23), ("post", 22.78), ("identity", 22.20))], 22.28),
        _ablation("stages", "SE in one stage only (paper: Sec. 6.4; stages numbered as the paper: conv1 = 1)", [
            (f"-stage{s}", f"SE-ResNet-20, SE on stage {s} only", {"se_stages": [s]}, paper)
            for s, paper in ((2, 23.03), (3, 23.04), (4, 22.68))], 22.28, plain=True),
        _ablation("nosqueeze", "NoSqueeze: excitation without global pooling (paper: Sec. 6.2)", [
            ("-nosqueeze", "SE-ResNet-20, NoSqueeze", {"se_options": {"spatial": True}}, 22.93)], 22.28),
    ]
    return {s.name: s for s in suites}


SUITES: dict[str, Suite] = _builtin()


def suite_names() -> list[str]:
    return list(SUITES)


# ----------------------------------------------------------------------------- user suites (TOML)
_CONFIG_KEYS = {"name", "label", "baseline", "paper"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


def _toml_loads(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib  # noqa: PLC0415
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # noqa: PLC0415
    return tomllib.loads(text)


def _check_options(where: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")


def load_suite(spec: str) -> Suite:
    """A built-in suite by name, or a suite from a TOML file (see the module's docstring)."""
    if spec in SUITES:
        return SUITES[spec]
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"unknown suite {spec!r}: choose one of {', '.join(SUITES)} or give a TOML file")
    try:
        doc = _toml_loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable TOML suite ({exc})") from None
    allowed = {"name", "title", "baseline", "protocol", "seeds", "overrides", "config"}
    extra = sorted(set(doc) - allowed)
    if extra:
        raise UserError(f"{path}: unknown key(s) {', '.join(extra)}; a suite has {', '.join(sorted(allowed))}")
    raw = doc.get("config")
    if not isinstance(raw, list) or not raw or not all(isinstance(c, dict) for c in raw):
        raise UserError(f"{path}: a suite needs at least one [[config]] table")
    overrides = doc.get("overrides", {})
    if not isinstance(overrides, dict):
        raise UserError(f"{path}: [overrides] must be a table of minise train options")
    _check_options(f"{path} [overrides]", overrides)
    names = [c.get("name") for c in raw]
    for n in names:
        if not isinstance(n, str) or not _NAME.fullmatch(n):
            raise UserError(f"{path}: every [[config]] needs a name usable as a folder name, got {n!r}")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: configuration names must be unique, got {names}")
    baseline = doc.get("baseline", names[0])
    if baseline not in names:
        raise UserError(f"{path}: baseline {baseline!r} is not one of the configurations {names}")
    configs = []
    for c in raw:
        options = {k: v for k, v in c.items() if k not in _CONFIG_KEYS}
        _check_options(f"{path} [[config]] {c['name']}", options)
        if "model" not in options:
            raise UserError(f"{path} [[config]] {c['name']}: needs a model")
        own = c.get("baseline", baseline)
        if own not in names:
            raise UserError(f"{path} [[config]] {c['name']}: baseline {own!r} is not one of {names}")
        paper = c.get("paper")
        if paper is not None and not isinstance(paper, (int, float)):
            raise UserError(f"{path} [[config]] {c['name']}: paper must be an error in %, got {paper!r}")
        configs.append(Config(c["name"], str(c.get("label", c["name"])), options,
                              None if c["name"] == baseline else own,
                              {"any": float(paper)} if paper is not None else {}))
    protocol = doc.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise UserError(f"{path}: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    seeds = doc.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds
                              or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
                              or len(set(seeds)) != len(seeds)):
        raise UserError(f"{path}: seeds must be a list of distinct integers >= 0, got {seeds!r}")
    return Suite(str(doc.get("name", path.stem)), str(doc.get("title", path.stem)), tuple(configs),
                 "the paper's values as given in the suite file", protocol,
                 tuple(seeds) if seeds is not None else None, dict(overrides))
