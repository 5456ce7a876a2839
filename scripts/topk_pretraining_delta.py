"""Seed-pooled paired Δ macro AUROC, top-K pretraining − plain, per label fraction (docs/TOPK.md).

`chexbench report --baseline` pairs a configuration only with a baseline of the same read-out
(``protocol.head``), and `chexbench compare` pairs two prediction files (one seed each). The
pretraining hypothesis compares configurations read out differently (``simclr_topk`` through its
pretrained scorer, ``head = "topk"``, against ``simclr`` through its class token), pooled over
seeds. This script computes that Δ with the report's own functions: each configuration's macro
AUROC over the test set's defined evaluation labels, its seeds combined by
``reports.seeds.combine_seeds`` on the shared patient resamples, and ``paired_seed_delta`` — the
numbers `chexbench report` prints for a Δ vs baseline, for any two configurations.

A label whose positive test patients are too few for any patient resample (k < 2: every resample
that keeps it is degenerate) has no bootstrap, and a macro that includes it has no interval; such
labels are left out of the macro and named in the output (``--labels`` chooses them explicitly).

    python scripts/topk_pretraining_delta.py RESULTS [--pair simclr:simclr_topk ...] [--labels a,b,…]

``--pair B:A`` (repeatable; default simclr:simclr_topk and mocov2:mocov2_topk) prints A − B for each
read-out A has, B read through its class token; ``--pair scratch:simclr`` gives plain SimCLR against
the frozen random initialization.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from chexbench.reports.aggregate import load_results
from chexbench.reports.bootstrap import macro_df_of, macro_factor_of, macro_k, macro_point, macro_replicates
from chexbench.reports.leaderboard import test_set_label_sets
from chexbench.reports.seeds import combine_seeds, paired_seed_delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--pair", action="append", default=None, metavar="B:A",
                        help="baseline strategy B (head linear) : compared strategy A (every head); repeatable")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--labels", default=None, help="comma-separated macro labels (default: the test set's defined "
                        "evaluation labels that have a bootstrap)")
    args = parser.parse_args()
    pairs = [tuple(x.split(":", 1)) for x in (args.pair or ["simclr:simclr_topk", "mocov2:mocov2_topk"])]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--pair: expected BASELINE:STRATEGY, got {args.pair}")

    results = load_results(args.results, n_boot=args.bootstrap, seed=0)
    ts_labels, _ = test_set_label_sets(results)
    groups: dict[tuple[str, str, float], list[tuple[int, str]]] = {}
    for row in results.ok.itertuples():
        head = json.loads(row.config_json)["protocol_options"].get("head", "linear")
        groups.setdefault((row.strategy, head, float(row.label_fraction)), []).append((int(row.seed), row.cell_id))

    def summary(key):
        cells = sorted(groups[key])
        ids = [c for _, c in cells]
        test_sets = {results.test_set_of[c] for c in ids}
        if len(test_sets) != 1:
            raise SystemExit(f"{key}: seeds on different test sets ({len(test_sets)}): not paired")
        defined = ts_labels[test_sets.pop()]
        scores = [results.scores[c] for c in ids]
        if args.labels:
            labels = args.labels.split(",")
            unknown = [k for k in labels if k not in defined]
            if unknown:
                raise SystemExit(f"--labels: {', '.join(unknown)} not defined on the test set (defined: {', '.join(defined)})")
        else:
            labels = [k for k in defined if all(np.isfinite(c.labels[k].auroc_boot).any() for c in scores)]
        left_out.update(k for k in defined if k not in labels)
        s = combine_seeds([macro_point(c, labels, "auroc") for c in scores], [macro_replicates(c, labels, "auroc") for c in scores],
                          df_test=macro_df_of(scores[0], labels, "auroc"), k=macro_k(scores[0], labels),
                          factor_test=macro_factor_of(scores[0], labels, "auroc"))
        per_seed = ", ".join(f"{seed}: {macro_point(results.scores[c], labels, 'auroc'):.3f}" for seed, c in cells)
        return s, per_seed, labels

    left_out: set[str] = set()
    b_labels: list[str] = []
    print("| fraction | A (read-out) | seeds | A macro AUROC [95% CI] | B (class token) | B macro AUROC [95% CI] | Δ A − B [95% CI] | p |")
    print("|---|---|---|---|---|---|---|---|")
    for plain, other in pairs:
        for fraction in sorted({k[2] for k in groups}):
            plain_key = (plain, "linear", fraction)
            if plain_key not in groups:
                continue
            b, b_seeds, b_labels = summary(plain_key)
            for head in ("topk", "linear"):
                key = (other, head, fraction)
                if key not in groups:
                    continue
                a, a_seeds, a_labels = summary(key)
                if a_labels != b_labels:  # a macro Δ is paired only over one label set
                    raise SystemExit(f"{key}: macro over {a_labels}, the baseline's over {b_labels}: not paired")
                d = paired_seed_delta(a, b)
                print(f"| {fraction:g} | {other} ({head}) | {a.n_seeds} vs {b.n_seeds} | {a.mean:.3f} [{a.ci_low:.3f}, {a.ci_high:.3f}] "
                      f"(seeds {a_seeds}) | {plain} | {b.mean:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}] (seeds {b_seeds}) | "
                      f"{d.delta:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}] | {d.p_value:.3g} |")
    print(f"\nmacro over {len(b_labels)} evaluation labels defined on the test set"
          + (f" (left out, no bootstrap or not chosen: {', '.join(sorted(left_out))})" if left_out else "")
          + f"; {args.bootstrap} patient resamples; seed sd inside each interval (reports.seeds)")


if __name__ == "__main__":
    main()
