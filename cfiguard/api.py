"""Public Python API: harden(). The CLI is a thin layer over these functions."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

from cfiguard.analysis.facts import analyze as analyze_facts
from cfiguard.errors import InputError, StrictModeError, VerificationError
from cfiguard.image.ehframe import parse_eh_frame, parse_eh_frame_hdr
from cfiguard.image.elf import Image, load_image
from cfiguard.policy.labels import coarse_policy
from cfiguard.rewrite.rewriter import Rewritten, SiteOutcome, rewrite
from cfiguard.rewrite.writer import ElfWriter, write_atomically

MAX_PROOF_ROUNDS = 3  # rewrite again with the switches the verifier could not re-prove guarded instead


@dataclass(frozen=True)
class HardenResult:
    input: str
    output: str | None
    sites: list[SiteOutcome]
    not_relocated: list[tuple[int, str | None, str]]
    functions: int
    relocated: int
    seconds: float
    verified: bool | None = None  # None: not checked (--no-verify)
    verify_seconds: float = 0.0
    findings: list = field(default_factory=list)  # the verifier's findings when it rejected the output
    # switches guarded because the verifier could not re-prove them
    demoted: list[int] = field(default_factory=list)
    safe_switches: list[int] = field(default_factory=list)  # new addresses of the switches left unguarded

    def count(self, outcome: str) -> int:
        return sum(1 for s in self.sites if s.outcome == outcome)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "found": len(self.sites),
            "guarded": self.count("guarded"),
            "safe": self.count("safe"),
            "unguarded": self.count("unguarded"),
        }


def read_fdes(image: Image):
    """All FDEs of the module's .eh_frame, located through PT_GNU_EH_FRAME (works on stripped files too)."""
    if image.eh_frame_hdr is None:
        return []
    seg = image.segment_at(image.eh_frame_hdr)
    hdr = image.read(image.eh_frame_hdr, seg.end - image.eh_frame_hdr)
    eh_ptr, _ = parse_eh_frame_hdr(hdr, image.eh_frame_hdr)
    sec = image.section(".eh_frame")
    if sec is not None and sec.vaddr == eh_ptr:
        size = sec.size
    else:
        seg = image.segment_at(eh_ptr)
        size = seg.vaddr + seg.filesz - eh_ptr
    return parse_eh_frame(image.read(eh_ptr, size), eh_ptr)


def harden(
    input_path: str,
    output_path: str,
    strict: bool = False,
    in_place: bool = False,
    verify: bool = True,
    race_free_returns: bool = False,
    audit: bool = False,
) -> HardenResult:
    """Harden `input_path` into `output_path`. The input is never modified, unless `in_place` is given: then
    output_path must be input_path, and it is replaced atomically only after everything succeeded.

    Unless `verify` is False, the output is checked by the independent verifier (cfiguard.verify, through its
    public API only) before anything is written. A switch dispatch that the rewriter proved safe but the
    verifier cannot re-prove is guarded instead, and the module rewritten, so that "safe" means the same to
    both. An output that still does not verify raises VerificationError and nothing is written.

    `audit`: a violation is logged and the transfer goes on (a gradual roll-out); `cfiguard verify` fails
    such a file unless --allow-audit.

    `race_free_returns`: returns of functions that clobber r10/r11 pop their address and jump through the
    checked register (no check-then-use window; unpairs the return-stack buffer: docs/guards.md).
    """
    t0 = time.monotonic()
    same = os.path.realpath(input_path) == os.path.realpath(output_path)
    if same and not in_place:
        raise InputError(f"{output_path}: output would overwrite the input (use --in-place to mean it)")
    if in_place and not same:
        raise InputError(f"{output_path}: --in-place writes to the input itself")
    image = load_image(input_path)
    fdes = read_fdes(image)
    facts = analyze_facts(image, fdes)
    policy = coarse_policy(facts)
    writer = ElfWriter(image)
    demoted: list[int] = []
    verify_seconds = 0.0
    for round_ in range(MAX_PROOF_ROUNDS):
        rw: Rewritten = rewrite(
            facts, policy, writer.first_free_vaddr(), writer.rodata_reserve(), race_free_returns, audit
        )
        result = HardenResult(
            input_path, output_path, rw.sites, rw.not_relocated, len(facts.functions), rw.relocated, 0.0
        )
        if strict and result.counts["unguarded"]:
            err = StrictModeError(
                f"{input_path}: {result.counts['unguarded']} site(s) would stay unguarded (--strict); "
                "nothing written"
            )
            err.result = result
            raise err
        data = writer.build(rw)
        if not verify:
            break
        from cfiguard.verify import verify_bytes

        t1 = time.monotonic()
        check = verify_bytes(data, output_path, allow_audit=audit)
        verify_seconds += time.monotonic() - t1
        unproven = sorted(
            {rw.switch_sites[f.address] for f in check.findings if f.address in rw.switch_sites}
        )
        if check.ok or not unproven or round_ == MAX_PROOF_ROUNDS - 1:
            break
        for site in unproven:  # the verifier is the judge of "safe": guard what it cannot re-prove
            facts.jump_tables[site] = replace(facts.jump_tables[site], safe=False)
        demoted += unproven
    extra = {"verify_seconds": verify_seconds, "demoted": demoted, "safe_switches": sorted(rw.switch_sites)}
    if verify:
        extra["verified"] = check.ok
        if not check.ok:
            findings = check.findings if check.error is None else []
            err = VerificationError(
                f"{input_path}: the hardened output does not pass cfiguard verify "
                f"({len(findings)} finding(s){'' if check.error is None else ': ' + check.error}); "
                "nothing written"
            )
            err.result = HardenResult(**{**result.__dict__, **extra, "findings": findings})
            raise err
    write_atomically(os.path.realpath(output_path) if in_place else output_path, data, image.mode)
    return HardenResult(**{**result.__dict__, **extra, "seconds": time.monotonic() - t0})


# ------------------------------------------------------------------------------------ integrations
# Batch hardening, wheels, manifest summaries and the CMake package (cfiguard/integrations/, docs/integrations.md).


def harden_many(jobs, workers: int = 1, on_done=None):
    """Harden many files (a list of `cfiguard.integrations.batch.Job`) in a pool of `workers` processes;
    `on_done(outcome)` is called as each finishes. Returns one `Outcome` per job, in order; never raises for a
    bad file (its outcome carries the exit code and message)."""
    from cfiguard.integrations.batch import harden_many as _harden_many

    return _harden_many(jobs, workers, on_done)


def harden_wheel(path: str, out_dir: str, **options):
    """Harden every ELF member of the wheel at `path` into `out_dir/<same name>` (see integrations.wheel)."""
    from cfiguard.integrations.wheel import repair_wheel

    return repair_wheel(path, out_dir, **options)


def info(path: str) -> dict:
    """What the `.cfiguard` manifest of `path` says (hardened or not, version, policy, coverage, date)."""
    from cfiguard.integrations.manifest import info as _info

    return _info(path)


def cmake_dir() -> str:
    """The directory holding cfiguardConfig.cmake (for `-Dcfiguard_DIR=`)."""
    from cfiguard.integrations import cmake_dir as _cmake_dir

    return _cmake_dir()


def analyze(input_path: str, policy: str = "coarse"):
    """Precision of the label policy for `input_path`, without writing anything (`cfiguard analyze`)."""
    from cfiguard.policy.metrics import precision

    if policy != "coarse":
        raise InputError(f"--policy {policy}: only the coarse policy is implemented (fine is planned)")
    image = load_image(input_path)
    facts = analyze_facts(image, read_fdes(image))
    return facts, precision(facts, coarse_policy(facts), policy)
