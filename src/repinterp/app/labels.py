"""The inputs beside the images that must follow them: labels (a CSV file, an IDX labels
file, an ImageFolder's class folders), class names (a file or torchvision weights' own),
and the checks that they, and the class folders, match the model's classes.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from .formats import checked_path, idx_images_in, image_files, read_idx
from .models import torchvision_weights

__all__ = ["check_class_names", "check_folder_classes", "folder_classes", "load_class_names",
           "load_labels"]


def load_class_names(spec: str) -> list[str]:
    """Class names from a file (one per line, blank lines ignored; a name given twice is
    refused, naming both lines) or from a torchvision weights enum's
    ``meta["categories"]`` (nothing is downloaded)."""
    enum = torchvision_weights(spec)
    if enum is not None:
        return list(enum.meta["categories"])
    path = Path(spec)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path} does not exist (give a file with one class name per line "
                        "or a torchvision weights name)")
    path = checked_path(path, kind="file", what="class names file")
    names: list[str] = []
    first: dict[str, int] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = text.strip()
        if not name:
            continue
        if name in first:
            raise UserError(f"{path} line {line}: class name {name!r} is also on line "
                            f"{first[name]}; each class needs a name of its own")
        first[name] = line
        names.append(name)
    return names


def check_class_names(names: list[str] | None, classes: int, source: str) -> None:
    """Refuse class names that do not match the model's classes one for one."""
    if names is not None and classes and len(names) != classes:
        raise UserError(f"{source} has {len(names)} class names for a model with "
                        f"{classes} classes: give one name per class, in the model's order")


def folder_classes(data: str | os.PathLike | None) -> list[str] | None:
    """The class folders of an ImageFolder ``data`` (its subfolders, sorted: torchvision's
    ``ImageFolder`` order), or None for any other data (a flat folder, a file, an
    MNIST-style folder)."""
    if data is None:
        return None
    root = Path(data)
    if not root.is_dir() or idx_images_in(root) is not None:
        return None
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return None
    if any(e.is_file() and not e.name.startswith(".") for e in entries):
        return None
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    return folders or None


def _few(items: list[str], k: int = 4) -> str:
    shown = ", ".join(repr(i) for i in items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def check_folder_classes(data: str | os.PathLike | None, classes: int,
                         class_names: list[str] | None = None) -> None:
    """Refuse an ImageFolder ``data`` whose class folders are not the model's
    ``classes`` classes, naming the extra and the missing folders: folders named by
    class index (``0`` .. ``classes - 1``, when every folder is a number and not a class
    name), else with ``class_names`` one folder per class name, else one folder per
    class. Other data (a flat folder, a file, an MNIST-style folder) and ``classes`` 0
    (unknown) pass."""
    folders = folder_classes(data)
    if not folders or not classes:
        return
    names = list(class_names or [])
    if all(f.isdigit() for f in folders) and not set(folders) <= set(names):
        have = {int(f) for f in folders}
        extra = [f for f in folders if int(f) >= classes]
        missing = [str(i) for i in range(classes) if i not in have]
    elif names:
        extra = [f for f in folders if f not in names]
        missing = [n for n in names if n not in folders]
    elif len(folders) != classes:
        raise UserError(f"{data} has {len(folders)} class folders ({_few(folders)}) for a "
                        f"model with {classes} classes: give one folder per class, or "
                        "{param} to match them by name", param="class_names")
    else:
        return
    if extra or missing:
        parts = ([f"extra folder(s) {_few(extra)}"] if extra else []) + (
            [f"no folder for {_few(missing)}"] if missing else [])
        raise UserError(f"the class folders of {data} do not match the model's {classes} "
                        f"classes: {'; '.join(parts)}")


def _items_of(data: str | os.PathLike, names: list[str]) -> tuple[list[int] | None, int]:
    """The item numbers of images named ``names`` (:class:`ImageSource`'s naming: a
    folder's files by position in its sorted listing, unreadable ones included; rows of
    an array ``NAME[i]``; a one-image file 0), and the number of files of a folder
    (0 for other data); ``None`` when a name is none of these."""
    root = Path(data)
    position: dict[str, int] = {}
    if root.is_dir() and idx_images_in(root) is None:
        position = {str(f.relative_to(root)): k
                    for k, f in enumerate(image_files(root, warn=False))}
    items, by_position = [], False
    for n in names:
        row = re.fullmatch(r".*\[(\d+)\]", n)
        if n in position:
            items.append(position[n])
            by_position = True
        elif row:
            items.append(int(row.group(1)))
        elif not root.is_dir() and n == root.name:
            items.append(0)
        else:
            return None, 0
    return items, len(position) if by_position else 0


def load_labels(data: str | os.PathLike, names: list[str], spec: str | None = None,
                class_names: list[str] | None = None, *,
                classes: int | None = None) -> torch.Tensor | None:
    """Labels ``[N]`` (class indices; -1 where unknown) of the images ``names`` loaded
    from ``data``, or ``None`` when there are none.

    ``spec``: ``"none"``; a CSV file of ``path,label`` rows (a header row is allowed;
    ``path`` as the report names the image, i.e. relative to the folder; ``label`` a
    class index or a class name); an IDX labels file (one label per item of ``data``, in
    order: per file of a folder in sorted order, unreadable files included, or per array
    row; each image gets its own item's label, whatever was skipped or drawn); or
    ``None`` (default): the labels the data carries, i.e. an ImageFolder's class folders
    (class names when ``class_names`` lists every folder, else integer folder names,
    else the folders' sorted order, as torchvision's ``ImageFolder``) or the labels file
    beside MNIST-style IDX images.

    ``classes``: the model's number of classes (else ``len(class_names)`` when given);
    a label outside ``0 .. classes - 1`` is refused, naming its line, item or folder. A
    negative label is always refused.
    """
    if spec == "none":
        return None
    lookup = {n: i for i, n in enumerate(class_names or [])}
    bound = classes or len(lookup) or None
    span = f" (0..{bound - 1})" if bound else ""

    def checked(value: int, where: str) -> int:
        if value < 0 or (bound is not None and value >= bound):
            raise UserError(f"{where}: label {value} is not a class of the model{span}")
        return value

    def to_index(value: str, where: str) -> int:
        value = value.strip()
        if value in lookup:
            return lookup[value]
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"{where}: label {value!r} is neither a class index nor a "
                            "class name (pass {param})", param="class_names") from None
        return checked(number, where)

    if spec is not None:
        path = checked_path(spec, kind="file", what="labels file")
        if "idx" in path.name or "ubyte" in path.name:
            arr = read_idx(path)
            if arr.ndim != 1:
                raise UserError(f"{path} holds {arr.shape} labels, not one per image")
            items, files = _items_of(data, names)
            if items is None:
                if len(arr) != len(names):
                    raise UserError(f"{path} holds {len(arr)} labels for {len(names)} images "
                                    "whose items are unknown: give as many labels")
                items = list(range(len(names)))
            if files and len(arr) != files:
                raise UserError(f"{path} holds {len(arr)} labels for the {files} files of "
                                f"{data}: give one label per file, in sorted order")
            if items and max(items) >= len(arr):
                raise UserError(f"{path} holds {len(arr)} labels; item {max(items)} of "
                                f"{data} has none")
            got = arr[np.asarray(items, dtype=np.int64)].astype(np.int64)
            bad = np.flatnonzero((got < 0) | (got >= (bound or np.iinfo(np.int64).max)))
            if len(bad):
                checked(int(got[bad[0]]), f"{path} item {items[bad[0]]} ({names[bad[0]]})")
            return torch.from_numpy(got)
        import csv
        with open(path, newline="", encoding="utf-8-sig") as fh:     # a BOM is no name
            reader = csv.reader(fh)
            rows = [(reader.line_num, r) for r in reader if r]      # (line in the file, row)
        if rows and len(rows[0][1]) >= 2 and rows[0][1][1].strip().lower() == "label":
            rows = rows[1:]
        table: dict[str, int] = {}
        duplicates = 0
        for line, row in rows:
            if len(row) < 2:
                raise UserError(f"{path} line {line}: expected path,label")
            key = row[0].strip()
            duplicates += key in table
            table[key] = to_index(row[1], f"{path} line {line}")
        known = set(names)
        unmatched = [key for key in table if key not in known]
        if table and len(unmatched) == len(table):
            raise UserError(f"none of the {len(table)} paths in {path} names an image of "
                            f"the data (e.g. {unmatched[0]!r}; images are named like "
                            f"{names[0]!r})")
        if unmatched:
            warnings.warn(f"{len(unmatched)} row(s) of {path} name no image of the data "
                          f"(e.g. {unmatched[0]!r}); they are ignored", stacklevel=2)
        if duplicates:
            warnings.warn(f"{duplicates} duplicate row(s) in {path}; the last label of each "
                          "path is used", stacklevel=2)
        return torch.tensor([table.get(n, -1) for n in names], dtype=torch.long)
    root = Path(data)
    if root.is_dir():
        idx_file = idx_images_in(root)
        if idx_file is not None:
            lab = sorted(root.glob(idx_file.name.split("-images")[0] + "-labels-idx1*"))
            return load_labels(data, names, str(lab[0]), class_names, classes=classes) \
                if lab else None
        if not names or not all("/" in n for n in names):
            return None
        folders = [n.split("/", 1)[0] for n in names]
        distinct = folder_classes(root) or []
        if not set(folders) <= set(distinct):
            distinct = sorted(set(folders))
        if class_names and all(f in lookup for f in distinct):
            mapping = {f: lookup[f] for f in distinct}
        elif all(f.isdigit() for f in distinct):
            mapping = {f: checked(int(f), f"{root} class folder {f!r}") for f in distinct}
        else:
            mapping = {f: i for i, f in enumerate(distinct)}
        return torch.tensor([mapping[f] for f in folders], dtype=torch.long)
    return None
