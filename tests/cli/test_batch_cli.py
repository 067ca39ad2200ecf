"""`cfiguard harden FILE... --out-dir DIR [--jobs N]` and `--in-place` on several files: a bad file is
reported and the others go on, the exit code is the worst result, outputs are the same as one at a time,
and a worker process that dies does not take the batch down. Also --quiet, --verbose and the progress bar.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROGRAM = r"""
#include <stdio.h>
static int sq(int x) { return x * x; }
static int cube(int x) { return x * x * x; }
int (*volatile ops[])(int) = {sq, cube};
int main(int argc, char **argv) { (void)argv; printf("%d %d\n", ops[0](N), ops[1](argc + N)); return 0; }
"""

UNRELOCATABLE = """
        .text
        .globl main
        .type tx, @function
tx:     test %edi, %edi
        jz 1f
        xbegin 1f
        xend
1:      ret
        .size tx, .-tx
        .type main, @function
main:   xor %edi, %edi
        call tx
        xor %eax, %eax
        ret
        .size main, .-main
        .section .note.GNU-stack,"",@progbits
"""


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, **{"PYTHONPATH": str(REPO), **extra})
    for k in ("CFIGUARD_CACHE", "CFIGUARD_DEBUG"):
        if k not in extra:
            e.pop(k, None)
    return e


def cfiguard(*args, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env(**extra),
    )


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("batch")
    (d / "p.c").write_text(PROGRAM)
    out = {}
    for k, opt in enumerate(("-O0", "-O1", "-O2")):
        exe = d / f"p{k}"
        subprocess.run(["gcc", opt, f"-DN={k + 2}", "-o", str(exe), str(d / "p.c")], check=True)
        out[exe.name] = exe
    (d / "x.s").write_text(UNRELOCATABLE)
    subprocess.run(["gcc", "-o", str(d / "tx"), str(d / "x.s")], check=True)
    out["tx"] = d / "tx"
    (d / "notelf").write_text("#!/bin/sh\n")
    out["notelf"] = d / "notelf"
    return out


def expected_output(exe: Path) -> str:
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


def good(programs: dict[str, Path]) -> list[Path]:
    return [programs[k] for k in ("p0", "p1", "p2")]


def test_batch_out_dir_one_bad_file_does_not_stop_the_others(programs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    files = [programs["p0"], programs["notelf"], programs["p1"], tmp_path / "missing", programs["p2"]]
    p = cfiguard("harden", *files, "--out-dir", out, "-j", "2")
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert f"cfiguard: error: {programs['notelf']}: not an ELF file" in p.stderr
    assert f"cfiguard: error: {tmp_path / 'missing'}" in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "cfiguard: 5 files: 3 hardened, 2 failed"
    assert sorted(x.name for x in out.iterdir()) == ["p0", "p1", "p2"]
    for exe in good(programs):
        hard = out / exe.name
        assert f"cfiguard: {exe}: " in p.stderr
        assert subprocess.run([str(hard)], capture_output=True, text=True).stdout == expected_output(exe)
        assert cfiguard("verify", hard).returncode == 0


@pytest.mark.parametrize(
    ("names", "code"), [(["p0", "tx"], 1), (["p0", "tx", "notelf"], 2), (["p0", "p1"], 0)]
)
def test_batch_exit_code_is_the_worst(programs, tmp_path: Path, names: list[str], code: int) -> None:
    p = cfiguard("harden", *(programs[n] for n in names), "--out-dir", tmp_path, "--strict")
    assert p.returncode == code, p.stderr
    assert (tmp_path / "p0").exists() and not (tmp_path / "tx").exists()


def test_batch_outputs_equal_single_runs(programs, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert cfiguard("harden", *good(programs), "--out-dir", a, "-j", "3").returncode == 0
    for exe in good(programs):
        assert cfiguard("harden", exe, "-o", b / exe.name).returncode == 0
        assert (a / exe.name).read_bytes() == (b / exe.name).read_bytes()
        assert (a / exe.name).stat().st_mode == exe.stat().st_mode


def test_batch_in_place_and_report_dir(programs, tmp_path: Path) -> None:
    copies = []
    for exe in good(programs):
        shutil.copy2(exe, tmp_path / exe.name)
        copies.append(tmp_path / exe.name)
    reports = tmp_path / "reports"
    reports.mkdir()
    p = cfiguard("harden", *copies, "--in-place", "--report-dir", reports, "-j", "0")
    assert p.returncode == 0, p.stderr
    for exe, copy in zip(good(programs), copies, strict=True):
        assert copy.read_bytes() != exe.read_bytes()
        assert cfiguard("verify", copy).returncode == 0
        doc = json.loads((reports / f"{copy.name}.json").read_text())
        assert doc["input"] == str(copy) and doc["counts"]["unguarded"] == 0
    # a second --in-place run refuses every file: already hardened
    p = cfiguard("harden", *copies, "--in-place")
    assert p.returncode == 2 and p.stderr.count("already hardened") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{p0}"], "give exactly one of -o OUTPUT, --out-dir DIR and --in-place"),
        (["{p0}", "{p1}", "-o", "{tmp}/x"], "-o names one output, but 2 files"),
        (["{p0}", "{p0}", "--out-dir", "{tmp}"], "would both be written to"),
        (["{p0}", "{p1}", "--in-place", "--report", "{tmp}/r.json"], "use --report-dir"),
        (["{p0}", "--out-dir", "{tmp}/nope"], "not a directory"),
        (["{p0}", "--out-dir", "{tmp}", "-q", "-v"], "exclude each other"),
        (["{p0}", "--out-dir", "{tmp}", "--policy", "fine"], "--policy 'fine': unknown"),
        (["{p0}", "--out-dir", "{tmp}", "-j", "-1"], "--jobs -1"),
    ],
)
def test_batch_usage_errors(programs, tmp_path: Path, args: list[str], message: str) -> None:
    argv = [a.format(p0=programs["p0"], p1=programs["p1"], tmp=tmp_path) for a in args]
    p = cfiguard("harden", *argv)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert not [x for x in tmp_path.iterdir() if x.name != "nope"]


def test_quiet_and_verbose(programs, tmp_path: Path) -> None:
    q = cfiguard("harden", programs["p0"], "-o", tmp_path / "q", "--quiet")
    assert q.returncode == 0 and q.stderr == ""
    q = cfiguard("harden", programs["p0"], programs["notelf"], "--out-dir", tmp_path, "--quiet")
    assert q.returncode == 2 and q.stderr.strip() == f"cfiguard: error: {programs['notelf']}: not an ELF file"
    v = cfiguard("harden", programs["tx"], "-o", tmp_path / "tx", "--no-verify", "--verbose")
    assert v.returncode == 0
    lines = v.stderr.strip().splitlines()
    assert lines[0].startswith(f"cfiguard: {programs['tx']}: ") and "1 unguarded" in lines[0]
    assert any("unguarded ret at 0x" in line and "xbegin" in line for line in lines[1:]), v.stderr
    assert any("not relocated: function 0x" in line for line in lines[1:]), v.stderr


def test_progress_bar_only_on_a_terminal(programs, tmp_path: Path) -> None:
    """Under a pseudo-terminal the batch draws a rich progress bar; piped, the output has no escapes."""
    out = tmp_path / "tty"
    out.mkdir()
    pid, fd = pty.fork()
    if pid == 0:  # child: run cfiguard with the pty as its terminal
        os.environ.update(env(COLUMNS="120", TERM="xterm"))
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "cfiguard.cli",
                "harden",
                *map(str, good(programs)),
                "--out-dir",
                str(out),
                "-j",
                "2",
            ],
        )
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "hardening" in text and "3/3" in text and "\x1b[" in text, text  # the bar, drawn and finished
    assert all(f"cfiguard: {exe}: " in text for exe in good(programs))
    piped = cfiguard("harden", *good(programs), "--out-dir", tmp_path, "-j", "2")
    assert piped.returncode == 0 and "\x1b[" not in piped.stderr and "3/3" not in piped.stderr


def _workers(pid: int) -> list[int]:
    """The pool's worker processes among the children of `pid` (spawned: spawn_main in the command line)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.append(int(child))
    return found


def test_a_killed_worker_does_not_take_the_batch_down(programs, tmp_path: Path) -> None:
    """SIGKILL to a worker (as the OOM killer would): its files are retried alone, every output is right."""
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("/proc/PID/task/TID/children not available")
    files = []
    for k in range(6):
        src = programs[f"p{k % 3}"]
        files.append(tmp_path / f"in{k}")
        shutil.copy2(src, files[-1])
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfiguard.cli", "harden", *map(str, files), "--out-dir", str(out), "-j", "2"],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        workers = _workers(proc.pid)
        if workers:
            time.sleep(0.2)  # let it start on a file
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.02)
    still_running = proc.poll() is None
    _, err = proc.communicate(timeout=300)
    if killed is None or not still_running:
        pytest.skip("the batch finished before a worker could be killed")
    assert proc.returncode == 0, err
    assert "6 files: 6 hardened" in err
    for k, f in enumerate(files):
        run = subprocess.run([str(out / f.name)], capture_output=True, text=True)
        assert run.stdout == expected_output(programs[f"p{k % 3}"])


CRASHER = """
import os
import signal

if os.environ.get("CFIGUARD_TEST_CRASH_ON"):  # fault injection for test_a_file_that_kills_its_worker
    import cfiguard.api as _api

    _harden = _api.harden

    def _crashing(input_path, *args, **kwargs):
        if os.path.basename(input_path) == os.environ["CFIGUARD_TEST_CRASH_ON"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return _harden(input_path, *args, **kwargs)

    _api.harden = _crashing
"""


def test_a_file_that_kills_its_worker_is_reported_alone(programs, tmp_path: Path) -> None:
    """A file that kills every process hardening it (injected through sitecustomize in the workers) fails
    with exit 2 and one line; the other files of the batch are hardened."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(CRASHER)
    crasher = tmp_path / "crasher"
    shutil.copy2(programs["p1"], crasher)
    out = tmp_path / "out"
    out.mkdir()
    files = [programs["p0"], crasher, programs["p2"]]
    p = subprocess.run(
        [sys.executable, "-m", "cfiguard.cli", "harden", *map(str, files), "--out-dir", str(out), "-j", "2"],
        capture_output=True,
        text=True,
        env=env(PYTHONPATH=f"{inject}:{REPO}", CFIGUARD_TEST_CRASH_ON="crasher"),
        timeout=300,
    )
    assert p.returncode == 2, p.stderr
    assert f"cfiguard: error: {crasher}: the hardening process died" in p.stderr
    assert p.stderr.count("cfiguard: error:") == 1
    assert sorted(x.name for x in out.iterdir()) == ["p0", "p2"]
    for exe in (programs["p0"], programs["p2"]):
        assert subprocess.run(
            [str(out / exe.name)], capture_output=True, text=True
        ).stdout == expected_output(exe)
