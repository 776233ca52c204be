"""Keras 0.3's ``keras.utils.data_utils``: :func:`get_file`, the dataset cache its
example scripts download through."""

from __future__ import annotations

import os
import tarfile
import urllib.request
from pathlib import Path


def datasets_directory() -> Path:
    """Where downloads are kept: ``~/.keras/datasets`` (where Keras 0.3 scripts already
    keep theirs), or ``/tmp/.keras/datasets`` when the home directory is not writable."""
    base = Path(os.path.expanduser(os.path.join("~", ".keras")))
    if not os.access(base if base.exists() else base.parent, os.W_OK):
        base = Path("/tmp") / ".keras"
    directory = base / "datasets"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def get_file(fname: str, origin: str, untar: bool = False) -> str:
    """The path of ``fname`` in :func:`datasets_directory`, downloaded from ``origin``
    (any URL ``urllib`` opens, ``file://`` too) unless it is there already.

    With ``untar``, ``origin`` is a ``.tar.gz`` archive, kept as ``fname.tar.gz`` and
    unpacked into the directory (only files and folders inside it: the archive's
    links, devices and paths out of the directory are refused); the path returned is
    ``fname`` there, the folder the archive holds (once it is there, the archive is not
    needed again).
    """
    directory = datasets_directory()
    unpacked = directory / fname
    if untar and unpacked.exists():
        return str(unpacked)
    path = directory / (f"{fname}.tar.gz" if untar else fname)
    if not path.exists():
        print("Downloading data from", origin, flush=True)
        partial = path.with_name(path.name + ".part")
        try:
            urllib.request.urlretrieve(origin, partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
    if not untar:
        return str(path)
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("get_file(untar=True) needs Python 3.11.4 or later")
    with tarfile.open(path) as archive:
        archive.extractall(directory, filter="data")
    return str(unpacked)
