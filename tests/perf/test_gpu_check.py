"""``make gpu-check``: the parts that need no GPU — arguments, the one-line refusal without CUDA,
the targets' verdicts, the PERFORMANCE.md section written from a (fake) result, which ``plan``'s
GPU-hours estimate then reads, and the small grid it runs."""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest
import torch

from chexbench.core.paths import repo_root
from chexbench.perf import gpu_check as G
from chexbench.perf.throughput import Measurement, estimate_gpu_hours, recorded_measurements
from chexbench.spec.parse import parse_grid

GPU = "NVIDIA H200"


def _m(backbone: str, mode: str, rate: float, compiled: bool = False, peak: float = 9000.0) -> Measurement:
    return Measurement(GPU, backbone, mode, 256, 224, rate, peak, compiled)


def _fake_result() -> G.CheckResult:
    rows = [
        _m("-", "loader:plain", 90_000.0),
        _m("-", "loader:light", 40_000.0),
        _m("-", "loader:views", 20_000.0),
        _m("resnet50", "finetune", 5_600.0),
        _m("resnet50", "plain:finetune", 5_800.0),
        _m("resnet50", "linear", 17_000.0),
        _m("resnet50", "plain:linear", 17_500.0),
        _m("resnet50", "simclr", 2_400.0),
        _m("resnet50", "mocov2", 4_200.0),
        _m("vit_b16", "finetune", 2_700.0),
        _m("vit_b16", "mocov2", 1_700.0),
        _m("vit_b16", "simclr", 1_400.0),
        _m("resnet50", "finetune", 7_000.0, compiled=True),
    ]
    grid = G.GridOutcome(
        cells_ok=14,
        cells_failed=1,
        cells_skipped=5,
        seconds=95.0,
        report="gpu-check/results/report.md",
        failures=["mocov2 × resnet50 × linear: DivergedError: loss became nan"],
    )
    return G.CheckResult(
        GPU,
        "make gpu-check",
        "`pytest -q -m gpu tests` → 9 passed",
        True,
        rows,
        ["vit_b16_convstem simclr (compiled): time budget spent"],
        grid,
        430.0,
    )


def test_arguments_have_gpu_sized_defaults_and_reject_bad_values(capsys):
    args = G.parse_args([])
    assert (args.batch_size, args.image_size, args.budget_s, args.backbone) == (256, 224, 450.0, None)
    args = G.parse_args(["--backbone", "vit_b16", "--no-grid", "--budget-s", "120"])
    assert args.backbone == ["vit_b16"] and args.no_grid and args.budget_s == 120
    for bad in (["--batch-size", "1"], ["--backbone", "resnet5O"], ["--budget-s", "0"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as e:
            G.parse_args(bad)
        assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_without_cuda_it_stops_at_once_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "PERFORMANCE.md"
    assert G.main(["--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0] and "make gpu-check" in err[0]
    assert not out.exists()  # nothing written


@pytest.mark.skipif(
    shutil.which("make") is None or repo_root() is None, reason="needs make and the source checkout"
)
def test_make_gpu_check_fails_fast_without_a_gpu():
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA GPU")
    res = subprocess.run(
        ["make", "-s", "gpu-check"], cwd=repo_root(), capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0
    assert "make gpu-check: no NVIDIA GPU on this machine" in res.stderr


def test_target_verdicts_compare_with_the_issue_targets_and_the_plain_loop():
    verdicts = G.target_verdicts(_fake_result().measurements)
    assert "resnet50 fine-tune 5,600 images/s (target ≥ 5,000): met" in verdicts
    assert "vit_b16 fine-tune 2,700 images/s (target ≥ 3,000): **not met**" in verdicts
    assert "resnet50 mocov2 0.75× fine-tune (target ≥ 0.7×): met" in verdicts
    assert "resnet50 simclr 0.43× fine-tune (target ≥ 0.5×): **not met**" in verdicts
    assert "resnet50 fine-tune step 0.97× the plain PyTorch loop of the same model" in verdicts
    assert "loader never the bottleneck: met" in verdicts
    slow_loader = [_m("-", "loader:light", 1_000.0), _m("resnet50", "finetune", 5_000.0)]
    assert (
        G.target_verdicts(slow_loader)[-1]
        == "loader never the bottleneck: **not met** (input-bound: resnet50 finetune)"
    )


def test_the_section_holds_gpu_command_numbers_and_feeds_plans_estimate(tmp_path):
    out = tmp_path / "PERFORMANCE.md"
    out.write_text("# Performance\n\n## Other benchmark\n\nkept\n")
    G.write_section(_fake_result(), out)
    G.write_section(_fake_result(), out)  # rewritten in place, not appended twice
    text = out.read_text()
    assert text.count(f"## GPU check ({GPU})") == 1 and "## Other benchmark\n\nkept" in text
    assert "- command: `make gpu-check`" in text and f"- GPU: {GPU}" in text
    assert "| resnet50 | finetune | 256 | 224 | 5,600 | 1.00 | 0.97 | 9,000 | no |" in text
    assert "vit_b16_convstem simclr (compiled): time budget spent" in text
    assert "- cells: 14 ok, 1 failed, 5 skipped, in 95 s" in text and "DivergedError" in text
    measured = recorded_measurements(text)
    assert measured == _fake_result().measurements
    raw = {
        "axes": {
            "strategy": ["scratch"],
            "backbone": ["resnet50"],
            "dataset": ["chexpert"],
            "protocol": ["finetune"],
            "label_fraction": [0.1],
            "seed": [0],
        },
        "settings": {"epochs": 2},
        "dataset": {"chexpert": {"root": "/nowhere"}},
    }
    est = estimate_gpu_hours(parse_grid(raw, "g.toml").cells(), measured)
    assert GPU in est.source
    n = 19_123  # ceil(191_229 × 0.1): the uncompiled fine-tune rate (5,600) is used, not the compiled one
    assert est.gpu_hours == pytest.approx(2 * (n / 5_600 + 0.1 * n / 17_000) / 3600, rel=1e-9)


def test_the_small_grid_is_valid_and_runs_every_strategy():
    raw = tomllib.loads(G.grid_toml(150, 224))
    grid = parse_grid(raw, "gpu_check.toml")
    planned = grid.cells()
    runnable = {(p.cell.strategy, p.cell.backbone) for p in planned if p.status == "run"}
    assert {s for s, _ in runnable} >= {"scratch", "simclr", "mocov2", "moco_convstem"}
    assert all(p.cell.settings.image_size == 224 for p in planned)
    assert all(p.cell.settings.epochs == 1 for p in planned if p.cell.protocol == "finetune")
    assert all(p.cell.strategy_options.get("pretrain_epochs", 1) == 1 for p in planned)


def test_plan_reads_the_gpu_check_section_and_names_every_rate_it_assumed(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from chexbench.cli import app
    from chexbench.perf.throughput import markdown

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    perf = tmp_path / "PERFORMANCE.md"
    monkeypatch.setattr("chexbench.perf.record.performance_file", lambda path=None: perf)
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["scratch","mocov2"]\nbackbone=["resnet50","vit_b16"]\ndataset=["chexpert"]\nprotocol=["finetune"]\n'
        'label_fraction=[0.1]\nseed=[0]\n[settings]\nepochs=2\n[dataset.chexpert]\nroot="/nowhere"\n'
    )
    planned = parse_grid(tomllib.loads(grid.read_text()), str(grid)).cells()

    def plan() -> str:
        res = CliRunner().invoke(
            app,
            ["plan", "--grid", str(grid), "--results", str(tmp_path / "r"), "--no-check"],
            terminal_width=300,
        )
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())

    G.write_section(_fake_result(), perf)  # what make gpu-check writes
    est = estimate_gpu_hours(planned, _fake_result().measurements)
    out = plan()
    assert (
        f"estimated {est.gpu_hours:,.1f} GPU-hours for 4 cells and 2 pretraining runs (measured on {GPU}"
        " (docs/PERFORMANCE.md), 1 rate(s) assumed" in out
    )
    # the fake check measured every mode but vit_b16's linear extraction (its validation passes): that one is
    # named
    assert est.assumed == [
        "vit_b16 linear at 224 px: not measured: the H100 target at 224 px × 3.0 for linear × (224/224)²"
    ]
    assert "assumed vit_b16 linear at 224 px: not measured" in out and "assumed resnet50" not in out
    # measured rates, not targets: resnet50's MoCo pretraining at the measured 4,200 images/s (target 0.7 ×
    # 5,000)
    targets = estimate_gpu_hours(planned, [])
    assert est.gpu_hours != pytest.approx(targets.gpu_hours)

    perf.write_text(
        "# Performance\n\n## Throughput (CPU)\n\n"
        + markdown([Measurement("cpu (2 cores, 1 threads)", "resnet50", "finetune", 16, 64, 9.0, 900.0)])
    )
    out = plan()  # CPU rates are never used for GPU-hours: it says it falls back to the targets
    assert f"estimated {targets.gpu_hours:,.1f} GPU-hours" in out
    assert (
        "assumed H100 target rates: no GPU measurement recorded in docs/PERFORMANCE.md (make gpu-check writes"
        " them)" in out
    )


def test_gpu_tests_are_collected_from_the_marked_modules_only(tmp_path):
    # a GPU image's python lacks dev-only packages (grimp, torchxrayvision): collecting every module would
    # fail
    files = G.gpu_test_files(repo_root() / "tests")
    assert files and all("pytest.mark.gpu" in f.read_text() for f in files)
    assert repo_root() / "tests" / "bench" / "test_fast_path.py" in files
    assert repo_root() / "tests" / "test_architecture.py" not in files  # imports grimp
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_plain.py").write_text("import not_installed_anywhere\n")
    assert G.gpu_test_files(tmp_path / "tests") == []
    assert G.run_gpu_tests(tmp_path, 30) == ("not run (no gpu-marked tests found under tests/)", None)


def _missing(tmp_path, deps: list[str], *skip: str) -> subprocess.CompletedProcess:
    import sys

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = " + repr(deps) + "\n")
    script = repo_root() / "scripts" / "missing_requirements.py"
    args = [
        sys.executable,
        str(script),
        "--pyproject",
        str(tmp_path / "pyproject.toml"),
        *(f"--skip={s}" for s in skip),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(repo_root() is None, reason="needs the source checkout")
def test_missing_requirements_names_only_what_this_python_lacks(tmp_path):
    res = _missing(
        tmp_path,
        [
            "torch>=2.2",
            "pandas>=2.0",
            "surely-not-installed-pkg>=1",
            "numpy<1.0",
            "pyarrow; python_version < '3'",
        ],
    )
    assert res.returncode == 0
    assert res.stdout.split() == ["surely-not-installed-pkg>=1", "numpy<1.0"]  # too old/new counts as missing
    # torch is never installed by gpu-check: an unsatisfied torch is reported and fails instead
    res = _missing(tmp_path, ["torch<2.0", "pandas>=2.0"], "torch")
    assert res.returncode == 1 and res.stdout.strip() == ""
    assert f"torch {torch.__version__.split('+')[0]} does not satisfy torch<2.0" in res.stderr


def _checkout_without_venv(tmp_path, extra_requirement: str | None = None):
    """A copy of the checkout's scripts and pyproject (src linked), without a .venv: gpu-check's path on a GPU
    image."""
    root = repo_root()
    co = tmp_path / "co"
    shutil.copytree(root / "scripts", co / "scripts")
    text = (root / "pyproject.toml").read_text()
    if extra_requirement:
        text = text.replace("dependencies = [\n", f'dependencies = [\n    "{extra_requirement}",\n', 1)
    (co / "pyproject.toml").write_text(text)
    (co / "src").symlink_to(root / "src")
    return co


@pytest.mark.skipif(repo_root() is None, reason="needs the source checkout")
def test_gpu_check_script_runs_on_the_machines_own_python_without_a_venv(tmp_path):
    import os
    import sys

    co = _checkout_without_venv(tmp_path)
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable}
    args = [
        "--device",
        "cpu",
        "--backbone",
        "resnet_tiny",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--no-compile",
        "--no-grid",
        "--no-tests",
        "--budget-s",
        "60",
        "--output",
        str(co / "PERF.md"),
    ]
    res = subprocess.run(
        [str(co / "scripts" / "gpu-check"), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"gpu-check python: {sys.executable}" in res.stderr
    assert "| resnet_tiny | finetune |" in (co / "PERF.md").read_text()
    assert (
        not (co / ".venv").exists() and not (co / ".gpu-site").exists()
    )  # nothing installed: nothing was missing


@pytest.mark.skipif(repo_root() is None, reason="needs the source checkout")
def test_gpu_check_script_without_a_registry_names_what_is_missing_and_how_to_bring_it(tmp_path):
    import os
    import sys

    co = _checkout_without_venv(tmp_path, "surely-not-installed-pkg>=1")
    env = {
        **os.environ,
        "GPU_CHECK_PYTHON": sys.executable,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path / "none"),
    }
    res = subprocess.run(
        [str(co / "scripts" / "gpu-check"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert "lacks surely-not-installed-pkg>=1 and pip could not install them" in last
    assert "make gpu-wheels GPU_PY_VERSION=" in last and "PACKAGES='surely-not-installed-pkg>=1'" in last
    assert not (co / "PERF.md").exists()


def test_a_failing_measurement_fails_the_check_and_compiled_ones_come_after_the_grid(monkeypatch, tmp_path):
    calls = []

    def fake_mode(mode, backbone, batch, size, dev, steps, warmup, compile_step=False):
        calls.append(f"{mode}{' compiled' if compile_step else ''}")
        if mode == "simclr" and not compile_step:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
        return Measurement("cpu", backbone, mode, batch, size, 100.0, 1.0, compile_step)

    def fake_grid(args, budget):
        calls.append("grid")
        return G.GridOutcome(cells_ok=3, image_size=args.image_size)

    monkeypatch.setattr(G, "measure_mode", fake_mode)
    monkeypatch.setattr(
        G,
        "measure_loader",
        lambda kind, *a, **k: (
            (_ for _ in ()).throw(OSError("no shm"))
            if kind == "views"
            else Measurement("cpu", "-", f"loader:{kind}", 4, 32, 1e4, 1.0)
        ),
    )
    monkeypatch.setattr(G, "run_grid", fake_grid)
    out = tmp_path / "PERFORMANCE.md"
    code = G.main(
        [
            "--device",
            "cpu",
            "--backbone",
            "resnet_tiny",
            "--no-tests",
            "--budget-s",
            "1000",
            "--output",
            str(out),
        ]
    )
    assert code == 1  # a mode that raised is a failure, not "not measured"
    assert calls.index("grid") > calls.index("plain:linear") and calls.index("grid") < calls.index(
        "finetune compiled"
    )
    text = out.read_text()
    assert "- resnet_tiny simclr: RuntimeError: CUDA error: an illegal memory access was encountered" in text
    assert (
        "- loader:views: OSError: no shm" in text and "| resnet_tiny | mocov2 |" in text
    )  # the others still measured
    assert text.index("**Failed**") < text.index("Small real grid")
