"""Pure-Python workloads modelled on pyperformance, run by the interpreter under test.

    python bm.py NAME N      run benchmark NAME with size/iteration parameter N, print a checksum

Why our own and not pyperformance: pyperformance builds a virtualenv per interpreter and installs pyperf and
third-party packages into it; the interpreters under test here are a hardened `libpython` reached through
LD_LIBRARY_PATH and a hardened copy of Debian's `/usr/bin/python3.11`, and each run must be a single process
whose CPU time we read with wait4. These are small re-implementations of the same algorithms (same inner loops,
same object mix), stdlib only, so they run offline on any 3.10+ interpreter.

Each benchmark prints a checksum so that a hardened interpreter that computes something different is caught.
This file is executed as a script by other interpreters: it must not import anything from the repository.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import sys
from collections.abc import Callable, Iterator

# ----------------------------------------------------------------------------------------------------- nbody

SOLAR_MASS = 4 * math.pi * math.pi
DAYS_PER_YEAR = 365.24


def _bodies() -> list[list]:
    """Sun, Jupiter, Saturn, Uranus, Neptune as in the Computer Language Benchmarks Game."""
    d, m = DAYS_PER_YEAR, SOLAR_MASS
    return [
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], m],
        [
            [4.84143144246472090e00, -1.16032004402742839e00, -1.03622044471123109e-01],
            [1.66007664274403694e-03 * d, 7.69901118419740425e-03 * d, -6.90460016972063023e-05 * d],
            9.54791938424326609e-04 * m,
        ],
        [
            [8.34336671824457987e00, 4.12479856412430479e00, -4.03523417114321381e-01],
            [-2.76742510726862411e-03 * d, 4.99852801234917238e-03 * d, 2.30417297573763929e-05 * d],
            2.85885980666130812e-04 * m,
        ],
        [
            [1.28943695621391310e01, -1.51111514016986312e01, -2.23307578892655734e-01],
            [2.96460137564761618e-03 * d, 2.37847173959480950e-03 * d, -2.96589568540237556e-05 * d],
            4.36624404335156298e-05 * m,
        ],
        [
            [1.53796971148509165e01, -2.59193146099879641e01, 1.79258772950371181e-01],
            [2.68067772490389322e-03 * d, 1.62824170038242295e-03 * d, -9.51592254519715870e-05 * d],
            5.15138902046611451e-05 * m,
        ],
    ]


def bench_nbody(n: int) -> float:
    """Float arithmetic on lists, tuple unpacking, nested loops (pyperformance `nbody`)."""
    bodies = _bodies()
    pairs = [(bodies[i], bodies[j]) for i in range(len(bodies)) for j in range(i + 1, len(bodies))]
    for _ in range(n * 1000):
        for ([x1, y1, z1], v1, m1), ([x2, y2, z2], v2, m2) in pairs:
            dx, dy, dz = x1 - x2, y1 - y2, z1 - z2
            mag = 0.01 * ((dx * dx + dy * dy + dz * dz) ** -1.5)
            b1m, b2m = m1 * mag, m2 * mag
            v1[0] -= dx * b2m
            v1[1] -= dy * b2m
            v1[2] -= dz * b2m
            v2[0] += dx * b1m
            v2[1] += dy * b1m
            v2[2] += dz * b1m
        for r, [vx, vy, vz], _m in bodies:
            r[0] += 0.01 * vx
            r[1] += 0.01 * vy
            r[2] += 0.01 * vz
    return round(sum(b[0][0] + b[0][1] for b in bodies), 6)


# ---------------------------------------------------------------------------------------------------- float


class Point:
    __slots__ = ("x", "y", "z")

    def __init__(self, i: float) -> None:
        self.x = x = math.sin(i)
        self.y = math.cos(i) * 3
        self.z = (x * x) / 2

    def normalize(self) -> None:
        norm = math.sqrt(self.x * self.x + self.y * self.y + self.z * self.z)
        self.x /= norm
        self.y /= norm
        self.z /= norm

    def maximize(self, other: Point) -> Point:
        self.x = self.x if self.x > other.x else other.x
        self.y = self.y if self.y > other.y else other.y
        self.z = self.z if self.z > other.z else other.z
        return self


def bench_float(n: int) -> float:
    """Object allocation, attribute access and math calls (pyperformance `float`)."""
    acc = 0.0
    for _ in range(n):
        points = [Point(i) for i in range(20000)]
        for p in points:
            p.normalize()
        best = points[0]
        for p in points[1:]:
            best = best.maximize(p)
        acc += best.x + best.y + best.z
    return round(acc, 6)


# -------------------------------------------------------------------------------------------------- fannkuch


def bench_fannkuch(n: int) -> int:
    """List slicing and reversal (pyperformance `fannkuch`, size 9 repeated n times)."""
    total = 0
    for _ in range(n):
        size = 9
        count = list(range(1, size + 1))
        max_flips = 0
        m = size - 1
        r = size
        perm1 = list(range(size))
        while True:
            while r != 1:
                count[r - 1] = r
                r -= 1
            if perm1[0] != 0 and perm1[m] != m:
                perm = perm1[:]
                flips = 0
                k = perm[0]
                while k:
                    perm[: k + 1] = perm[k::-1]
                    flips += 1
                    k = perm[0]
                if flips > max_flips:
                    max_flips = flips
            while r != size:
                perm1.insert(r, perm1.pop(0))
                count[r] -= 1
                if count[r] > 0:
                    break
                r += 1
            else:
                break
        total += max_flips
    return total


# --------------------------------------------------------------------------------------------- spectral_norm


def _eval_a(i: int, j: int) -> float:
    return 1.0 / ((i + j) * (i + j + 1) // 2 + i + 1)


def _a_times_u(u: list[float]) -> list[float]:
    return [sum(_eval_a(i, j) * uj for j, uj in enumerate(u)) for i in range(len(u))]


def _at_times_u(u: list[float]) -> list[float]:
    return [sum(_eval_a(j, i) * uj for j, uj in enumerate(u)) for i in range(len(u))]


def bench_spectral_norm(n: int) -> float:
    """Generator expressions and many small function calls (pyperformance `spectral_norm`)."""
    res = 0.0
    for _ in range(n):
        u = [1.0] * 100
        for _ in range(5):
            v = _at_times_u(_a_times_u(u))
            u = _at_times_u(_a_times_u(v))
        vbv = sum(a * b for a, b in zip(u, v, strict=True))
        vv = sum(b * b for b in v)
        res += math.sqrt(vbv / vv)
    return round(res, 9)


# ------------------------------------------------------------------------------------------------- richards

I_IDLE, I_WORK, I_HANDLERA, I_HANDLERB, I_DEVA, I_DEVB = 1, 2, 3, 4, 5, 6
K_DEV, K_WORK = 1000, 1001
BUFSIZE = 4


class Packet:
    def __init__(self, link: Packet | None, ident: int, kind: int) -> None:
        self.link, self.ident, self.kind, self.datum = link, ident, kind, 0
        self.data = [0] * BUFSIZE

    def append_to(self, lst: Packet | None) -> Packet:
        self.link = None
        if lst is None:
            return self
        p = lst
        while p.link is not None:
            p = p.link
        p.link = self
        return lst


class Task:
    """One task of the Richards OS simulation; subclasses implement fn() (a virtual call per step)."""

    def __init__(self, sched: Scheduler, ident: int, prio: int, wkq: Packet | None, state: int) -> None:
        self.sched, self.ident, self.prio, self.wkq = sched, ident, prio, wkq
        self.packet_pending, self.waiting, self.holding = state & 1 != 0, state & 2 != 0, state & 4 != 0
        self.link = sched.tasks
        sched.tasks = self
        sched.table[ident] = self

    def runnable(self) -> bool:
        return not (self.holding or (not self.packet_pending and self.waiting))

    def add_packet(self, p: Packet, old: Task) -> Task:
        if self.wkq is None:
            self.wkq = p
            self.packet_pending = True
            if self.prio > old.prio:
                return self
        else:
            self.wkq = p.append_to(self.wkq)
        return old

    def run(self) -> Task | None:
        if self.packet_pending and self.waiting and not self.holding:
            pkt = self.wkq
            self.wkq = pkt.link
            self.packet_pending = self.wkq is not None
            self.waiting = False
        else:
            pkt = None
        return self.fn(pkt)

    def fn(self, pkt: Packet | None) -> Task | None:
        raise NotImplementedError

    def wait(self) -> Task:
        self.waiting = True
        return self

    def release(self, ident: int) -> Task:
        t = self.sched.table[ident]
        t.holding = False
        return t if t.prio > self.prio else self

    def qpkt(self, pkt: Packet) -> Task:
        t = self.sched.table[pkt.ident]
        self.sched.qpkt_count += 1
        pkt.link = None
        pkt.ident = self.ident
        return t.add_packet(pkt, self)


class IdleTask(Task):
    def __init__(self, sched: Scheduler, count: int) -> None:
        super().__init__(sched, I_IDLE, 0, None, 0)
        self.v1, self.count = 1, count

    def fn(self, pkt: Packet | None) -> Task | None:
        self.count -= 1
        if self.count == 0:
            self.holding = True
            return self.sched.pick()
        if self.v1 & 1 == 0:
            self.v1 >>= 1
            return self.release(I_DEVA)
        self.v1 = (self.v1 >> 1) ^ 0xD008
        return self.release(I_DEVB)


class WorkTask(Task):
    def __init__(self, sched: Scheduler, wkq: Packet) -> None:
        super().__init__(sched, I_WORK, 1000, wkq, 3)
        self.dest, self.count = I_HANDLERA, 0

    def fn(self, pkt: Packet | None) -> Task | None:
        if pkt is None:
            return self.wait()
        self.dest = I_HANDLERB if self.dest == I_HANDLERA else I_HANDLERA
        pkt.ident, pkt.datum = self.dest, 0
        for i in range(BUFSIZE):
            self.count = self.count + 1 if self.count < 26 else 1
            pkt.data[i] = ord("A") + self.count - 1
        return self.qpkt(pkt)


class HandlerTask(Task):
    def __init__(self, sched: Scheduler, ident: int, prio: int, wkq: Packet) -> None:
        super().__init__(sched, ident, prio, wkq, 3)
        self.work_in: Packet | None = None
        self.device_in: Packet | None = None

    def fn(self, pkt: Packet | None) -> Task | None:
        if pkt is not None:
            if pkt.kind == K_WORK:
                self.work_in = pkt.append_to(self.work_in)
            else:
                self.device_in = pkt.append_to(self.device_in)
        if self.work_in is not None:
            work = self.work_in
            count = work.datum
            if count >= BUFSIZE:
                self.work_in = work.link
                return self.qpkt(work)
            if self.device_in is not None:
                dev = self.device_in
                self.device_in = dev.link
                dev.datum = work.data[count]
                work.datum = count + 1
                return self.qpkt(dev)
        return self.wait()


class DeviceTask(Task):
    def __init__(self, sched: Scheduler, ident: int, prio: int) -> None:
        super().__init__(sched, ident, prio, None, 2)
        self.pending: Packet | None = None

    def fn(self, pkt: Packet | None) -> Task | None:
        if pkt is None:
            if self.pending is None:
                return self.wait()
            pkt, self.pending = self.pending, None
            return self.qpkt(pkt)
        self.pending = pkt
        self.sched.hold_count += 1
        self.holding = True
        return self.sched.pick()


class Scheduler:
    def __init__(self) -> None:
        self.tasks: Task | None = None
        self.table: list[Task | None] = [None] * 7
        self.qpkt_count = self.hold_count = 0
        self.current: Task | None = None

    def pick(self) -> Task | None:
        return self.current.link if self.current is not None else None

    def schedule(self) -> None:
        t = self.tasks
        while t is not None:
            self.current = t
            t = t.run() if t.runnable() else t.link


def bench_richards(n: int) -> int:
    """Classes, virtual methods (fn), linked lists and attribute writes (pyperformance `richards`)."""
    total = 0
    for _ in range(n):
        s = Scheduler()
        IdleTask(s, 10000)
        wkq = Packet(Packet(None, 0, K_WORK), 0, K_WORK)
        WorkTask(s, wkq)
        wkq = Packet(Packet(Packet(None, I_DEVA, K_DEV), I_DEVA, K_DEV), I_DEVA, K_DEV)
        HandlerTask(s, I_HANDLERA, 2000, wkq)
        wkq = Packet(Packet(Packet(None, I_DEVB, K_DEV), I_DEVB, K_DEV), I_DEVB, K_DEV)
        HandlerTask(s, I_HANDLERB, 3000, wkq)
        DeviceTask(s, I_DEVA, 4000)
        DeviceTask(s, I_DEVB, 5000)
        s.schedule()
        total += s.qpkt_count + s.hold_count
    return total


# ---------------------------------------------------------------------------------------------------- json


def _json_doc(i: int) -> dict:
    return {
        "id": i,
        "name": f"user{i}",
        "email": f"user{i}@example.org",
        "active": i % 3 == 0,
        "score": i * 1.25,
        "tags": ["alpha", "beta", "gamma", str(i % 17)],
        "address": {"street": f"{i} Main Street", "city": "Springfield", "zip": f"{10000 + i % 9000}"},
        "history": [{"t": j, "v": j * i % 97, "ok": j % 2 == 0} for j in range(8)],
        "text": 'unicode \u00e9\u00e8\u00ea \u2603 and escapes "\\\n',
    }


def bench_json_dumps(n: int) -> int:
    """json.dumps of nested dicts and lists (pyperformance `json_dumps`)."""
    docs = [_json_doc(i) for i in range(400)]
    size = 0
    for _ in range(n):
        for d in docs:
            size += len(json.dumps(d))
        size += len(json.dumps(docs, indent=1, sort_keys=True))
    return size


def bench_json_loads(n: int) -> int:
    """json.loads of the same documents (pyperformance `json_loads`)."""
    texts = [json.dumps(_json_doc(i)) for i in range(400)]
    big = json.dumps([_json_doc(i) for i in range(400)], indent=1)
    count = 0
    for _ in range(n):
        for t in texts:
            count += len(json.loads(t))
        count += len(json.loads(big))
    return count


# --------------------------------------------------------------------------------------------------- regex

_REGEX_TEXT = (
    "From: alice@example.org To: bob@example.com Date: 2024-03-01 12:34:56 "
    "GET /index.html?x=1&y=two HTTP/1.1 200 5120 http://www.example.net/path/to/page "
    "phone +1-555-0100, ip 192.168.10.20, price $1,234.56, id #A12F-99 "
) * 40

_REGEXES = [
    r"[\w.+-]+@[\w-]+\.[\w.]+",
    r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    r"(GET|POST|PUT) (\S+) HTTP/(\d\.\d)",
    r"https?://[^\s/]+(/\S*)?",
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    r"\$[\d,]+\.\d\d",
    r"#[A-F0-9]+-\d+",
    r"(\w+)\s+\1",
    r"[aeiou]{2,}",
    r"(?i)example\.(org|com|net)",
]


def bench_regex(n: int) -> int:
    """Compiled regular expressions: findall, sub and split over log-like text (pyperformance `regex_*`)."""
    pats = [re.compile(p) for p in _REGEXES]
    found = 0
    for _ in range(n):
        for p in pats:
            found += len(p.findall(_REGEX_TEXT))
        found += len(pats[0].sub("<email>", _REGEX_TEXT))
        found += len(re.split(r"[,;]\s*", _REGEX_TEXT))
    return found


# -------------------------------------------------------------------------------------------------- pickle


class _Record:
    def __init__(self, i: int) -> None:
        self.i, self.name, self.vals = i, f"rec{i}", (i, i * 2.5, str(i))


def bench_pickle(n: int) -> int:
    """pickle.dumps/loads of dicts, lists, tuples, strings and instances (pyperformance `pickle*`)."""
    data = {
        "ints": list(range(2000)),
        "floats": [i * 0.5 for i in range(1000)],
        "strs": [f"string number {i}" for i in range(1000)],
        "nested": [{"a": i, "b": [i, (i, i)], "c": {"d": str(i)}} for i in range(500)],
        "records": [_Record(i) for i in range(300)],
    }
    size = 0
    for _ in range(n):
        for proto in (2, 4, 5):
            blob = pickle.dumps(data, protocol=proto)
            back = pickle.loads(blob)
            size += len(blob) + len(back["ints"])
    return size


# ---------------------------------------------------------------------------------------------- unpack_seq


def bench_unpack_sequence(n: int) -> int:
    """Tuple and list unpacking in a tight loop (pyperformance `unpack_sequence`)."""
    t = tuple(range(10))
    lst = list(range(10))
    acc = 0
    for _ in range(n * 20000):
        a, b, c, d, e, f, g, h, i, j = t
        a, b, c, d, e, f, g, h, i, j = lst
        k, m, o, p, q, r, s, u, v, w = t
        acc += a + j + k + w
    return acc


# ------------------------------------------------------------------------------------------------ generators


def _tree(depth: int) -> tuple | None:
    return None if depth == 0 else (_tree(depth - 1), depth, _tree(depth - 1))


def _walk(node: tuple | None) -> Iterator[int]:
    if node is not None:
        left, value, right = node
        yield from _walk(left)
        yield value
        yield from _walk(right)


def bench_generators(n: int) -> int:
    """Recursive generators with `yield from` (pyperformance `generators`)."""
    tree = _tree(14)
    total = 0
    for _ in range(n):
        total += sum(_walk(tree))
    return total


# ---------------------------------------------------------------------------------------------- deltablue-ish


class Var:
    """A variable in a chain of one-way equality constraints, re-planned on every edit (after deltablue)."""

    __slots__ = ("value", "determined_by", "constraints", "stay", "mark")

    def __init__(self, value: int) -> None:
        self.value, self.determined_by, self.constraints, self.stay, self.mark = value, None, [], True, 0


class Equal:
    __slots__ = ("src", "dst", "strength")

    def __init__(self, src: Var, dst: Var, strength: int) -> None:
        self.src, self.dst, self.strength = src, dst, strength
        src.constraints.append(self)
        dst.constraints.append(self)

    def execute(self) -> None:
        self.dst.value = self.src.value


class Scale(Equal):
    __slots__ = ("scale", "offset")

    def __init__(self, src: Var, dst: Var, strength: int, scale: int, offset: int) -> None:
        super().__init__(src, dst, strength)
        self.scale, self.offset = scale, offset

    def execute(self) -> None:
        self.dst.value = self.src.value * self.scale + self.offset


def _plan(start: Var, mark: int) -> list[Equal]:
    plan: list[Equal] = []
    todo = [start]
    while todo:
        v = todo.pop()
        if v.mark == mark:
            continue
        v.mark = mark
        for c in v.constraints:
            if c.src is v and c.dst.mark != mark:
                c.dst.determined_by = c
                plan.append(c)
                todo.append(c.dst)
    return plan


def bench_deltablue(n: int) -> int:
    """Constraint chains and projections, planned and executed repeatedly (after pyperformance `deltablue`)."""
    check = 0
    mark = 0
    for _ in range(n):
        chain = [Var(0) for _ in range(2000)]
        for i in range(len(chain) - 1):
            Equal(chain[i], chain[i + 1], i % 5)
        srcs = [Var(i) for i in range(500)]
        dsts = [Var(0) for _ in range(500)]
        for s, d in zip(srcs, dsts, strict=True):
            Scale(s, d, 2, 10, 1000)
        for value in range(10):
            mark += 1
            chain[0].value = value
            for c in _plan(chain[0], mark):
                c.execute()
            check += chain[-1].value
            for s in srcs[:50]:
                mark += 1
                s.value = value
                for c in _plan(s, mark):
                    c.execute()
        check += sum(d.value for d in dsts)
    return check


# ------------------------------------------------------------------------------------------------ raytrace


class Vec:
    __slots__ = ("x", "y", "z")

    def __init__(self, x: float, y: float, z: float) -> None:
        self.x, self.y, self.z = x, y, z

    def __add__(self, o: Vec) -> Vec:
        return Vec(self.x + o.x, self.y + o.y, self.z + o.z)

    def __sub__(self, o: Vec) -> Vec:
        return Vec(self.x - o.x, self.y - o.y, self.z - o.z)

    def scale(self, k: float) -> Vec:
        return Vec(self.x * k, self.y * k, self.z * k)

    def dot(self, o: Vec) -> float:
        return self.x * o.x + self.y * o.y + self.z * o.z

    def norm(self) -> Vec:
        return self.scale(1.0 / math.sqrt(self.dot(self)))


class Sphere:
    def __init__(self, c: Vec, r: float) -> None:
        self.c, self.r = c, r

    def hit(self, o: Vec, d: Vec) -> float | None:
        oc = o - self.c
        b = oc.dot(d)
        disc = b * b - oc.dot(oc) + self.r * self.r
        if disc < 0:
            return None
        t = -b - math.sqrt(disc)
        return t if t > 1e-6 else None


def bench_raytrace(n: int) -> float:
    """Operator overloading, small objects and float math (pyperformance `raytrace`, simplified)."""
    spheres = [Sphere(Vec(x * 1.5, 0.0, 6.0 + x), 1.0) for x in range(-2, 3)]
    light = Vec(1.0, 1.0, -1.0).norm()
    eye = Vec(0.0, 0.0, 0.0)
    acc = 0.0
    size = 60
    for _ in range(n):
        for py in range(size):
            for px in range(size):
                d = Vec((px - size / 2) / size, (py - size / 2) / size, 1.0).norm()
                best, hit = 1e9, None
                for s in spheres:
                    t = s.hit(eye, d)
                    if t is not None and t < best:
                        best, hit = t, s
                if hit is not None:
                    p = eye + d.scale(best)
                    acc += max(0.0, (p - hit.c).norm().dot(light))
    return round(acc, 6)


BENCHMARKS: dict[str, Callable[[int], object]] = {
    name[len("bench_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("bench_")
}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in BENCHMARKS:
        print(f"usage: bm.py {{{','.join(BENCHMARKS)}}} N", file=sys.stderr)
        return 2
    print(argv[1], BENCHMARKS[argv[1]](int(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
