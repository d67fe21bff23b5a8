"""Activations written to disk as they are produced, and read back memory-mapped.

A capture with ``out=DIR`` writes, per layer, the rows of each batch to
``DIR/<layer>.npy.partial`` (a .npy file whose header is written last), records in
``DIR/manifest.json`` how many rows every file holds, and at the end writes each header,
renames each file to ``DIR/<layer>.npy``, saves ``DIR/labels.npy`` and marks the manifest
complete. A file is whole only when the manifest says so: an interrupted capture leaves a
manifest with ``"status": "running"``, which :func:`read` reports layer by layer, and
which ``capture(..., out=DIR, resume=True)`` continues from its last recorded row.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

FORMAT = "gpugraph.Activations/1"
MANIFEST = "manifest.json"
_HEADER = 128  # bytes reserved for every .npy header (magic, version, length, dict)


def file_name(layer: str) -> str:
    """A file name for a layer: module names keep their dots, other characters become _."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer) + ".npy"


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A .npy version 1.0 header of exactly _HEADER bytes."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    body_len = _HEADER - 10
    if len(text) + 1 > body_len:
        raise ValueError(f"array header too long for {shape}")
    body = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")


class Writer:
    """Appends each layer's rows to its partial file and keeps the manifest current."""

    def __init__(self, out, *, description: dict, resume: bool, overwrite: bool):
        self.dir = Path(out)
        self.description = description
        self.files: dict[str, BinaryIO] = {}
        self.layers: dict[str, dict] = {}
        self.rows = 0
        self._written = 0.0
        old = _read_manifest(self.dir) if (self.dir / MANIFEST).is_file() else None
        if old is not None and not (resume or overwrite):
            state = "a complete capture" if old.get("status") == "complete" else "an interrupted capture"
            raise ValueError(
                f"{self.dir} already holds {state}; pass overwrite=True to replace it"
                + ("" if old.get("status") == "complete" else ", or resume=True to continue it")
            )
        if resume and old is not None and old.get("status") == "complete":
            raise ValueError(f"{self.dir} holds a complete capture: there is nothing to resume")
        if overwrite and old is not None:
            for entry in old.get("layers", {}).values():
                for suffix in ("", ".partial"):
                    (self.dir / (entry["file"] + suffix)).unlink(missing_ok=True)
            (self.dir / "labels.npy").unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.skip = 0
        if resume and old is not None:
            self.layers = old["layers"]
            self.rows = self.skip = int(old["rows"])
            for name, entry in self.layers.items():  # cut anything written after the last record
                path = self.dir / (entry["file"] + ".partial")
                size = _HEADER + self.rows * int(np.prod(entry["shape"][1:])) * np.dtype(entry["dtype"]).itemsize
                if not path.is_file() or path.stat().st_size < size:
                    raise ValueError(
                        f"{path} is shorter than its manifest says; re-run the capture with overwrite=True"
                    )
                f = open(path, "r+b")  # noqa: SIM115 (held open across batches; close() closes it)
                f.truncate(size)
                f.seek(size)
                self.files[name] = f

    def write(self, name: str, rows: torch.Tensor) -> None:
        array = rows.detach().cpu().numpy()
        if name not in self.files:
            entry = {"file": file_name(name), "dtype": array.dtype.str, "shape": [0, *array.shape[1:]]}
            if entry["file"] in {e["file"] for e in self.layers.values()}:
                raise ValueError(f"layers {name!r} and another map to the same file {entry['file']}")
            self.layers[name] = entry
            f = open(self.dir / (entry["file"] + ".partial"), "wb")  # noqa: SIM115 (held open; close() closes it)
            f.write(b"\0" * _HEADER)
            self.files[name] = f
        entry = self.layers[name]
        if list(array.shape[1:]) != entry["shape"][1:] or array.dtype.str != entry["dtype"]:
            raise ValueError(
                f"layer {name!r} gave rows of shape {array.shape[1:]} and dtype {array.dtype}, "
                f"earlier batches {tuple(entry['shape'][1:])} and {entry['dtype']}"
            )
        self.files[name].write(np.ascontiguousarray(array).tobytes())

    def commit(self, rows: int, force: bool = False) -> None:
        """Record that every file holds ``rows`` rows (at most once a second unless forced)."""
        self.rows = rows
        if force or time.monotonic() - self._written > 1.0:
            for f in self.files.values():
                f.flush()
            self._manifest("running")
            self._written = time.monotonic()

    def finish(self, order: list[str], labels, final: list[str]) -> None:
        for name, f in self.files.items():
            entry = self.layers[name]
            entry["shape"][0] = self.rows
            f.seek(0)
            f.write(_header(np.dtype(entry["dtype"]), tuple(entry["shape"])))
            f.close()
            os.replace(self.dir / (entry["file"] + ".partial"), self.dir / entry["file"])
        self.layers = {name: self.layers[name] for name in order}
        if labels is not None:
            tmp = self.dir / "labels.tmp.npy"
            np.save(tmp, np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels), allow_pickle=False)
            os.replace(tmp, self.dir / "labels.npy")
        self.description["final"] = list(final)
        self._manifest("complete", labels=labels is not None)

    def close(self) -> None:
        for f in self.files.values():
            if not f.closed:
                f.close()

    def _manifest(self, status: str, labels: bool = False) -> None:
        data = {
            "format": FORMAT,
            "status": status,
            "rows": self.rows,
            "layers": self.layers,
            "labels": "labels.npy" if labels else None,
            **self.description,
        }
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.dir / MANIFEST)


def free_bytes(out) -> int:
    path = Path(out)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _read_manifest(directory: Path) -> dict:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{directory / MANIFEST} cannot be read ({exc})") from exc
    if data.get("format") != FORMAT:
        raise ValueError(f"{directory} holds {data.get('format')!r}, not a gpugraph capture ({FORMAT})")
    return data


def read(directory) -> tuple[dict[str, torch.Tensor], Any, list[str]]:
    """(layers, labels, final) of a capture written with ``out=directory``, the tensors
    memory-mapped copy-on-write (:meth:`gpugraph.Activations.load` wraps them)."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise FileNotFoundError(f"{directory} holds no {MANIFEST}: it is not the out= folder of a capture")
    data = _read_manifest(directory)
    if data["status"] != "complete":
        raise ValueError(
            f"the capture into {directory} was interrupted after {data['rows']} samples: layers "
            f"{', '.join(data['layers']) or '(none yet)'} are incomplete; continue it with "
            f"capture(model, data, out={str(directory)!r}, resume=True) on the same data in the same "
            "order, or start again with overwrite=True"
        )
    layers = {
        name: torch.from_numpy(np.load(directory / entry["file"], mmap_mode="c"))
        for name, entry in data["layers"].items()
    }
    labels = None
    if data.get("labels"):
        labels = np.load(directory / data["labels"], allow_pickle=False)
        labels = torch.from_numpy(labels) if labels.dtype.kind in "iub" else labels
    return layers, labels, data.get("final", [])
