"""Precision metrics of a policy: for each indirect site, the set of targets its guard accepts.

Plain data computed from ModuleFacts and a Policy, with no rewriting (what `cfiguard analyze` reports):
- the target set of a site is every address whose label has a bit of the site's mask (calls: CALL; guarded
  jmps: CALL|JMP; returns: RET), or, for a switch proven bounded, its table's targets;
- AIR, as BinCFI defines it: the average over sites of 1 - |T(site)| / S, with S the number of executable
  bytes of the module (every byte is a possible target without CFI);
- AICT: the average number of allowed targets over indirect call sites;
- classes: the number of distinct target sets.
Targets outside the module are not counted: the coarse policy accepts any of them (see docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cfiguard.analysis.facts import ModuleFacts
from cfiguard.policy.labels import CALL, JMP, RET, Policy

MASKS = {"call": CALL, "jmp": CALL | JMP, "ret": RET}


@dataclass(frozen=True)
class SitePrecision:
    address: int
    kind: str  # call, jmp, ret
    targets: int  # how many addresses of this module its guard accepts
    target_class: int  # index into Precision.class_sizes
    fallback: str | None  # why the set is as wide as it is


@dataclass(frozen=True)
class Precision:
    policy: str
    code_bytes: int
    air: float
    aict: float
    class_sizes: list[int]
    targets: dict[str, int]  # label class -> number of addresses carrying it
    sites: list[SitePrecision] = field(default_factory=list)

    @property
    def largest(self) -> SitePrecision | None:
        return max(self.sites, key=lambda s: (s.targets, -s.address), default=None)


def precision(facts: ModuleFacts, policy: Policy, name: str = "coarse") -> Precision:
    labels = policy.labels
    by_mask = {m: sum(1 for b in labels.values() if b & m) for m in set(MASKS.values())}
    code = sum(s.filesz for s in facts.image.code_segments) or 1
    classes: dict[tuple, int] = {}
    sites = []
    for s in sorted(facts.sites + facts.gap_sites, key=lambda s: s.addr):
        jt = facts.jump_tables.get(s.addr) if s.kind == "jmp" else None
        if jt is not None and jt.safe:
            key, n = ("table", jt.table, len(jt.targets)), len(set(jt.targets))
            why = None
        else:
            m = MASKS[s.kind]
            key, n = ("mask", m), by_mask[m]
            why = {
                "call": "coarse: any address-taken or exported function (CALL)",
                "jmp": "coarse: any CALL or JMP label",
                "ret": "coarse: any return site (RET)",
            }[s.kind]
        cls = classes.setdefault(key, len(classes))
        sites.append(SitePrecision(s.addr, s.kind, n, cls, why))
    sizes = [0] * len(classes)
    for s in sites:
        sizes[s.target_class] = s.targets
    calls = [s.targets for s in sites if s.kind == "call"]
    air = sum(1 - s.targets / code for s in sites) / len(sites) if sites else 1.0
    aict = sum(calls) / len(calls) if calls else 0.0
    targets = {"ret": by_mask[RET], "call": by_mask[CALL], "jmp": sum(1 for b in labels.values() if b & JMP)}
    return Precision(name, code, air, aict, sizes, targets, sites)
