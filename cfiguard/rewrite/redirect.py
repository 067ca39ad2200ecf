"""Pointer redirection: the last resort for an entry with no room for a forwarding jump.

A 1-byte function (`ret`: an empty function, a trivial destructor in a vtable) packed against its neighbour
cannot hold even a 2-byte jump. If every reference to its address is one we can rewrite, we rewrite them all to
the new address instead, and the old address needs no jump at all. All references change together, so pointer
equality still holds. Rewritable references:
- RELATIVE relocations in position-independent files (the addend, and the slot's file value if it holds it);
- aligned data words holding the address in position-dependent files (the same words the analysis scanned);
- rip-relative operands in relocated code (the emitter aims them at the new address);
- the st_value of an exported symbol in .dynsym (other modules then bind to the new address).
Anything else (an exported symbol, the entry point, an absolute immediate in code, a direct branch or a
reference from code that stays in place, a jump-table entry) makes the entry not redirectable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cfiguard.analysis.facts import ModuleFacts
from cfiguard.image.elf import R_X86_64_RELATIVE

RELA = struct.Struct("<QQq")


def relative_relocations(facts: ModuleFacts) -> dict[int, list[int]]:
    """target -> vaddrs of the RELA entries of .rela.dyn whose RELATIVE addend is that target."""
    image = facts.image
    sec = image.section(".rela.dyn")
    out: dict[int, list[int]] = {}
    if sec is None or not sec.allocated:
        return out
    data = image.read(sec.vaddr, sec.size)
    for k in range(0, len(data) - RELA.size + 1, RELA.size):
        _, info, addend = RELA.unpack_from(data, k)
        if info & 0xFFFFFFFF == R_X86_64_RELATIVE:
            out.setdefault(addend, []).append(sec.vaddr + k)
    return out


def redirectable(facts: ModuleFacts, addr: int, relocated: set[int], relatives: dict[int, list[int]]) -> bool:
    image = facts.image
    if addr == image.entry or addr in image.init_functions:
        return False
    if addr in facts.call_entries and not any(s.exported and s.addr == addr for s in image.symbols):
        return False  # an IFUNC resolver (IRELATIVE) or another entry named from outside
    if image.section(".relr.dyn") is not None:
        return False
    for src in facts.direct_targets.get(addr, ()):
        if src is None or src not in relocated:
            return False
    for fc in facts.functions:
        if addr in fc.code_refs and (not image.is_pic or fc.func.start not in relocated):
            return False
    for jt in facts.jump_tables.values():
        if addr in jt.targets:
            return False
    for r in image.relocations:
        if r.symbol_value == addr and r.type != R_X86_64_RELATIVE:
            return False
    return True


def fast_redirects(facts: ModuleFacts, relocated: set[int], relatives: dict[int, list[int]]) -> set[int]:
    """Starts of relocated functions whose every stored pointer can be rewritten to the new address, in a
    position-independent file (where every code pointer in data has a relocation). Their forwarding jump and
    old label stay (a computed address still works), but vtables, function pointers, GOT entries and exported
    symbols go straight to the new code: no forwarding hop on the hot path. Excluded, so that pointer
    equality holds (every reference changes, or none does): the ELF entry, init/fini functions, IFUNC
    resolvers, jump-table targets, and addresses that code left in place materialises."""
    image = facts.image
    if not image.is_pic or image.section(".relr.dyn") is not None:
        return set()
    skip = {image.entry, *image.init_functions}
    for jt in facts.jump_tables.values():
        skip.update(jt.targets)
    for fc in facts.functions:
        if fc.func.start not in relocated:
            skip.update(fc.code_refs)
    exported = {s.addr for s in image.symbols if s.exported}
    out = set()
    for start in relocated:
        if start in skip or (start in facts.call_entries and start not in exported):
            continue
        if start in relatives or start in exported or start in facts.address_taken:
            out.add(start)
    return out


def redirect_patches(
    facts: ModuleFacts, redirected: set[int], relatives: dict[int, list[int]], resolve: Callable[[int], int]
) -> list[tuple[int, bytes]]:
    """Data patches that make every stored reference to a redirected entry hold its new address."""
    image = facts.image
    out = []
    for addr in sorted(redirected):
        new = struct.pack("<Q", resolve(addr))
        if image.is_pic:
            for entry in relatives.get(addr, ()):
                offset, _, _ = RELA.unpack_from(image.read(entry, RELA.size))
                out.append((entry + 16, new))
                seg = image.segment_at(offset)
                if (
                    seg is not None
                    and offset + 8 <= seg.vaddr + seg.filesz
                    and image.read_u64(offset) == addr
                ):
                    out.append((offset, new))
        else:
            for word in facts.data_words.get(addr, ()):
                out.append((word, new))
        out += [(v, new) for v in _dynsym_values(facts, addr)]
    return out


def _dynsym_values(facts: ModuleFacts, addr: int) -> list[int]:
    """Addresses of the st_value fields in .dynsym that hold `addr`."""
    sec = facts.image.section(".dynsym")
    if sec is None or not sec.allocated:
        return []
    data = facts.image.read(sec.vaddr, sec.size)
    return [
        sec.vaddr + k + 8
        for k in range(0, len(data) - 23, 24)
        if struct.unpack_from("<Q", data, k + 8)[0] == addr
    ]
