"""`cfiguard info`: what the `.cfiguard` manifest of a file says, checksec-style.

This reads the manifest only: it tells what the rewriter recorded (version, policy, coverage, date), not
whether the file is still correctly hardened. `cfiguard verify` is the check. The reader is a few `struct`
reads of the section header table, bounds-checked, so that it works on any file without lief.
"""

from __future__ import annotations

import json
import struct

MANIFEST_SECTION = ".cfiguard"
MANIFEST_MAGIC = b"CFIGUARD"
INFO_SCHEMA, INFO_VERSION = "cfiguard-info", 1

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")


class Unusable(Exception):
    """The file cannot be examined at all: missing, unreadable, a directory, not ELF."""


def _section(data: bytes, name: str) -> bytes | None:
    """The bytes of the section called `name`, or None when there is no such section (or no section table)."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
        raise Unusable("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        return None  # 32-bit or big-endian: never hardened by cfiguard
    ident, _type, _mach, _ver, _entry, _phoff, shoff, _flags, _ehsz, _phes, _phn, shes, shnum, shstrndx = (
        _EHDR.unpack_from(data)
    )
    if not shoff or not shnum or shes != _SHDR.size or shstrndx >= shnum:
        return None
    if shoff + shnum * _SHDR.size > len(data):
        return None
    shdrs = [_SHDR.unpack_from(data, shoff + k * _SHDR.size) for k in range(shnum)]
    str_off, str_size = shdrs[shstrndx][4], shdrs[shstrndx][5]
    if str_off + str_size > len(data):
        return None
    strtab = data[str_off : str_off + str_size]
    want = name.encode()
    for sh in shdrs:
        end = strtab.find(b"\0", sh[0])
        if sh[0] < len(strtab) and strtab[sh[0] : end if end >= 0 else None] == want:
            off, size = sh[4], sh[5]
            return data[off : off + size] if off + size <= len(data) else None
    return None


def read_manifest(data: bytes) -> dict | None:
    """The manifest dict, or None when the file carries no `.cfiguard` section. Raises Unusable for non-ELF
    data and ValueError for a `.cfiguard` section that is not a valid manifest."""
    raw = _section(data, MANIFEST_SECTION)
    if raw is None:
        return None
    if not raw.startswith(MANIFEST_MAGIC):
        raise ValueError(".cfiguard does not start with CFIGUARD")
    try:
        m = json.loads(raw[len(MANIFEST_MAGIC) :].decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"manifest is not valid JSON: {e}") from None
    if not isinstance(m, dict):
        raise ValueError("manifest is not a JSON object")
    return m


def _mode(m: dict) -> str:
    """`enforce` (a violation aborts: every cfiguard so far) unless the manifest says otherwise."""
    if isinstance(m.get("mode"), str):
        return m["mode"]
    if m.get("audit") is True:
        return "audit"
    return "enforce"


def info(path: str) -> dict:
    """One file's summary. `status` is `hardened`, `not hardened`, `invalid manifest` or `unusable`."""
    rec: dict = {
        "path": path,
        "status": "unusable",
        "hardened": False,
        "tool_version": None,
        "policy": None,
        "coverage": None,
        "date": None,
        "mode": None,
        "manifest_format": None,
        "error": None,
    }
    try:
        with open(path, "rb") as f:
            data = f.read()
        m = read_manifest(data)
    except IsADirectoryError:
        rec["error"] = "is a directory"
        return rec
    except OSError as e:
        rec["error"] = e.strerror or str(e)
        return rec
    except Unusable as e:
        rec["error"] = str(e)
        return rec
    except ValueError as e:
        rec.update(status="invalid manifest", error=str(e))
        return rec
    if m is None:
        rec["status"] = "not hardened"
        return rec
    cov = m.get("coverage")
    if isinstance(cov, dict) and all(isinstance(cov.get(k), int) for k in ("found", "guarded", "safe")):
        cov = {k: cov.get(k) for k in ("found", "guarded", "safe", "unguarded")}
    else:
        cov = None  # written by a cfiguard older than the coverage field
    rec.update(
        status="hardened",
        hardened=True,
        tool_version=m.get("version"),
        policy=m.get("policy"),
        coverage=cov,
        date=m.get("date"),
        mode=_mode(m),
        manifest_format=m.get("format"),
    )
    return rec


def coverage_text(cov: dict | None) -> str:
    if cov is None:
        return "-"
    protected = cov["guarded"] + cov["safe"]
    if not cov["found"]:
        return "no sites"
    return f"{100 * protected / cov['found']:.1f}% ({protected}/{cov['found']})"


def render_text(records: list[dict]) -> str:
    """A checksec-style table: one row per file."""
    head = ("FILE", "CFI", "VERSION", "POLICY", "COVERAGE", "MODE", "DATE")
    rows = [head]
    for r in records:
        cfi = {"hardened": "yes", "not hardened": "no"}.get(r["status"], r["status"])
        rows.append(
            (
                r["path"],
                cfi,
                r["tool_version"] or "-",
                r["policy"] or "-",
                coverage_text(r["coverage"]) if r["hardened"] else "-",
                r["mode"] or "-",
                r["date"] or ("not recorded" if r["hardened"] else "-"),
            )
        )
    widths = [max(len(str(row[k])) for row in rows) for k in range(len(head))]
    return "".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def render_json(records: list[dict], version: str) -> str:
    doc = {
        "schema": INFO_SCHEMA,
        "version": INFO_VERSION,
        "tool": {"name": "cfiguard", "version": version},
        "files": records,
    }
    return json.dumps(doc, indent=2) + "\n"
