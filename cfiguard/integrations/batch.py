"""Hardening many files: one job per file, in a process pool, with the optional cache.

`harden_one` is the whole life of one file (cache lookup, `api.harden`, report, cache store) and never
raises for a bad file: it returns an `Outcome` with the exit code and the lines the CLI prints. The single-file
`cfiguard harden IN -o OUT` runs it in-process; batches run it in worker processes, so that one file that
crashes its process (a native library fault, the OOM killer) is reported alone: the files its pool had not
finished are run again in a new pool, then, if that makes no progress, one per process, and only a file that
kills its own process fails.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from cfiguard.errors import CfiguardError, InputError

POLICIES = ("coarse",)  # the label policies cfiguard implements (docs/usage.md, "Policy")
FIRST_FINDINGS = 10  # verifier findings shown when the output fails verification


@dataclass(frozen=True)
class Job:
    input: str
    output: str
    in_place: bool = False
    strict: bool = False
    verify: bool = True
    policy: str = "coarse"
    race_free_returns: bool = False
    audit: bool = False
    report: str | None = None
    cache: str | None = None
    label: str | None = None  # the name shown instead of `input` (e.g. a member of a wheel)

    def options(self) -> dict:
        """What the output bytes depend on, besides the input and cfiguard itself (the cache key)."""
        opts = {"strict": self.strict, "verify": self.verify, "policy": self.policy}
        opts |= {"race_free_returns": True} if self.race_free_returns else {}
        return opts | ({"audit": True} if self.audit else {})


@dataclass
class Outcome:
    input: str
    output: str
    exit_code: int = 0
    summary: str | None = None  # the success line (suppressed by --quiet)
    lines: list[str] = field(default_factory=list)  # findings, errors and warnings: always shown
    details: list[str] = field(default_factory=list)  # --verbose only
    cached: bool = False
    error: str | None = None  # the error message, without the `cfiguard: error:` prefix
    counts: dict | None = None


def _check_paths(job: Job) -> None:
    """The same refusals as api.harden, before a cache hit could bypass them."""
    same = os.path.realpath(job.input) == os.path.realpath(job.output)
    if same and not job.in_place:
        raise InputError(f"{job.output}: output would overwrite the input (use --in-place to mean it)")
    if job.in_place and not same:
        raise InputError(f"{job.output}: --in-place writes to the input itself")


def _details(doc: dict) -> list[str]:
    out = []
    for s in doc.get("sites", []):
        if s["outcome"] == "unguarded":
            out.append(f"cfiguard:   unguarded {s['kind']} at {s['address']:#x}: {s['reason']}")
    for f in doc.get("functions_not_relocated", []):
        name = f" ({f['name']})" if f.get("name") else ""
        out.append(f"cfiguard:   not relocated: function {f['address']:#x}{name}: {f['reason']}")
    return out


def _cached_summary(name: str, doc: dict, key: str) -> str:
    c, fn = doc["counts"], doc["functions"]
    return (
        f"cfiguard: {name}: {c['found']} sites, {c['guarded']} guarded, {c['safe']} proven safe, "
        f"{c['unguarded']} unguarded; {fn['relocated']}/{fn['found']} functions relocated; "
        f"from the cache ({key[:16]})"
    )


def harden_one(job: Job) -> Outcome:
    """Harden one file. Never raises for a bad input (set CFIGUARD_DEBUG=1 to get internal errors raised)."""
    from cfiguard import api
    from cfiguard.integrations.cache import Cache, cache_key
    from cfiguard.report.harden_report import harden_report, summary_line, write_json
    from cfiguard.rewrite.writer import write_atomically

    name = job.label or job.input
    out = Outcome(job.input, job.output)

    def named(text: str) -> str:
        return text if job.label is None else text.replace(job.input, job.label)

    def fail(e: Exception, code: int) -> Outcome:
        out.exit_code, out.error = code, named(str(e))
        out.lines.append(f"cfiguard: error: {out.error}")
        return out

    cache = Cache(job.cache) if job.cache else None
    key = None
    try:
        if job.policy not in POLICIES:
            raise InputError(f"unknown policy {job.policy!r} (cfiguard implements: {', '.join(POLICIES)})")
        if cache is not None:
            _check_paths(job)
            try:
                with open(job.input, "rb") as f:
                    data = f.read()
            except OSError:
                data = None  # api.harden reports it the usual way
            if data is not None:
                key = cache_key(data, job.options())
                hit = cache.get(key)
                out.details.append(f"cfiguard:   cache {'hit' if hit else 'miss'}: {key}")
                if hit is not None:
                    output, doc = hit
                    target = os.path.realpath(job.output) if job.in_place else job.output
                    write_atomically(target, output, stat.S_IMODE(os.stat(job.input).st_mode))
                    doc = {**doc, "input": job.input, "output": job.output}
                    if job.report is not None:
                        write_json(job.report, doc)
                    out.cached, out.counts = True, doc["counts"]
                    out.summary = _cached_summary(name, doc, key)
                    out.details += _details(doc)
                    return out
        result = api.harden(
            job.input,
            job.output,
            strict=job.strict,
            in_place=job.in_place,
            verify=job.verify,
            race_free_returns=job.race_free_returns,
            audit=job.audit,
        )
    except CfiguardError as e:
        partial = getattr(e, "result", None)  # --strict: the report still says which sites and why
        if partial is not None:
            doc = harden_report(partial)
            out.details += _details(doc)
            if job.report is not None:
                try:
                    write_json(job.report, doc)
                except CfiguardError as e2:
                    out.lines.append(f"cfiguard: error: {e2}")
        for f in getattr(partial, "findings", [])[:FIRST_FINDINGS]:
            where = "" if f.address is None else f"{f.address:#x}: "
            out.lines.append(f"cfiguard: {where}{f.check}: {f.reason}")
        return fail(e, e.exit_code)
    except Exception as e:  # noqa: BLE001 - an unexpected exception is one line and exit 2, as unusable input
        if os.environ.get("CFIGUARD_DEBUG"):
            raise
        return fail(f"{job.input}: internal error ({type(e).__name__}: {e}); set CFIGUARD_DEBUG=1", 2)
    doc = harden_report(result)
    out.counts = doc["counts"]
    out.summary = named(summary_line(result))
    out.details += _details(doc)
    if job.report is not None:
        try:
            write_json(job.report, doc)
        except CfiguardError as e:
            return fail(e, e.exit_code)
    if cache is not None and key is not None:
        try:
            with open(os.path.realpath(job.output), "rb") as f:
                cache.put(key, f.read(), doc)
            out.details.append(f"cfiguard:   cached as {key}")
        except OSError as e:
            out.lines.append(f"cfiguard: warning: cache {job.cache}: {e.strerror or e}; result not cached")
    return out


def _crashed(job: Job) -> Outcome:
    out = Outcome(job.input, job.output, exit_code=2)
    name = job.label or job.input
    out.error = f"{name}: the hardening process died (killed by a signal, or out of memory)"
    out.lines.append(f"cfiguard: error: {out.error}")
    return out


def harden_many(
    jobs: list[Job], workers: int = 1, on_done: Callable[[Outcome], None] | None = None
) -> list[Outcome]:
    """Harden every job; `on_done` is called in this process as each one finishes. Results in job order.

    One job runs in this process; more run in a pool of `workers` processes (spawned, not forked: no state
    of this process, threads of a progress display included, leaks into them)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    done = on_done or (lambda o: None)
    if len(jobs) == 1:
        o = harden_one(jobs[0])
        done(o)
        return [o]
    results: dict[int, Outcome] = {}
    ctx = multiprocessing.get_context("spawn")
    todo = list(range(len(jobs)))
    while todo:
        # A pool that breaks (a worker died) fails every job it had not finished: run those again in a new
        # pool. A round that finishes nothing means some job kills whichever worker runs it: then one process
        # per job tells which.
        with ProcessPoolExecutor(max(1, min(workers, len(todo))), mp_context=ctx) as pool:
            futures = {pool.submit(harden_one, jobs[i]): i for i in todo}
            for fut in as_completed(futures):
                try:
                    results[futures[fut]] = fut.result()
                except BrokenProcessPool:
                    continue
                done(results[futures[fut]])
        left = [i for i in todo if i not in results]
        if len(left) == len(todo):
            break
        todo = left
    for i, job in enumerate(jobs):
        if i in results:
            continue
        with ProcessPoolExecutor(1, mp_context=ctx) as alone:
            try:
                results[i] = alone.submit(harden_one, job).result()
            except BrokenProcessPool:
                results[i] = _crashed(job)
        done(results[i])
    return [results[i] for i in range(len(jobs))]


def worst(outcomes: list[Outcome]) -> int:
    """The batch's exit code: the worst of its files (0 < 1 < 2)."""
    return max((o.exit_code for o in outcomes), default=0)
