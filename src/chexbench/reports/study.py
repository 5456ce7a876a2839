"""The report section that names, for each of the study's questions, the comparison that answers it.

The questions (DESIGN.md): does a convolutional stem help a self-supervised objective on a ViT
(patchify vs conv stem, same objective, same recipe); self-supervised vs ImageNet vs scratch,
per backbone; how the answer changes with the label budget. Each row says which cells of the
results folder form the comparison, and whether they are there; the numbers are in the
leaderboards and the paired table. Backbone families and strategy aliases come from the
registry (``kind``, ``conv_stem``, ``alias_of``), so a plugin takes part.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from chexbench.reports.markdown import table
from chexbench.spec.registry import BACKBONES, STRATEGIES


def _attr(registry, name: str, attr: str, default=None):
    return getattr(registry.get(name), attr, default) if name in registry else default


def _objective(strategy: str) -> str:
    """The strategy an alias stands for (``moco_convstem`` → ``mocov2``), else the name itself."""
    return _attr(STRATEGIES, strategy, "alias_of", None) or strategy


def _names(values: Iterable[object]) -> str:
    return ", ".join(f"`{v}`" for v in sorted({str(v) for v in values})) or "none"


def _rows(frame: pd.DataFrame, column: str, keep) -> pd.DataFrame:
    """The rows of ``frame`` whose ``column`` value satisfies ``keep`` (an empty frame stays a frame of
    rows)."""
    return frame[np.array([bool(keep(v)) for v in frame[column]], dtype=bool)]


def _strategy_options(row: pd.Series) -> str:
    try:
        return json.dumps(json.loads(row["config_json"]).get("strategy_options", {}), sort_keys=True)
    except (KeyError, TypeError, ValueError):
        return ""


def _stem_comparisons(ok: pd.DataFrame) -> tuple[str, str]:
    """(comparison text, what these results hold) for the conv-stem question."""
    vit = _rows(ok, "backbone", lambda b: _attr(BACKBONES, b, "kind", "") == "vit")
    conv = _rows(vit, "backbone", lambda b: bool(_attr(BACKBONES, b, "conv_stem", False)))
    patch = _rows(vit, "backbone", lambda b: not _attr(BACKBONES, b, "conv_stem", False))
    what = (
        "per self-supervised objective: the objective on a patchify ViT vs the same objective on a conv-stem"
        " ViT (`moco_convstem` is `mocov2` on a conv stem), same dataset, protocol and label fraction; the"
        " recipe is chosen by the backbone family, so both ViTs get the same one and only the stem differs"
    )
    found, unlike = [], []
    keys = ["dataset", "protocol", "label_fraction"]
    for (dataset, protocol, fraction), p in patch.groupby(keys, sort=True):
        c = conv[
            (conv["dataset"] == dataset)
            & (conv["protocol"] == protocol)
            & (conv["label_fraction"] == fraction)
        ]
        for objective in sorted(
            {_objective(s) for s in p["strategy"]} & {_objective(s) for s in c["strategy"]}
        ):
            if not _attr(STRATEGIES, objective, "recipes", None):
                continue  # not a pretraining objective with recipes (scratch, imagenet)
            a = _rows(p, "strategy", lambda s, o=objective: _objective(s) == o)
            b = _rows(c, "strategy", lambda s, o=objective: _objective(s) == o)
            pair = (
                f"`{a['strategy'].iloc[0]}`·`{a['backbone'].iloc[0]}` vs"
                f" `{b['strategy'].iloc[0]}`·`{b['backbone'].iloc[0]}`"
            )
            found.append(f"{pair} ({dataset} · {protocol} · {float(fraction):g})")
            if len({_strategy_options(r) for _, r in pd.concat([a, b]).iterrows()}) > 1:
                unlike.append(pair)
    if not found:
        return (
            what,
            "not in these results (needs a self-supervised objective on both a patchify and a conv-stem ViT)",
        )
    held = f"{len(found)} comparison(s): " + "; ".join(found[:6]) + (" …" if len(found) > 6 else "")
    if unlike:
        held += f". ⚠ options differ between the two sides of {_names(unlike)}: not like with like"
    return what, held


def study_questions_section(ok: pd.DataFrame, baseline: str = "scratch") -> str:
    """Markdown: each study question, the comparison that answers it, and which cells hold it."""
    if ok.empty:
        return ""
    rows = []
    what, held = _stem_comparisons(ok)
    rows.append(["Does a convolutional stem help self-supervised pretraining of a ViT?", what, held])
    per_backbone = [f"`{b}`: {_names(g['strategy'])}" for b, g in ok.groupby("backbone", sort=True)]
    rows.append(
        [
            "Self-supervised vs ImageNet vs scratch, per backbone?",
            (
                "within one backbone, dataset, protocol and label fraction: each strategy's row of the"
                f" leaderboard, and its paired Δ vs `{baseline}` on the same test images (paired table)"
            ),
            "; ".join(per_backbone),
        ]
    )
    budgets = [
        f"`{s}`·`{b}`: {', '.join(f'{float(f):g}' for f in sorted(set(g['label_fraction'])))}"
        for (s, b), g in ok.groupby(["strategy", "backbone"], sort=True)
    ]
    single = all(len(set(g["label_fraction"])) < 2 for _, g in ok.groupby(["strategy", "backbone"]))
    rows.append(
        [
            "How does the answer change with the label budget?",
            (
                "one strategy and backbone across label fractions (patient-level subsets of the train split),"
                " same dataset, protocol and test set; the Δ vs the baseline at each fraction"
            ),
            "only one label fraction in these results" if single else "; ".join(budgets),
        ]
    )
    head = (
        "## Study questions\n\nWhich comparison answers each of the study's questions, and which cells of"
        " these results hold it.\n"
    )
    return head + "\n" + table(["question", "comparison", "in these results"], rows) + "\n"
