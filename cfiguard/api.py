"""Public Python API: harden(). The CLI is a thin layer over these functions."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from cfiguard.analysis.facts import analyze
from cfiguard.errors import InputError, StrictModeError
from cfiguard.image.ehframe import parse_eh_frame, parse_eh_frame_hdr
from cfiguard.image.elf import Image, load_image
from cfiguard.policy.labels import coarse_policy
from cfiguard.rewrite.rewriter import Rewritten, SiteOutcome, rewrite
from cfiguard.rewrite.writer import ElfWriter


@dataclass(frozen=True)
class HardenResult:
    input: str
    output: str | None
    sites: list[SiteOutcome]
    not_relocated: list[tuple[int, str | None, str]]
    functions: int
    relocated: int
    seconds: float

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


def harden(input_path: str, output_path: str, strict: bool = False, in_place: bool = False) -> HardenResult:
    """Harden `input_path` into `output_path`. The input is never modified, unless `in_place` is given: then
    output_path must be input_path, and it is replaced atomically only after everything succeeded."""
    t0 = time.monotonic()
    same = os.path.realpath(input_path) == os.path.realpath(output_path)
    if same and not in_place:
        raise InputError(f"{output_path}: output would overwrite the input (use --in-place to mean it)")
    if in_place and not same:
        raise InputError(f"{output_path}: --in-place writes to the input itself")
    image = load_image(input_path)
    fdes = read_fdes(image)
    facts = analyze(image, fdes)
    policy = coarse_policy(facts)
    writer = ElfWriter(image)
    rw: Rewritten = rewrite(facts, policy, writer.first_free_vaddr(), writer.rodata_reserve())
    result = HardenResult(
        input_path, output_path, rw.sites, rw.not_relocated, len(facts.functions), rw.relocated, 0.0
    )
    if strict and result.counts["unguarded"]:
        err = StrictModeError(
            f"{input_path}: {result.counts['unguarded']} site(s) would stay unguarded (--strict); nothing written"
        )
        err.result = result
        raise err
    writer.write(os.path.realpath(output_path) if in_place else output_path, rw, image.mode)
    return HardenResult(**{**result.__dict__, "seconds": time.monotonic() - t0})
