import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexbench.bench.runner import base_record
from chexbench.bench.store import PREDICTION_COLUMNS, RECORD_COLUMNS, ResultStore
from chexbench.core.atomic import atomic_write_parquet
from chexbench.spec.cell import CellConfig


def _record(cell_id_seed: int = 0, status: str = "ok"):
    import torch

    cell = CellConfig("scratch", "resnet_tiny", "chexpert", "finetune", 1.0, cell_id_seed)
    rec = base_record(cell, torch.device("cpu")).as_dict()
    rec.update(status=status, macro_auroc=0.8)
    return cell, rec


def _preds(n=6):
    return pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "label": "edema",
            "y_true": np.r_[np.ones(n // 2), np.zeros(n - n // 2)],
            "y_score": np.linspace(0, 1, n),
            "split": "test",
        }
    )


def test_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    cell, rec = _record()
    assert not store.has(cell.cell_id)
    store.write(rec, _preds())
    assert store.has(cell.cell_id)
    back = store.records()
    assert list(back.columns) == list(RECORD_COLUMNS)
    assert back.loc[0, "cell_id"] == cell.cell_id and back.loc[0, "macro_auroc"] == 0.8
    assert back.loc[0, "schema_version"] >= 1
    preds = store.predictions(cell.cell_id)
    assert list(preds.columns) == list(PREDICTION_COLUMNS)
    pd.testing.assert_frame_equal(preds, _preds())


def test_failed_cells_are_not_finished(tmp_path):
    store = ResultStore(tmp_path)
    cell, rec = _record(status="failed")
    store.write(rec, None)
    assert not store.has(cell.cell_id)
    assert store.status_of(cell.cell_id) == "failed"


def test_an_ok_record_without_predictions_is_refused_not_quarantined_later(tmp_path):
    store = ResultStore(tmp_path)
    cell, rec = _record(status="ok")
    with pytest.raises(ValueError, match=f"{cell.cell_id}.*status ok needs its predictions"):
        store.write(rec, None)
    assert not store.record_path(cell.cell_id).exists()
    assert store.check(cell.cell_id).state == "pending" and not (tmp_path / "quarantine").exists()


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    atomic_write_parquet(pd.DataFrame({"a": [1]}), path)

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_parquet(pd.DataFrame({"a": [2]}), path)
    monkeypatch.undo()
    assert pd.read_parquet(path)["a"].tolist() == [1]
    assert os.listdir(tmp_path) == ["x.parquet"]  # no temp file left behind


def test_record_schema_is_enforced(tmp_path):
    _, rec = _record()
    del rec["macro_auroc"]
    with pytest.raises(ValueError, match="macro_auroc"):
        ResultStore(tmp_path).write(rec, None)
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())


# -- damaged files: readers report them once and move nothing; the run's explicit step quarantines
# -- them (never deleted) and the cell is pending again -------------------------------------------
def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _stored(tmp_path, seeds=(0, 1)):
    messages: list[str] = []
    store = ResultStore(tmp_path, report=messages.append)
    ids = []
    for s in seeds:
        cell, rec = _record(s)
        store.write(rec, _preds())
        ids.append(cell.cell_id)
    return store, ids, messages


@pytest.mark.parametrize("which", ["record", "predictions"])
def test_a_truncated_file_is_reported_once_quarantined_and_its_cell_pending(tmp_path, which):
    store, (bad, good), messages = _stored(tmp_path)
    victim = store.record_path(bad) if which == "record" else store.predictions_path(bad)
    original = victim.read_bytes()
    _truncate(victim)
    n = 1 if which == "record" else 2  # a damaged predictions file makes its record unusable too
    assert store.check(bad).state == "damaged"
    recs = store.records()  # readers go on with the rest, and move nothing
    assert list(recs["cell_id"]) == [good] and victim.exists() and not (tmp_path / "quarantine").exists()
    assert len(messages) == n and str(victim) in messages[0] and "left in place" in messages[0]
    assert not store.has(bad) and store.status_of(bad) == "damaged"  # pure predicates: still in place
    assert victim.exists() and not (tmp_path / "quarantine").exists()
    assert store.quarantine_damaged(bad).state == "pending"  # the run's explicit step
    assert store.status_of(bad) == "pending"
    moved_told = messages[n:]
    assert (
        len(moved_told) == n
        and str(victim) in moved_told[0]
        and "moved to" in moved_told[0]
        and "quarantine" in moved_told[0]
    )
    moved = tmp_path / "quarantine" / victim.parent.name / victim.name
    assert moved.read_bytes() == original[: len(original) // 2]  # kept, byte for byte
    log = [json.loads(line) for line in (tmp_path / "quarantine" / "log.jsonl").read_text().splitlines()]
    assert log[0]["file"] == f"{victim.parent.name}/{victim.name}" and "unreadable" in log[0]["reason"]
    store.records()
    store.quarantine_damaged(bad)
    assert len(messages) == 2 * n  # each told once
    assert store.has(good)


def test_quarantine_never_overwrites_an_earlier_quarantined_file(tmp_path):
    store, (bad, _), messages = _stored(tmp_path)
    for _ in range(3):
        _, rec = _record(0)
        store.write(rec, _preds())
        _truncate(store.record_path(bad))
        assert store.quarantine_damaged(bad).state == "pending"
    names = sorted(p.name for p in (tmp_path / "quarantine" / "records").iterdir())
    assert names == [f"{bad}.1.parquet", f"{bad}.2.parquet", f"{bad}.parquet"]
    assert len(messages) == 3


def test_predictions_that_do_not_belong_to_their_record_are_damaged(tmp_path):
    store, (a, b), messages = _stored(tmp_path)
    # another write of the same cell left its predictions; the record is from the first write
    first_preds = store.predictions_path(a).read_bytes()
    _, rec = _record(0)
    store.write(rec, _preds(8))
    store.predictions_path(a).write_bytes(first_preds)
    assert store.check(a).state == "damaged" and "write" in store.check(a).problems[0][1]
    # cell b's predictions copied under cell a's name
    store.write(rec, _preds(8))
    store.predictions_path(a).write_bytes(store.predictions_path(b).read_bytes())
    found = store.check(a)
    assert found.state == "damaged" and b in found.problems[0][1]
    assert not store.has(a) and store.has(b)
    assert store.quarantine_damaged(a).state == "pending"
    assert {p.parent.name for p in (tmp_path / "quarantine").rglob("*.parquet")} == {"records", "predictions"}


def test_an_ok_record_without_predictions_is_damaged(tmp_path):
    store, (a, _), _ = _stored(tmp_path)
    store.predictions_path(a).unlink()
    assert store.check(a).state == "damaged"
    assert not store.has(a)


def test_a_damaged_looking_cell_claimed_by_a_live_worker_is_left_alone(tmp_path):
    store, (a, _), messages = _stored(tmp_path)
    _truncate(store.predictions_path(a))  # as if another worker were rewriting it right now
    other = ResultStore(tmp_path).claim(a)
    assert other.try_acquire()
    try:
        assert store.quarantine_damaged(a).state == "running"
        assert store.predictions_path(a).exists() and messages == []
    finally:
        other.release()
    assert store.quarantine_damaged(a).state == "pending" and len(messages) == 2


def test_full_read_of_damaged_predictions_is_one_error_naming_the_file(tmp_path):
    from chexbench.bench.store import DamagedResultError

    store, (a, _), messages = _stored(tmp_path)
    path = store.predictions_path(a)
    data = bytearray(path.read_bytes())
    data[100:140] = b"\xff" * 40  # a data page damaged, the footer intact
    path.write_bytes(bytes(data))
    assert store.check(a).state == "ok"  # the footer-level check cannot see it; the full read must
    for _ in range(2):
        with pytest.raises(DamagedResultError, match=a):
            store.predictions(a)
    # a reader moves nothing: told once, with what to do
    assert (
        path.exists() and len(messages) == 1 and str(path) in messages[0] and "left in place" in messages[0]
    )


def test_records_written_before_pairing_still_count(tmp_path):
    store = ResultStore(tmp_path)
    cell, rec = _record()
    store.write(rec, _preds())
    for path in (store.record_path(cell.cell_id), store.predictions_path(cell.cell_id)):
        pd.read_parquet(path).to_parquet(path, index=False)  # as the previous version wrote them
    assert store.has(cell.cell_id)
    _truncate(store.predictions_path(cell.cell_id))
    assert not store.has(cell.cell_id)


def test_status_and_report_go_on_past_damaged_files(tmp_path):
    from typer.testing import CliRunner

    from chexbench.cli import app

    spec = importlib.util.spec_from_file_location(
        "synthetic_store", Path(__file__).parents[1] / "reports" / "synthetic_store.py"
    )
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)
    synthetic.write_synthetic_results(tmp_path, seeds=(0, 1))
    store = ResultStore(tmp_path)
    ok = sorted(store.records().query("status == 'ok'")["cell_id"])
    _truncate(store.record_path(ok[0]))
    _truncate(store.predictions_path(ok[1]))
    pretrain_log = sorted((tmp_path / "pretrain").glob("*.parquet"))[0]
    _truncate(pretrain_log)
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--results", str(tmp_path)], env={"COLUMNS": "250"})
    assert status.exit_code == 0, status.output
    # status only reads: each damaged file is named once and left where it is (the next run moves it)
    assert "Traceback" not in status.output and status.output.count("left in place") == 3
    assert not (tmp_path / "quarantine").exists()
    report = runner.invoke(
        app, ["report", "--results", str(tmp_path), "--no-figures"], env={"COLUMNS": "250"}
    )
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report.md").read_text()
    assert ok[0] not in text and ok[1] not in text  # both damaged cells left out, the rest reported
    assert "left in place" in report.output and str(pretrain_log) in report.output
    # the report only reads too: nothing moved
    assert (
        not (tmp_path / "quarantine").exists() and pretrain_log.exists() and store.record_path(ok[0]).exists()
    )
    _truncate(tmp_path / "skipped.parquet")
    again = runner.invoke(app, ["report", "--results", str(tmp_path), "--no-figures"], env={"COLUMNS": "250"})
    assert again.exit_code == 0, again.output
    assert (tmp_path / "skipped.parquet").exists() and not (tmp_path / "quarantine").exists()


def test_quarantine_works_on_a_filesystem_without_hard_links(tmp_path, monkeypatch):
    import errno

    from chexbench.bench import store as store_module

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(store_module.os, "link", no_links)
    store, (bad, _), messages = _stored(tmp_path)
    for _ in range(2):
        _, rec = _record(0)
        store.write(rec, _preds())
        _truncate(store.record_path(bad))
        assert store.quarantine_damaged(bad).state == "pending"
    assert sorted(p.name for p in (tmp_path / "quarantine" / "records").iterdir()) == [
        f"{bad}.1.parquet",
        f"{bad}.parquet",
    ]


def test_a_damaged_file_that_cannot_be_moved_is_reported_once_and_left_out(tmp_path):
    store, (bad, good), messages = _stored(tmp_path)
    _truncate(store.record_path(bad))
    (tmp_path / "claims").write_text("")  # as in a folder we may not write to: no claim, no quarantine
    (tmp_path / "quarantine").write_text("")
    assert list(store.records()["cell_id"]) == [good]
    for _ in range(2):
        assert store.quarantine_damaged(bad).state == "damaged" and not store.has(bad)
    assert len(messages) == 2 and "left in place" in messages[0]  # the reader's word, then the mover's
    assert "could not move" in messages[1] and str(store.record_path(bad)) in messages[1]
    assert store.record_path(bad).exists()


def test_a_damaged_skipped_file_is_quarantined_and_rebuilt_by_the_next_plan(tmp_path):
    from chexbench.bench.runner import write_skipped
    from chexbench.spec.grid import PlannedCell

    store, _, messages = _stored(tmp_path)
    cell, _ = _record(5)
    planned = [PlannedCell(cell, "skipped", "no weights here")]
    write_skipped(store, planned)
    _truncate(tmp_path / "skipped.parquet")
    write_skipped(store, planned)
    assert pd.read_parquet(tmp_path / "skipped.parquet")["cell_id"].tolist() == [cell.cell_id]
    assert (tmp_path / "quarantine" / "skipped.parquet").exists() and len(messages) == 1
