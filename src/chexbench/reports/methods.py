"""The report's hyperparameter tables: what a methods section needs, read from each record's
resolved config (``config_json``), never from today's defaults where the record has the value.

A *configuration* is a cell's resolved config without its seed; its seeds are its cells.
Table 1 lists per configuration the training settings (epochs, lr, batch, image size,
optimizer, weight decay, warmup, uncertainty and not-mentioned policy, label fraction,
protocol options, plugins). Table 2 lists per pretrained initialization its budget and recipe
and the shared pretraining runs, with which fine-tuning seeds each run serves.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pandas as pd

from chexbench import __version__
from chexbench.bench.record import RecordStatus
from chexbench.reports.markdown import fmt_fraction, table
from chexbench.reports.names import config_label, setting_label
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.spec.settings import Settings

#: settings every hyperparameter table shows, in this order, with their column titles
CORE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("epochs", "epochs"),
    ("batch_size", "batch"),
    ("lr", "lr"),
    ("optimizer", "optimizer"),
    ("weight_decay", "weight decay"),
    ("warmup_epochs", "warmup (epochs)"),
    ("image_size", "image size"),
    ("uncertainty", "uncertain labels"),
    ("not_mentioned", "not mentioned"),
)
#: pretraining options shown as the budget and the recipe, in this order
PRETRAIN_BUDGET: tuple[str, ...] = ("pretrain_epochs", "pretrain_batch_size", "max_pretrain_images")
PRETRAIN_RECIPE: tuple[str, ...] = (
    "pretrain_optimizer",
    "pretrain_lr",
    "pretrain_weight_decay",
    "pretrain_warmup_epochs",
    "temperature",
    "proj_dim",
    "proj_hidden_dim",
)
#: settings that do not change what a cell computes (not worth a column)
EXECUTION_SETTINGS = frozenset({"num_workers", "eval_batch_size", "compile", "amp"})
MISSING = "—"


def _value(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(", ", ": "))
    return str(v)


def _configs(records: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per configuration (config without seed) of ``records``: its config and its cells."""
    groups: dict[str, dict[str, Any]] = {}
    for r in records.sort_values(
        ["dataset", "protocol", "label_fraction", "backbone", "strategy", "seed"]
    ).itertuples():
        try:
            config = json.loads(r.config_json)
        except (TypeError, json.JSONDecodeError):
            config = {}
        seedless = {k: v for k, v in config.items() if k != "seed"}
        key = (
            json.dumps(seedless, sort_keys=True, default=str)
            + f"|{r.dataset}|{r.protocol}|{r.label_fraction}|{r.backbone}|{r.strategy}"
        )
        g = groups.setdefault(key, {"config": seedless, "row": r, "seeds": [], "cells": [], "init": []})
        g["seeds"].append(int(r.seed))
        g["cells"].append(str(r.cell_id))
        try:
            g["init"].append(json.loads(r.init_json) if isinstance(r.init_json, str) and r.init_json else {})
        except json.JSONDecodeError:
            g["init"].append({})
    return list(groups.values())


def _strategy_options(
    strategy: str, recorded: dict[str, Any], backbone: str = ""
) -> tuple[dict[str, Any], bool]:
    """The strategy's resolved options (its declared defaults < the backbone family's recipe < the
    recorded overrides), and whether the defaults could be read (False for a strategy that is not
    installed here). Without the family recipe a ViT's row would show the ResNet recipe's values."""
    if strategy in STRATEGIES:
        component = STRATEGIES.get(strategy)
        recipe_for = getattr(component, "recipe_for", None)
        recipe = recipe_for(backbone) if recipe_for is not None and backbone in BACKBONES else {}
        return {**(getattr(component, "options", {}) or {}), **recipe, **recorded}, True
    return dict(recorded), False


def hyperparameter_section(records: pd.DataFrame) -> str:
    """Markdown: the two hyperparameter tables and what is shared across seeds."""
    head = (
        "## Methods: hyperparameters\n\nRead from each cell's resolved config (`config_json` of its"
        " record).\n"
    )
    ok = records[records["status"] == RecordStatus.OK] if len(records) else records
    if ok.empty:
        return head + "\nNo finished cells.\n"
    groups = _configs(ok)
    settings_of = [g["config"].get("settings", {}) for g in groups]
    shown = [k for k, _ in CORE_SETTINGS]
    known = [f.name for f in fields(Settings)]
    varying = [
        k
        for k in known
        if k not in shown
        and k not in EXECUTION_SETTINGS
        and k != "pretrain_seed"
        and len({json.dumps(s.get(k), default=str) for s in settings_of}) > 1
    ]
    has_plugins = any(g["config"].get("plugins") for g in groups)

    header = [
        "configuration",
        "dataset · protocol",
        "label fraction",
        "seeds",
        *[t for _, t in CORE_SETTINGS],
        *varying,
        "protocol options",
        "strategy options",
    ] + (["plugins"] if has_plugins else [])
    rows = []
    for g in groups:
        r, cfg, s = g["row"], g["config"], g["config"].get("settings", {})
        rows.append(
            [
                config_label(r.strategy, r.backbone),
                setting_label(r.dataset, r.protocol),
                fmt_fraction(r.label_fraction),
                ", ".join(str(x) for x in g["seeds"]),
                *[_value(s[k]) if k in s else MISSING for k in shown],
                *[_value(s[k]) if k in s else MISSING for k in varying],
                _options(cfg.get("protocol_options")),
                _options(cfg.get("strategy_options")),
                *(
                    [", ".join(f"{a}: {v}" for a, v in sorted((cfg.get("plugins") or {}).items())) or "—"]
                    if has_plugins
                    else []
                ),
            ]
        )
    parts = [
        head,
        "### Training, per configuration\n",
        (
            "One row per configuration (everything but the fine-tuning seed); its seeds are listed. "
            f"{MISSING}: the record does not hold the value (written by an older version).\n"
        ),
        table(header, rows) + "\n",
    ]
    constant = {
        k: settings_of[0].get(k)
        for k in known
        if k not in shown
        and k not in varying
        and k not in EXECUTION_SETTINGS
        and k != "pretrain_seed"
        and all(k in s for s in settings_of)
    }
    if constant:
        parts.append(
            "Same in every configuration: "
            + ", ".join(f"`{k}` = {_value(v)}" for k, v in constant.items())
            + ".\n"
        )
    parts.append(_pretraining_part(groups))
    return "\n".join(parts)


def _options(opts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} = {_value(v)}" for k, v in sorted((opts or {}).items())) or "defaults"


def _pretraining_part(groups: list[dict[str, Any]]) -> str:
    """Table 2: one row per pretraining run (or weights file) and the cells it serves."""
    runs: dict[str, dict[str, Any]] = {}
    other_inits: dict[tuple[str, str], set[str]] = {}
    for g in groups:
        r = g["row"]
        for init, seed, cell in zip(g["init"], g["seeds"], g["cells"], strict=True):
            run = init.get("pretrain_run")
            if run:
                entry = runs.setdefault(
                    run, {"row": r, "config": g["config"], "seeds": set(), "cells": [], "configs": set()}
                )
                entry["seeds"].add(seed)
                entry["cells"].append(cell)
                entry["configs"].add((r.dataset, r.protocol, fmt_fraction(r.label_fraction)))
            elif init.get("source"):
                other_inits.setdefault((str(r.strategy), str(r.backbone)), set()).add(str(init["source"]))
    text = [
        "### Initialization and pretraining\n",
        (
            "**What is shared across seeds.** A self-supervised strategy pretrains once per (strategy,"
            " backbone, pretraining source, pretraining options, image size, views, `pretrain_seed`), and"
            " that one run initializes every cell that needs it: every fine-tuning seed, label fraction and"
            " protocol. The fine-tuning seeds of a configuration vary the head initialization, the data order"
            " and the label-fraction subsample, but not the pretrained weights, so the seed standard"
            " deviation and the seed level of the intervals do not include pretraining variance. To include"
            ' it, set `pretrain_seed = "per_seed"`: each fine-tuning seed then pretrains its own run (seeded'
            " with the cell's seed) inside one configuration, so the seed spread and the seed level of the"
            " intervals include it; to compare pretraining seeds as configurations, sweep"
            ' `"settings.pretrain_seed" = [0, 1, 2]` under `[axes]` (one pretraining run per value).\n'
        ),
    ]
    pretrained = [g for g in groups if any(i.get("pretrain_run") for i in g["init"])]
    if pretrained:
        own = [g for g in pretrained if g["config"].get("settings", {}).get("pretrain_seed") == "per_seed"]
        text.append(
            f"Pretraining variance is inside the seed spread of {len(own)} of the {len(pretrained)}"
            ' pretrained configurations (`pretrain_seed = "per_seed"`)'
            + (
                ": "
                + "; ".join(
                    f"{config_label(g['row'].strategy, g['row'].backbone)} ·"
                    f" {setting_label(g['row'].dataset, g['row'].protocol)} ·"
                    f" {fmt_fraction(g['row'].label_fraction)}"
                    for g in own
                )
                if own
                else ""
            )
            + (
                ". In the others one pretraining run serves every seed: their seed spread and intervals hold "
                "fine-tuning variance only.\n"
                if len(own) < len(pretrained)
                else ".\n"
            )
        )
    if runs:
        header = [
            "initialization",
            "pretraining source",
            "pretrain seed",
            "budget",
            "recipe",
            "other options",
            "run id",
            "serves fine-tuning seeds",
            "cells",
        ]
        rows = []
        for run_id, e in sorted(
            runs.items(), key=lambda kv: (kv[1]["row"].strategy, kv[1]["row"].backbone, kv[0])
        ):
            r, cfg = e["row"], e["config"]
            s = cfg.get("settings", {})
            opts, known = _strategy_options(
                str(r.strategy), cfg.get("strategy_options") or {}, str(r.backbone)
            )
            budget = ", ".join(
                (
                    f"{k.removeprefix('pretrain_')} {_value(opts[k]) if opts[k] != 0 else 'all'}"
                    if k == "max_pretrain_images"
                    else f"{k.removeprefix('pretrain_')} {_value(opts[k])}"
                )
                for k in PRETRAIN_BUDGET
                if k in opts
            )
            recipe = ", ".join(
                f"{k.removeprefix('pretrain_')} {_value(opts[k])}" for k in PRETRAIN_RECIPE if k in opts
            )
            other = ", ".join(
                f"{k} {_value(v)}"
                for k, v in sorted(opts.items())
                if k not in PRETRAIN_BUDGET and k not in PRETRAIN_RECIPE and k != "pretrain_root"
            )
            if not known:
                recipe = (recipe + "; " if recipe else "") + "defaults unknown (strategy not installed here)"
            rows.append(
                [
                    config_label(r.strategy, r.backbone),
                    _value(s.get("pretrain_source", MISSING)),
                    (
                        f"per_seed ({', '.join(str(x) for x in sorted(e['seeds']))})"
                        if s.get("pretrain_seed") == "per_seed"
                        else _value(s.get("pretrain_seed", MISSING))
                    ),
                    budget or MISSING,
                    recipe or MISSING,
                    other or "—",
                    f"`{run_id}`",
                    ", ".join(str(x) for x in sorted(e["seeds"])),
                    str(len(e["cells"])),
                ]
            )
        text.append(table(header, rows) + "\n")
        note = (
            "Budget and recipe: the strategy's declared defaults with the grid's overrides "
            "(`chexbench list options STRATEGY` explains each)."
        )
        versions = sorted({str(e["row"].chexbench_version) for e in runs.values()})
        if versions != [__version__]:
            note += (
                f" The defaults are this chexbench's ({__version__}); the cells were run by chexbench "
                f"{', '.join(versions)}: check that the defaults did not change in between."
            )
        text.append(note + "\n")
    if other_inits:
        text.append(
            "Other initializations: "
            + "; ".join(
                f"{config_label(s, b)}: {', '.join(f'`{src}`' for src in sorted(srcs))}"
                for (s, b), srcs in sorted(other_inits.items())
            )
            + ".\n"
        )
    if not runs and not other_inits:
        text.append("No cell records an initialization (older records).\n")
    return "\n".join(text)
