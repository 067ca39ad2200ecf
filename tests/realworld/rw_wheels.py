"""The wheel sweep: every ELF file (`*.so*`: extension modules and the libraries auditwheel bundles in
`PKG.libs/`) of the manylinux wheels of numpy, Pillow, lxml and orjson, hardened and re-checked with
`cfiguard verify`; then each package is installed twice into fresh venvs, the hardened files are swapped into
the second one, and the two are compared (exit code, stdout, stderr):

  per file  an extension module is imported by its dotted name, a bundled library is loaded with
            `ctypes.CDLL(path)` (in the venv with the hardened files, compared with the unhardened venv);
            /proc/self/maps must show the hardened copy
  package   a small workload per package (WORKLOADS: linear algebra, FFT, random generators, image codecs
            and filters, XML parsing, XPath, XSLT, JSON round trips), with every hardened file of the
            package swapped in at once; the workload's maps say which hardened files it used

Classification as in rw_sweep.py: a file is `identical` (passes the gate) when harden exits 0, `cfiguard
verify` exits 0, its report has 0 unguarded sites, and both its own check and its package's workload behave
the same. A file that does not verify keeps its original in the hardened venv (nothing was written for it).

The wheels come from PyPI with the ordinary client: `pip download --only-binary=:all: --no-deps numpy pillow
lxml orjson -d DIR` (done here unless --wheels names a directory that already has them), for the running
interpreter (the venvs use it too).

Standalone: python tests/realworld/rw_wheels.py --out DIR [--wheels DIR] [--packages numpy,orjson]
            [--no-functional]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rw_support import clean_env, harden, is_elf, jobs, write_json  # noqa: E402
from rw_sweep import Run, _decode, first_difference, gate_row, keep, run_captured, summarize  # noqa: E402

PACKAGES = ["numpy", "pillow", "lxml", "orjson"]
IMPORT_NAME = {"numpy": "numpy", "pillow": "PIL", "lxml": "lxml", "orjson": "orjson"}
RUN_TIMEOUT = 120.0

WORKLOADS: dict[str, str] = {
    "numpy": """
import numpy as np
print(np.__version__)
rng = np.random.default_rng(12345)
a = rng.standard_normal((60, 60))
print(round(float(np.linalg.det(a @ a.T + np.eye(60))), 3) > 0, round(float(np.linalg.norm(np.linalg.inv(a) @ a - np.eye(60))), 6) < 1e-8)
w = np.linalg.eigvalsh(a + a.T); print(w.shape, round(float(w.sum()), 6))
u, s, vt = np.linalg.svd(a); print(round(float(s.max()), 6), np.allclose(u @ np.diag(s) @ vt, a))
print(np.round(np.linalg.solve(a[:5, :5], np.arange(5.0)), 6).tolist())
f = np.fft.rfft(np.sin(np.linspace(0, 40 * np.pi, 4096))); print(int(np.argmax(np.abs(f))), round(float(np.abs(f).sum()), 3))
print(np.fft.ifft(np.fft.fft(np.arange(16.0))).real.round(9).tolist()[:4])
for bg in (np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64):
    g = np.random.Generator(bg(7)); print(bg.__name__, g.integers(0, 1000, 5).tolist(), round(float(g.normal()), 9))
print(np.random.RandomState(3).randint(0, 100, 6).tolist(), np.random.RandomState(3).gamma(2.0, size=2).round(9).tolist())
x = rng.integers(0, 10**6, 100000); print(int(np.sort(x)[500]), int(np.argsort(x, kind='stable')[7]), int(np.unique(x).size))
print(np.einsum('ij,jk->ik', a[:3, :4], a[:4, :2]).round(6).tolist())
print(np.datetime64('2026-01-01') + np.arange(3), np.array(['b', 'a'], dtype=np.dtypes.StringDType()).tolist())
print(np.polynomial.Polynomial([1, 2, 3]).roots().round(9).tolist(), np.ma.masked_less(np.arange(6), 2).sum())
print(np.sum(np.arange(10**6, dtype=np.float64) ** 0.5).round(3), np.exp(np.linspace(-5, 5, 11)).round(6).tolist()[:3])
""",
    "pillow": """
import io, hashlib
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps, ImageChops, features
im = Image.new('RGB', (256, 192), (20, 40, 60))
d = ImageDraw.Draw(im)
for i in range(0, 256, 16):
    d.line((i, 0, 255 - i, 191), fill=(i, 255 - i, 128), width=3)
d.ellipse((40, 30, 200, 160), outline=(255, 255, 0), width=4)
d.text((10, 10), 'cfiguard', fill=(255, 255, 255), font=ImageFont.load_default(size=20))
print(hashlib.sha256(im.tobytes()).hexdigest())
for f in (ImageFilter.GaussianBlur(3), ImageFilter.FIND_EDGES, ImageFilter.UnsharpMask(), ImageFilter.MedianFilter(5)):
    print(type(f).__name__, hashlib.sha256(im.filter(f).tobytes()).hexdigest()[:16])
print(hashlib.sha256(im.resize((97, 61), Image.LANCZOS).rotate(33, expand=True).tobytes()).hexdigest()[:16])
print(hashlib.sha256(ImageOps.equalize(im.convert('L')).tobytes()).hexdigest()[:16], ImageChops.difference(im, im.transpose(Image.FLIP_LEFT_RIGHT)).getbbox())
for fmt, kw in (('PNG', {}), ('JPEG', {'quality': 85}), ('WEBP', {'quality': 80}), ('TIFF', {'compression': 'tiff_lzw'}), ('JPEG2000', {}), ('GIF', {}), ('BMP', {})):
    b = io.BytesIO(); im.save(b, fmt, **kw); b.seek(0)
    back = Image.open(b); back.load()
    print(fmt, back.size, back.mode, hashlib.sha256(back.tobytes()).hexdigest()[:16])
try:
    b = io.BytesIO(); im.save(b, 'AVIF', quality=60); b.seek(0); back = Image.open(b); back.load(); print('AVIF', back.size)
except Exception as e:
    print('AVIF', type(e).__name__)
from PIL import ImageCms, ImageMath, ImageMorph
p = ImageCms.createProfile('sRGB'); print(ImageCms.getProfileDescription(p).strip())
print(ImageCms.profileToProfile(im, p, ImageCms.createProfile('LAB'), outputMode='LAB').getpixel((5, 5)))
print(ImageMath.lambda_eval(lambda a: a['x'] * 2 + 1, x=im.convert('L')).getextrema())
print(ImageMorph.MorphOp(op_name='edge').apply(im.convert('L').point(lambda v: 255 if v > 100 else 0))[0])
print(features.check('freetype2'), features.check('littlecms2'), features.check('webp'), features.check('jpg'), features.check('zlib'))
""",
    "lxml": """
from lxml import etree, objectify, html, builder, sax
from lxml.html import diff
xml = b'<root xmlns:a="urn:a">' + b''.join(b'<item id="%d" a:k="v%d"><n>%d</n><t>text %d &amp; more</t></item>' % (i, i % 7, i * i, i) for i in range(500)) + b'</root>'
r = etree.fromstring(xml)
print(len(r), r.xpath('sum(//n) div count(//n)'), r.xpath('//item[@id mod 97 = 0]/@id'), len(r.xpath('//*[@a:k="v3"]', namespaces={'a': 'urn:a'})))
print(etree.tostring(r[3], method='c14n'), etree.tostring(r[4], pretty_print=True).decode().count('\\n'))
xslt = etree.XSLT(etree.XML(b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><xsl:template match="/"><out><xsl:for-each select="//item[position() &lt; 4]"><v><xsl:value-of select="n * 2"/></v></xsl:for-each></out></xsl:template></xsl:stylesheet>'))
print(str(xslt(etree.ElementTree(r))).strip())
print(etree.XMLSchema(etree.XML(b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="a" type="xs:int"/></xs:schema>')).validate(etree.XML(b'<a>12</a>')))
for ev, el in etree.iterparse(__import__('io').BytesIO(xml), tag='item'):
    if el.get('id') == '250': print('iterparse', el.findtext('n')); break
o = objectify.fromstring(b'<r><a>1</a><a>2</a><b>x</b><c>2.5</c></r>'); print(o.a * 10, o.a[1] + 1, o.b.text, o.c * 2)
E = builder.ElementMaker(); print(etree.tostring(E.html(E.body(E.p('hi', id='x')))))
doc = html.fromstring('<html><body><p class="a">Hello <b>world</b></p><a href="/x">l</a></body></html>'); doc.make_links_absolute('http://e.org/')
print(doc.text_content(), [l for l in doc.iterlinks()][0][2], html.tostring(doc.find('.//p')))
print(diff.htmldiff('<p>a b c</p>', '<p>a x c</p>'))
h = sax.ElementTreeContentHandler(); sax.saxify(etree.fromstring(b'<q><w>1</w></q>'), h); print(etree.tostring(h.etree))
""",
    "orjson": """
import orjson, datetime, dataclasses, enum, uuid
class C(enum.Enum):
    A = 1
@dataclasses.dataclass
class D:
    x: int
    y: list
data = {'ints': list(range(-50, 50)), 'f': [1.5, -0.0, 1e300, 3.141592653589793], 's': 'h\\u00e9llo \\u2603 \\U0001f600' * 3,
        'n': None, 't': True, 'nested': [{'k%d' % i: [i, str(i), {'d': i / 7}]} for i in range(200)],
        'dt': datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc), 'date': datetime.date(2020, 2, 29),
        'e': C.A, 'dc': D(3, [1, 2]), 'u': uuid.UUID('12345678123456781234567812345678'), 'big': 2**63 - 1}
b = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
print(len(b), __import__('hashlib').sha256(b).hexdigest())
back = orjson.loads(b); print(back['s'][:8], back['dt'], back['nested'][199], back['big'], back['f'])
print(orjson.dumps({1: 2, 'a': [1.0, 2]}, option=orjson.OPT_NON_STR_KEYS))
for bad in (b'{', b'[1,]', b'"\\\\x"', b'\\xff'):
    try:
        orjson.loads(bad)
    except orjson.JSONDecodeError as e:
        print('err', str(e)[:40])
print(orjson.loads(orjson.dumps([[[[[[[[1]]]]]]]] * 100))[99], orjson.Fragment(b'[1]') is not None)
""",
}


def download(dest: Path, packages: list[str]) -> list[Path]:
    """The packages' wheels in dest (from PyPI with pip, unless they are there already)."""
    dest.mkdir(parents=True, exist_ok=True)

    def have() -> dict[str, Path]:
        got = {}
        for w in dest.glob("*.whl"):
            got[w.name.split("-", 1)[0].lower()] = w
        return got

    missing = [p for p in packages if p not in have()]
    if missing:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--only-binary=:all:",
                "--no-deps",
                *missing,
                "-d",
                str(dest),
            ],
            check=True,
        )
    got = have()
    return [got[p] for p in packages if p in got]


def elf_members(unpacked: Path) -> list[Path]:
    """The ELF `*.so*` files of an unpacked wheel, relative to it."""
    out = []
    for p in sorted(unpacked.rglob("*")):
        if p.is_file() and (p.name.endswith(".so") or ".so." in p.name) and is_elf(p):
            out.append(p.relative_to(unpacked))
    return out


def module_name(rel: Path) -> str | None:
    """Dotted import name of an extension module (None for a bundled library)."""
    if rel.parts[0].endswith(".libs"):
        return None
    stem = rel.name.split(".", 1)[0]
    return ".".join([*rel.parts[:-1], stem])


def make_venv(dest: Path, wheel: Path) -> Path:
    """A fresh venv of the running interpreter with `wheel` installed (no index, no dependencies);
    returns its site-packages."""
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    py = dest / "bin" / "python"
    # The running interpreter's pip installs into the venv's site-packages through --target-free --prefix.
    sp = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--quiet",
         "--target", str(sp), str(wheel)],
        check=True,
    )  # fmt: skip
    return sp


MAPS_TAIL = "\nimport os as _o\nopen(_o.environ['RW_MAPS_OUT'], 'w').write(open('/proc/self/maps').read())\n"


def run_py(py: Path, code: str, cwd: Path, maps: Path) -> tuple[Run, str]:
    env = clean_env(
        {"LC_ALL": "C.UTF-8", "RW_MAPS_OUT": str(maps), "PYTHONHASHSEED": "0"},
        drop=("LD_LIBRARY_PATH", "LD_PRELOAD"),
    )
    if maps.exists():
        maps.unlink()
    r = run_captured([str(py), "-c", code + MAPS_TAIL], cwd, env, timeout=RUN_TIMEOUT)
    return r, maps.read_text() if maps.exists() else ""


def compare(orig_py: Path, hard_py: Path, code: str, work: Path, orig_sp: Path, hard_sp: Path) -> dict:
    cwd = work / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    a, _ = run_py(orig_py, code, cwd, work / "maps-a")
    b, maps = run_py(hard_py, code, cwd, work / "maps-b")
    # Paths of the two venvs differ: compare with the hardened venv's paths replaced by the original's.
    rb = Run(
        b.rc,
        b.stdout.replace(str(hard_sp).encode(), str(orig_sp).encode()),
        b.stderr.replace(str(hard_sp).encode(), str(orig_sp).encode()),
    )
    mapped = sorted(
        {
            ln.split(None, 5)[5]
            for ln in maps.splitlines()
            if len(ln.split(None, 5)) == 6 and ln.split(None, 5)[5].startswith(str(hard_sp))
        }
    )
    res: dict = {"rc": [a.rc, b.rc], "mapped": [str(Path(m).relative_to(hard_sp)) for m in mapped]}
    violation = b"cfiguard: CFI violation" in b.stderr
    if a.key() == rb.key() and not violation:
        return {**res, "outcome": "identical"}
    again, _ = run_py(orig_py, code, cwd, work / "maps-a")
    if again.key() != a.key() and a.rc == b.rc and not violation:
        return {**res, "outcome": "identical", "note": "nondeterministic output; exit codes equal"}
    import signal

    if violation:
        cause = "CFI violation"
    elif b.rc is not None and b.rc < 0:
        cause = f"killed by {signal.Signals(-b.rc).name}"
    elif b.rc is None:
        cause = "hardened timed out"
    elif b.rc != a.rc:
        cause = "exit code differs"
    else:
        cause = "output differs"
    return {
        **res,
        "outcome": "failed",
        "cause": cause,
        "detail": {
            "stdout": first_difference(a.stdout, rb.stdout) if a.stdout != rb.stdout else "same",
            "stderr": first_difference(a.stderr, rb.stderr) if a.stderr != rb.stderr else "same",
            "original_stderr": _decode(a.stderr),
            "hardened_stderr": _decode(b.stderr),
        },
    }


def file_check(rel: Path, sp: Path) -> str:
    mod = module_name(rel)
    if mod:
        return f"import importlib; m = importlib.import_module({mod!r}); print(m.__name__, len(dir(m)) > 0)"
    return f"import ctypes; ctypes.CDLL({str(sp / rel)!r}); print('loaded')"


def sweep_wheel(
    wheel: Path, pkg: str, out: Path, njobs: int, functional: bool, progress
) -> tuple[list[dict], dict]:
    work = out / "work" / pkg
    if work.exists():
        shutil.rmtree(work)
    unpacked, hardened = work / "unpacked", work / "hardened"
    unpacked.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(unpacked)
    members = elf_members(unpacked)
    t0 = time.monotonic()

    def one(rel: Path) -> dict:
        dst = hardened / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        rep = work / "reports" / (str(rel).replace("/", "__") + ".json")
        rep.parent.mkdir(parents=True, exist_ok=True)
        h = harden(unpacked / rel, dst, rep)
        row = gate_row(f"{pkg}:{rel}", str(rel), h, dst)
        row.update(size=(unpacked / rel).stat().st_size, wheel=wheel.name, package=pkg, report_file=str(rep))
        if progress:
            progress(row)
        return row

    with ThreadPoolExecutor(njobs) as pool:
        rows = list(pool.map(one, members))
    pkg_info: dict = {"wheel": wheel.name, "files": len(rows), "harden_seconds": round(time.monotonic() - t0)}
    if not functional:
        for r in rows:
            if r.pop("gate_ok", False):
                r.update(outcome="identical", note="no functional check (--no-functional)")
        return rows, pkg_info
    t1 = time.monotonic()
    orig_sp = make_venv(work / "venv-orig", wheel)
    hard_sp = make_venv(work / "venv-hard", wheel)
    swapped = []
    for r in rows:
        rel = Path(r["real"])
        if (hardened / rel).exists() and r.get("harden", {}).get("rc") == 0:
            shutil.copy2(hardened / rel, hard_sp / rel)
            swapped.append(str(rel))
    pkg_info["swapped"] = len(swapped)
    orig_py, hard_py = work / "venv-orig" / "bin" / "python", work / "venv-hard" / "bin" / "python"
    workload = compare(orig_py, hard_py, WORKLOADS[pkg], work, orig_sp, hard_sp)
    pkg_info["workload"] = workload
    for r in rows:
        rel = Path(r["real"])
        if str(rel) not in swapped:
            continue
        c = compare(orig_py, hard_py, file_check(rel, hard_sp), work, orig_sp, hard_sp)
        c["hardened_mapped"] = str(rel) in c["mapped"]
        c["used_by_workload"] = str(rel) in workload["mapped"]
        c.pop("mapped")
        checks = {"file": c, "workload": {k: v for k, v in workload.items() if k != "mapped"}}
        if r.pop("gate_ok", False):
            if c["outcome"] != "identical":
                r.update(outcome="failed", cause=f"{'import' if module_name(rel) else 'load'}: {c['cause']}",
                         reason=c["cause"], detail=c.get("detail"))  # fmt: skip
            elif not c["hardened_mapped"]:
                r.update(outcome="failed", cause="hardened copy not loaded", reason="not in /proc/self/maps")
            elif workload["outcome"] != "identical":
                r.update(outcome="failed", cause=f"package workload: {workload['cause']}", reason=workload["cause"],
                         detail=workload.get("detail"))  # fmt: skip
            else:
                r["outcome"] = "identical"
            r["checks"] = checks
        else:
            r["functional"] = {"file": c["outcome"], "workload": workload["outcome"]}
    # Files whose gate passed but whose hardened copy was not swapped cannot be: they were all swapped.
    pkg_info["functional_seconds"] = round(time.monotonic() - t1)
    return rows, pkg_info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="results: wheels.json, failures/")
    ap.add_argument("--wheels", type=Path, help="directory with the wheels (default OUT/dl, downloaded)")
    ap.add_argument("--packages", default=",".join(PACKAGES))
    ap.add_argument("--jobs", type=int, default=jobs())
    ap.add_argument("--no-functional", action="store_true", help="harden + verify only")
    ap.add_argument("--title", default="wheel modules (numpy, Pillow, lxml, orjson)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    packages = [p.strip().lower() for p in args.packages.split(",") if p.strip()]
    t0 = time.monotonic()
    wheels = download(args.wheels or out / "dl", packages)
    done = 0

    def progress(row: dict) -> None:
        nonlocal done
        done += 1
        extra = row.get("cause") or row.get("reason") or ""
        secs = (row.get("harden") or {}).get("seconds", "")
        print(f"[{done}] {row['name']}: {row.get('outcome', 'gate ok')} {extra} ({secs} s)"[:240], flush=True)

    rows, per_package = [], {}
    for wheel in wheels:
        pkg = wheel.name.split("-", 1)[0].lower()
        r, info = sweep_wheel(wheel, pkg, out, args.jobs, not args.no_functional, progress)
        print(f"{pkg}: {json.dumps({k: v for k, v in info.items() if k != 'workload'})}; workload "
              f"{(info.get('workload') or {}).get('outcome')}", flush=True)  # fmt: skip
        rows += r
        per_package[pkg] = info
    for r in rows:
        if r["outcome"] in ("failed", "not verified"):
            name = r["name"].replace("/", "__").replace(":", "__")
            work = out / "work" / r["package"]
            keep(r, out / "failures" / name, [work / "hardened" / r["real"], Path(r["report_file"])])
    summary = summarize(rows)
    summary.update(title=args.title, seconds=round(time.monotonic() - t0), packages=per_package)
    lines = []
    for info in per_package.values():
        w = info.get("workload") or {}
        used = len(w.get("mapped", []))
        lines.append(
            f"`{info['wheel']}`: {info['files']} ELF files, {info.get('swapped', 0)} hardened copies swapped in; "
            f"package workload **{w.get('outcome', 'not run')}**"
            + (f" ({w.get('cause')})" if w.get("cause") else "")
            + (
                f", using {used} of the hardened files"
                if w and (w.get("rc") or [0, 0])[1] == 0
                else " (it died before listing the files it used)"
                if w
                else ""
            )
        )
    summary["note"] = "\n".join(f"- {x}" for x in lines)
    write_json(out / "wheels.json", {"summary": summary, "rows": rows})
    print(json.dumps({k: v for k, v in summary.items() if k != "coverage"}, indent=1)[:20000])
    return 0 if not (summary["outcomes"].get("failed") or summary["outcomes"].get("not verified")) else 1


if __name__ == "__main__":
    sys.exit(main())
