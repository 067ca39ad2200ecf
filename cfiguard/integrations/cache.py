"""A content-addressed cache of hardened outputs (`--cache DIR` or `CFIGUARD_CACHE`), in the manner of ccache.

Hardening is a pure function of the input bytes, the cfiguard code and the options (the output is
byte-identical across runs), so its result can be reused:

    key = sha256("cfiguard-cache-1", cfiguard version, digest of cfiguard's own code, versions of lief,
                 capstone and keystone, the options, SOURCE_DATE_EPOCH, sha256(input bytes))

The digest of the code makes a development checkout (whose version number does not change with every edit)
never reuse an output made by different code. An entry is `DIR/1/<key[:2]>/<key>/` with `output`,
`report.json` and `meta.json` (the output's sha256, checked on every hit: a damaged entry is a miss).
Entries are written to a temporary directory and renamed into place, so concurrent writers (a `--jobs` pool,
several builds sharing one directory) never see half an entry.

Trust: a hit is copied as it is, without hardening again. Share a cache directory only with users and
machines you trust to write it, exactly as you would a ccache or a build cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

ENV = "CFIGUARD_CACHE"
LAYOUT = "1"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of cfiguard's own source files (.py, .s) and of the versions of the libraries it builds on."""
    from importlib import metadata

    import cfiguard

    h = hashlib.sha256()
    root = Path(cfiguard.__file__).resolve().parent
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".s") and "__pycache__" not in p.parts and p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    for dist in ("lief", "capstone", "keystone-engine"):
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v = "?"
        h.update(f"{dist}={v}\0".encode())
    return h.hexdigest()


def cache_key(data: bytes, options: dict) -> str:
    from cfiguard import __version__

    h = hashlib.sha256()
    for part in (
        "cfiguard-cache-1",
        __version__,
        code_fingerprint(),
        json.dumps(options, sort_keys=True),
        os.environ.get("SOURCE_DATE_EPOCH", ""),
        hashlib.sha256(data).hexdigest(),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


class Cache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _entry(self, key: str) -> Path:
        return self.root / LAYOUT / key[:2] / key

    def get(self, key: str) -> tuple[bytes, dict] | None:
        """(output bytes, report document) for `key`, or None (absent or damaged: a damaged entry is
        removed, so that the next store replaces it)."""
        entry = self._entry(key)
        if not entry.is_dir():
            return None
        try:
            meta = json.loads((entry / "meta.json").read_text())
            data = (entry / "output").read_bytes()
            report = json.loads((entry / "report.json").read_text())
            if not isinstance(meta, dict) or meta.get("output_sha256") != hashlib.sha256(data).hexdigest():
                raise ValueError("output does not match meta.json")
            if not isinstance(report, dict) or not {"counts", "functions"} <= report.keys():
                raise ValueError("not a harden report")
        except (OSError, ValueError):
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return data, report

    def put(self, key: str, data: bytes, report: dict) -> None:
        """Store an entry; raises OSError when the directory cannot be written. An existing entry wins."""
        entry = self._entry(key)
        if entry.is_dir():
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        try:
            (tmp / "output").write_bytes(data)
            (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
            meta = {"output_sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            (tmp / "meta.json").write_text(json.dumps(meta) + "\n")  # last: an entry without it is a miss
            try:
                os.rename(tmp, entry)
            except OSError:
                if not entry.is_dir():  # another writer got there first: theirs is as good as ours
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
