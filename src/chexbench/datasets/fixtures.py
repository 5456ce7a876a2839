"""Native-layout fixtures built from *real* label rows with generated images (tests, demos).

The label files come from the ``torchxrayvision`` package, which ships the real CheXpert
train CSV, NIH ``Data_Entry_2017_v2020.csv``, ``BBox_List_2017.csv`` and the Indiana
report XMLs (``NLMCXR_reports.tgz``). The images are generated: image ``k`` written by a
fixture is a uniform grey of level :func:`fixture_level` ``(k)`` with a darker border, so
a test can tell which file a cached row came from.
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chexbench.core.atomic import atomic_path, atomic_write_text
from chexbench.core.errors import DataError
from chexbench.datasets.indiana import parse_report

REAL_FILES = {
    "chexpert": "chexpert_train.csv.gz",
    "nih": "Data_Entry_2017_v2020.csv.gz",
    "nih_boxes": "BBox_List_2017.csv.gz",
    "indiana": "NLMCXR_reports.tgz",
    "indiana_dicom": "nlmcxr_dicom_metadata.csv.gz",
    "indiana_tsne": "nlmcxr_tsne_pa.csv.gz",
}


def real_label_file(which: str) -> Path:
    """Path of a real label file shipped by torchxrayvision (without importing it)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "torchxrayvision is not installed (pip install torchxrayvision): it ships the real label files"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / REAL_FILES[which]
    if not path.is_file():
        raise DataError(f"real label file not found: {path}")
    return path


def fixture_level(k: int) -> int:
    """Grey level of the k-th generated image: distinct for k < 50, spaced by 5."""
    return 10 + 5 * (k % 50)


def write_image(path: Path, k: int, shape: tuple[int, int] = (48, 40)) -> None:
    """A uniform image (level of ``k``) with a 2-pixel darker border, as PNG or JPEG by suffix."""
    h, w = shape
    arr = np.full((h, w), fixture_level(k), dtype=np.uint8)
    arr[:2, :] = arr[-2:, :] = arr[:, :2] = arr[:, -2:] = fixture_level(k) // 2
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    with atomic_path(path) as tmp:
        Image.fromarray(arr, mode="L").save(
            tmp, format="JPEG" if jpeg else "PNG", **({"quality": 95} if jpeg else {})
        )


def write_chexpert_layout(
    out: Path, train_rows: pd.DataFrame, valid_rows: pd.DataFrame, name: str = "CheXpert-v1.0-small"
) -> Path:
    """``out/name/{train,valid}.csv`` from real rows (``valid_rows`` paths moved to ``valid/``) + images."""
    root = Path(out) / name
    root.mkdir(parents=True, exist_ok=True)
    train = train_rows.copy()
    valid = valid_rows.copy()
    for df, split in ((train, "train"), (valid, "valid")):
        rel = df["Path"].astype(str).str.split("/").str[1:].str.join("/")
        rel = rel.str.replace(r"^(train|valid)/", f"{split}/", regex=True)
        df["Path"] = name + "/" + rel
    k = 0
    for df in (train, valid):
        for p in df["Path"]:
            write_image(Path(out) / p, k)
            k += 1
    atomic_write_text(train.to_csv(index=False), root / "train.csv")
    atomic_write_text(valid.to_csv(index=False), root / "valid.csv")
    return root


def write_nih_layout(out: Path, rows: pd.DataFrame, test_patients: set[int], folders: int = 2) -> Path:
    """``out/Data_Entry_2017_v2020.csv``, official-format lists and PNGs in ``images_00N/images/``."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rows = rows.reset_index(drop=True)
    atomic_write_text(rows.to_csv(index=False), root / "Data_Entry_2017_v2020.csv")
    is_test = rows["Patient ID"].isin(test_patients)
    atomic_write_text("\n".join(rows["Image Index"][is_test]) + "\n", root / "test_list.txt")
    atomic_write_text("\n".join(rows["Image Index"][~is_test]) + "\n", root / "train_val_list.txt")
    for k, name in enumerate(rows["Image Index"]):
        write_image(root / f"images_{k % folders + 1:03d}" / "images" / name, k, (40, 40))
    return root


def real_indiana_reports(n: int | None = None) -> list[tuple[str, bytes]]:
    """(member name, XML bytes) of the real Indiana reports, sorted by name; the first ``n``."""
    out = []
    with tarfile.open(real_label_file("indiana")) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")), key=lambda m: m.name
        )
        for m in members[: n if n is not None else len(members)]:
            f = tar.extractfile(m)
            if f is not None:
                out.append((m.name, f.read()))
    return out


def write_indiana_layout(out: Path, reports: list[tuple[str, bytes]], as_tgz: bool = False) -> Path:
    """``out/ecgen-radiology/*.xml`` (or ``NLMCXR_reports.tgz``) and ``NLMCXR_png/<id>.png`` per image."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if as_tgz:
        with atomic_path(root / "NLMCXR_reports.tgz") as tmp, tarfile.open(tmp, "w:gz") as tar:
            for name, data in reports:
                info = tarfile.TarInfo(f"ecgen-radiology/{Path(name).name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, data in reports:
            (root / "ecgen-radiology").mkdir(exist_ok=True)
            with atomic_path(root / "ecgen-radiology" / Path(name).name) as tmp:
                Path(tmp).write_bytes(data)
    k = 0
    for name, data in reports:
        for img in parse_report(name, data)["images"]:
            write_image(root / "NLMCXR_png" / f"{img}.png", k, (44, 36))
            k += 1
    return root
