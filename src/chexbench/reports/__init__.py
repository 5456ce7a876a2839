"""Statistics and rendering: pure functions from stored results to Markdown and figures.

Modules, bottom up (methods and citations: docs/STATISTICS.md):
    auroc        exact AUROC / AUPRC for one sample or thousands of weighted resamples at once
    bootstrap    patient-level (cluster) resamples shared per test set; per-label scores
    delong       DeLong (Sun & Xu fast algorithm) and the clustered variant (Obuchowski 1997)
    compare      paired Δ on shared resamples, MOVER interval on both arms' intervals and its p-value, Holm /
    BH
    intervals    the interval methods and the one chosen by simulation (bench coverage)
    seeds        mean ± sd over seeds and the seed-pooled interval (test-sample interval widened by the
    between-seed part)
    calibration  ECE, reliability diagrams, operating point chosen on validation
    aggregate    results directory → scored cells;  leaderboard: → tables
    crosscheck   DeLong vs bootstrap for every paired comparison
    markdown, plots, report   rendering; ``report.write_report(results_dir, ...)`` is the entry point
    score        ``chexbench score`` / ``compare`` for any long-form prediction file
    benchmark    ``chexbench bench stats``
"""
