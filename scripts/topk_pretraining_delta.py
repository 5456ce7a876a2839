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

    python scripts/topk_pretraining_delta.py RESULTS [--plain simclr] [--topk simclr_topk] [--labels a,b,…]
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
    parser.add_argument("--plain", default="simclr")
    parser.add_argument("--topk", default="simclr_topk")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--labels", default=None, help="comma-separated macro labels (default: the test set's defined "
                        "evaluation labels that have a bootstrap)")
    args = parser.parse_args()

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
    print("| fraction | top-K (read-out) | seeds | top-K macro AUROC [95% CI] | plain (class token) | Δ top-K − plain [95% CI] | p |")
    print("|---|---|---|---|---|---|---|")
    for fraction in sorted({k[2] for k in groups}):
        plain_key = (args.plain, "linear", fraction)
        if plain_key not in groups:
            continue
        b, b_seeds, b_labels = summary(plain_key)
        for head in ("topk", "linear"):
            key = (args.topk, head, fraction)
            if key not in groups:
                continue
            a, a_seeds, a_labels = summary(key)
            if a_labels != b_labels:  # a macro Δ is paired only over one label set
                raise SystemExit(f"{key}: macro over {a_labels}, the plain configuration's over {b_labels}: not paired")
            d = paired_seed_delta(a, b)
            print(f"| {fraction:g} | {args.topk} ({head}) | {a.n_seeds} vs {b.n_seeds} | {a.mean:.3f} [{a.ci_low:.3f}, {a.ci_high:.3f}] "
                  f"(seeds {a_seeds}) | {b.mean:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}] (seeds {b_seeds}) | "
                  f"{d.delta:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}] | {d.p_value:.3g} |")
    print(f"\nmacro over {len(b_labels)} evaluation labels defined on the test set"
          + (f" (left out, no bootstrap or not chosen: {', '.join(sorted(left_out))})" if left_out else "")
          + f"; {args.bootstrap} patient resamples; seed sd inside each interval (reports.seeds)")


if __name__ == "__main__":
    main()
