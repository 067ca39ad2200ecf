"""`cfiguard wheel`: harden every ELF file of a wheel, in the manner of `auditwheel repair`.

Every member whose bytes start with the ELF magic (extension modules, vendored libraries in `<pkg>.libs/`,
executables under `.data/scripts/`) is hardened with `api.harden`. The new wheel has the same file name, the
same members in the same order with the same timestamps and permission bits, and a `RECORD` whose hashes and
sizes are those of the new contents; RECORD signatures (`RECORD.jws`, `RECORD.p7s`) no longer match and are
dropped, as `wheel` tools do when they change a wheel.

A member that cannot be hardened (refused input, unguarded sites under --strict, an output that fails
verification) makes the whole command fail and write nothing, unless `skip_unhardenable`: then the member
is kept as it was and listed. Members already hardened by cfiguard are kept as they are.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

from cfiguard.errors import InputError, OutputError
from cfiguard.integrations.batch import Job, Outcome, harden_many
from cfiguard.integrations.manifest import read_manifest

RECORD_RE = re.compile(r"^[^/]+\.dist-info/RECORD$")
SIGNATURES = ("RECORD.jws", "RECORD.p7s")


@dataclass
class Member:
    name: str
    status: str  # hardened, already hardened, kept (could not be hardened, --skip-unhardenable), failed
    outcome: Outcome | None = None


@dataclass
class WheelResult:
    input: str
    output: str | None  # None: nothing written
    members: list[Member] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: written; 1: some member cannot be hardened, nothing written (the wheel itself was usable)."""
        return 0 if self.output is not None else 1

    def count(self, status: str) -> int:
        return sum(1 for m in self.members if m.status == status)


def record_hash(data: bytes) -> str:
    """The RECORD hash of `data` (PEP 376/427: urlsafe base64 sha256, no padding)."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _rewrite_record(record: bytes, changed: dict[str, bytes], dropped: set[str]) -> bytes:
    rows = list(csv.reader(io.StringIO(record.decode("utf-8"))))
    seen = set()
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for row in rows:
        if not row or row[0] in dropped:
            continue
        if row[0] in changed:
            seen.add(row[0])
            data = changed[row[0]]
            row = [row[0], record_hash(data), str(len(data))]
        w.writerow(row)
    for name in sorted(set(changed) - seen):  # a member RECORD forgot: list it now
        w.writerow([name, record_hash(changed[name]), str(len(changed[name]))])
    return out.getvalue().encode("utf-8")


def _open(path: str) -> zipfile.ZipFile:
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory")
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputError(f"{path}: No such file or directory") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from None
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a wheel (not a zip archive)") from None


def repair_wheel(
    path: str,
    out_dir: str,
    strict: bool = False,
    verify: bool = True,
    skip_unhardenable: bool = False,
    workers: int = 1,
    cache: str | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> WheelResult:
    """Write `out_dir/<same name>.whl` with every ELF member hardened. Raises InputError / OutputError
    (exit 2) for an unusable wheel or output directory; a member that cannot be hardened is in the result."""
    if not path.endswith(".whl"):
        raise InputError(f"{path}: not a wheel (the name does not end in .whl)")
    if not os.path.isdir(out_dir):
        raise OutputError(f"{out_dir}: output directory does not exist")
    target = os.path.join(out_dir, os.path.basename(path))
    if os.path.exists(target) and os.path.samefile(target, path):
        raise InputError(f"{target}: output would overwrite the input wheel (choose another -o directory)")
    result = WheelResult(path, None)
    with _open(path) as zin, tempfile.TemporaryDirectory(prefix="cfiguard-wheel-") as tmp:
        infos = zin.infolist()
        records = [i.filename for i in infos if RECORD_RE.match(i.filename)]
        if len(records) != 1:
            raise InputError(f"{path}: not a wheel ({len(records)} .dist-info/RECORD files, expected 1)")
        record_name = records[0]
        dist_info = record_name.rsplit("/", 1)[0] + "/"
        try:
            contents = {i.filename: zin.read(i) for i in infos if not i.is_dir()}
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise InputError(f"{path}: corrupt wheel ({e})") from None
        jobs: list[Job] = []
        names: list[str] = []
        for k, info in enumerate(infos):
            data = contents.get(info.filename)
            if data is None or not data.startswith(b"\x7fELF") or info.filename.startswith(dist_info):
                continue
            try:
                hardened = read_manifest(data) is not None
            except ValueError:
                hardened = False  # a broken .cfiguard section: harden refuses it, and says why
            if hardened:
                result.members.append(Member(info.filename, "already hardened"))
                continue
            base = os.path.basename(info.filename)
            src, dst = os.path.join(tmp, "in", str(k), base), os.path.join(tmp, "out", str(k), base)
            os.makedirs(os.path.dirname(src))
            os.makedirs(os.path.dirname(dst))
            with open(src, "wb") as f:
                f.write(data)
            os.chmod(src, (info.external_attr >> 16) & 0o777 or 0o755)
            label = f"{os.path.basename(path)}: {info.filename}"
            jobs.append(Job(src, dst, strict=strict, verify=verify, cache=cache, label=label))
            names.append(info.filename)
        outcomes = harden_many(jobs, workers, on_done) if jobs else []
        changed: dict[str, bytes] = {}
        for job, name, o in zip(jobs, names, outcomes, strict=True):
            if o.exit_code == 0:
                with open(job.output, "rb") as f:
                    changed[name] = f.read()
                result.members.append(Member(name, "hardened", o))
            else:
                result.members.append(Member(name, "kept" if skip_unhardenable else "failed", o))
        if result.count("failed"):
            return result
        dropped = {dist_info + s for s in SIGNATURES}
        if changed:
            changed[record_name] = _rewrite_record(contents[record_name], changed, dropped)
        try:
            fd, tmp_whl = tempfile.mkstemp(prefix=".cfiguard-", suffix=".whl", dir=out_dir)
            os.close(fd)
        except OSError as e:
            raise OutputError(f"{out_dir}: cannot write: {e.strerror or e}") from None
        try:
            if not changed:  # nothing to harden: the same wheel, byte for byte
                shutil.copyfile(path, tmp_whl)
            else:
                _write_zip(tmp_whl, infos, contents, changed, dropped)
            os.chmod(tmp_whl, 0o644)
            os.replace(tmp_whl, target)
        except BaseException as e:
            if os.path.exists(tmp_whl):
                os.unlink(tmp_whl)
            if isinstance(e, OSError):
                raise OutputError(f"{target}: {e.strerror or e}") from None
            raise
        result.output = target
    return result


def _write_zip(
    dest: str, infos, contents: dict[str, bytes], changed: dict[str, bytes], dropped: set[str]
) -> None:
    """The original members, in order, with their timestamps and permission bits; changed contents swapped in."""
    with zipfile.ZipFile(dest, "w") as zout:
        for info in infos:
            if info.filename in dropped:
                continue
            zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            zi.external_attr, zi.create_system = info.external_attr, info.create_system
            zi.compress_type = info.compress_type
            data = b"" if info.is_dir() else changed.get(info.filename, contents[info.filename])
            zout.writestr(zi, data)
