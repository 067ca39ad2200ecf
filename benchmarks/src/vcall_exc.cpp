// A C++ workload whose hot paths are what label CFI guards in C++: virtual calls through vtables,
// std::function and std::sort comparators (indirect calls), returns, and exceptions (the unwinder walks
// cfiguard's regenerated .eh_frame and LSDAs, and lands through personality-routine indirect jumps).
//
//   vcall_exc N      runs N rounds, prints a checksum (identical for original and hardened binaries)
//
// Per round: a scene of polymorphic shapes is built and queried through virtual calls, a visitor walks an
// expression tree, an event queue dispatches std::function handlers, a map/sort phase runs comparators, and a
// small parser rejects a fraction of its inputs by throwing (so exception cost is measured, not just present).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Shape {
    virtual ~Shape() = default;
    virtual double area() const = 0;
    virtual double perimeter() const = 0;
    virtual void scale(double k) = 0;
};

struct Circle final : Shape {
    double r;
    explicit Circle(double r) : r(r) {}
    double area() const override { return M_PI * r * r; }
    double perimeter() const override { return 2 * M_PI * r; }
    void scale(double k) override { r *= k; }
};

struct Rect final : Shape {
    double w, h;
    Rect(double w, double h) : w(w), h(h) {}
    double area() const override { return w * h; }
    double perimeter() const override { return 2 * (w + h); }
    void scale(double k) override { w *= k; h *= k; }
};

struct Triangle final : Shape {
    double a, b, c;
    Triangle(double a, double b, double c) : a(a), b(b), c(c) {}
    double area() const override {
        double s = (a + b + c) / 2;
        return std::sqrt(std::max(0.0, s * (s - a) * (s - b) * (s - c)));
    }
    double perimeter() const override { return a + b + c; }
    void scale(double k) override { a *= k; b *= k; c *= k; }
};

struct Node;
struct Num;
struct Add;
struct Mul;
struct Visitor {
    virtual ~Visitor() = default;
    virtual int64_t visit(const Num &) = 0;
    virtual int64_t visit(const Add &) = 0;
    virtual int64_t visit(const Mul &) = 0;
};
struct Node {
    virtual ~Node() = default;
    virtual int64_t accept(Visitor &v) const = 0;
};
struct Num final : Node {
    int64_t v;
    explicit Num(int64_t v) : v(v) {}
    int64_t accept(Visitor &vis) const override { return vis.visit(*this); }
};
struct Add final : Node {
    std::unique_ptr<Node> l, r;
    Add(std::unique_ptr<Node> l, std::unique_ptr<Node> r) : l(std::move(l)), r(std::move(r)) {}
    int64_t accept(Visitor &vis) const override { return vis.visit(*this); }
};
struct Mul final : Node {
    std::unique_ptr<Node> l, r;
    Mul(std::unique_ptr<Node> l, std::unique_ptr<Node> r) : l(std::move(l)), r(std::move(r)) {}
    int64_t accept(Visitor &vis) const override { return vis.visit(*this); }
};
struct Eval final : Visitor {
    int64_t visit(const Num &n) override { return n.v; }
    int64_t visit(const Add &a) override { return a.l->accept(*this) + a.r->accept(*this); }
    int64_t visit(const Mul &m) override { return (m.l->accept(*this) * m.r->accept(*this)) % 1000003; }
};
struct Count final : Visitor {
    int64_t visit(const Num &) override { return 1; }
    int64_t visit(const Add &a) override { return 1 + a.l->accept(*this) + a.r->accept(*this); }
    int64_t visit(const Mul &m) override { return 1 + m.l->accept(*this) + m.r->accept(*this); }
};

uint64_t rng_state = 0x2545F4914F6CDD1DULL;
uint64_t rnd() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

std::unique_ptr<Node> build(int depth) {
    if (depth == 0 || rnd() % 8 == 0)
        return std::make_unique<Num>(static_cast<int64_t>(rnd() % 100));
    if (rnd() & 1)
        return std::make_unique<Add>(build(depth - 1), build(depth - 1));
    return std::make_unique<Mul>(build(depth - 1), build(depth - 1));
}

struct ParseError : std::runtime_error {
    explicit ParseError(const std::string &m) : std::runtime_error(m) {}
};

__attribute__((noinline)) int64_t parse_field(const std::string &s) {
    if (s.empty() || s[0] == 'x')
        throw ParseError("bad field: " + s);
    int64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9')
            throw ParseError("not a digit");
        v = v * 10 + (c - '0');
    }
    return v;
}

__attribute__((noinline)) int64_t parse_record(const std::vector<std::string> &fields) {
    int64_t sum = 0;
    for (const auto &f : fields)
        sum += parse_field(f);
    return sum;
}

int64_t round_once(int r) {
    int64_t check = 0;
    // 1. polymorphic scene
    std::vector<std::unique_ptr<Shape>> scene;
    for (int i = 0; i < 20000; i++) {
        switch (rnd() % 3) {
        case 0: scene.push_back(std::make_unique<Circle>(1 + rnd() % 10)); break;
        case 1: scene.push_back(std::make_unique<Rect>(1 + rnd() % 10, 1 + rnd() % 7)); break;
        default: scene.push_back(std::make_unique<Triangle>(3, 4, 5 + rnd() % 2)); break;
        }
    }
    for (int pass = 0; pass < 10; pass++) {
        double a = 0, p = 0;
        for (auto &s : scene) {
            s->scale(pass % 2 ? 0.5 : 2.0);
            a += s->area();
            p += s->perimeter();
        }
        check += static_cast<int64_t>(a + p) % 1000;
    }
    std::sort(scene.begin(), scene.end(), [](const auto &x, const auto &y) { return x->area() < y->area(); });
    check += static_cast<int64_t>(scene.front()->area() * 100);
    // 2. visitor over expression trees
    Eval ev;
    Count cnt;
    for (int t = 0; t < 40; t++) {
        auto tree = build(12);
        check += tree->accept(ev) + tree->accept(cnt);
    }
    // 3. event dispatch through std::function
    std::vector<std::function<int64_t(int64_t)>> handlers = {
        [](int64_t x) { return x + 1; },
        [](int64_t x) { return x * 3 % 1000003; },
        [&check](int64_t x) { return x ^ (check & 0xff); },
        [](int64_t x) { return x / 2 + 7; },
    };
    int64_t x = r;
    for (int i = 0; i < 300000; i++)
        x = handlers[rnd() & 3](x);
    check += x;
    // 4. ordered map with a custom comparator
    std::map<std::string, int64_t, std::greater<>> m;
    for (int i = 0; i < 20000; i++)
        m["key" + std::to_string(rnd() % 5000)] += i;
    for (const auto &kv : m)
        check += kv.second % 7;
    // 5. exceptions: about 1 record in 8 is rejected by a throw two frames down
    int64_t ok = 0, bad = 0;
    for (int i = 0; i < 20000; i++) {
        std::vector<std::string> rec = {std::to_string(i), std::to_string(rnd() % 1000),
                                        rnd() % 8 == 0 ? "x" + std::to_string(i) : std::to_string(i % 97)};
        try {
            ok += parse_record(rec);
        } catch (const ParseError &e) {
            bad += static_cast<int64_t>(e.what()[0]);
        }
    }
    return check + ok + bad;
}

} // namespace

int main(int argc, char **argv) {
    int n = argc > 1 ? std::atoi(argv[1]) : 1;
    int64_t total = 0;
    for (int r = 0; r < n; r++)
        total += round_once(r);
    std::printf("%lld\n", static_cast<long long>(total));
    return 0;
}
