// Virtual calls: a class hierarchy called through base pointers, multiple
// inheritance (this-adjusting thunks), virtual inheritance (virtual thunks,
// construction vtables), covariant returns, pointers to virtual member
// functions, virtual calls from constructors/destructors, double dispatch,
// dynamic_cast (down, cross, failing, to reference) and typeid.
#include <cstdio>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

static int trace_n;
static void trace(const char *what) {
    trace_n++;
    std::printf("  trace: %s\n", what);
}

// ---- a plain hierarchy ------------------------------------------------------
struct Shape {
    explicit Shape(const char *n) : name_(n) { describe_in_ctor(); }
    virtual ~Shape() { trace("~Shape"); }
    virtual long area() const = 0;
    virtual long perimeter() const = 0;
    virtual const char *kind() const { return "shape"; }
    virtual Shape *clone() const = 0;
    virtual void scale(int k) = 0;
    std::string label() const { return std::string(kind()) + ":" + name_; }
    void describe_in_ctor() const { std::printf("  constructing %s as %s\n", name_.c_str(), kind()); }

  private:
    std::string name_;
};
struct Rect : Shape {
    Rect(const char *n, long w, long h) : Shape(n), w(w), h(h) {}
    ~Rect() override { trace("~Rect"); }
    long area() const override { return w * h; }
    long perimeter() const override { return 2 * (w + h); }
    const char *kind() const override { return "rect"; }
    Rect *clone() const override { return new Rect(*this); }
    void scale(int k) override { w *= k, h *= k; }
    long w, h;
};
struct Square final : Rect {
    Square(const char *n, long s) : Rect(n, s, s) {}
    ~Square() override { trace("~Square"); }
    const char *kind() const override { return "square"; }
    Square *clone() const override { return new Square(*this); }
};
struct Circle : Shape {
    Circle(const char *n, long r) : Shape(n), r(r) {}
    long area() const override { return 314 * r * r / 100; }
    long perimeter() const override { return 628 * r / 100; }
    const char *kind() const override { return "circle"; }
    Circle *clone() const override { return new Circle(*this); }
    void scale(int k) override { r *= k; }
    long r;
};
struct Triangle : Shape {
    Triangle(const char *n, long a, long b, long c) : Shape(n), a(a), b(b), c(c) {}
    long area() const override { return a * b / 2; }
    long perimeter() const override { return a + b + c; }
    Triangle *clone() const override { return new Triangle(*this); }
    void scale(int k) override { a *= k, b *= k, c *= k; }
    long a, b, c; // kind() is inherited from Shape
};

// ---- multiple inheritance -----------------------------------------------------
struct Printable {
    virtual ~Printable() = default;
    virtual std::string print() const = 0;
    virtual int priority() const { return 0; }
};
struct Comparable {
    virtual ~Comparable() = default;
    virtual long key() const = 0;
    bool less(const Comparable &o) const { return key() < o.key(); }
};
struct Item : Printable, Comparable {
    Item(std::string n, long v) : n(std::move(n)), v(v) {}
    std::string print() const override { return "item(" + n + "," + std::to_string(v) + ")"; }
    int priority() const override { return static_cast<int>(v % 5); }
    long key() const override { return v * 7 % 23; }
    std::string n;
    long v;
};
struct SpecialItem : Item {
    using Item::Item;
    std::string print() const override { return "special-" + Item::print(); }
    long key() const override { return -v; }
};

// ---- virtual inheritance (diamond) ---------------------------------------------
struct Base {
    Base() { id = ++counter; }
    virtual ~Base() = default;
    virtual std::string who() const { return "Base"; }
    virtual int depth() const { return 0; }
    int id;
    static int counter;
};
int Base::counter = 0;
struct Left : virtual Base {
    std::string who() const override { return "Left<" + Base::who() + ">"; }
    int depth() const override { return 1; }
    virtual int left_only() const { return 10 + id; }
};
struct Right : virtual Base {
    std::string who() const override { return "Right<" + Base::who() + ">"; }
    virtual int right_only() const { return 20 + id; }
};
struct Bottom : Left, Right {
    std::string who() const override { return "Bottom<" + Left::who() + "," + Right::who() + ">"; }
    int depth() const override { return 2; }
    int right_only() const override { return 200 + id; }
};

// ---- double dispatch ---------------------------------------------------------
struct Asteroid;
struct Ship;
struct Body {
    virtual ~Body() = default;
    virtual std::string collide(const Body &other) const = 0;
    virtual std::string hit_by(const Asteroid &) const = 0;
    virtual std::string hit_by(const Ship &) const = 0;
};
struct Asteroid : Body {
    std::string collide(const Body &o) const override { return o.hit_by(*this); }
    std::string hit_by(const Asteroid &) const override { return "asteroid/asteroid: bounce"; }
    std::string hit_by(const Ship &) const override { return "ship/asteroid: ship destroyed"; }
};
struct Ship : Body {
    std::string collide(const Body &o) const override { return o.hit_by(*this); }
    std::string hit_by(const Asteroid &) const override { return "asteroid/ship: ship destroyed"; }
    std::string hit_by(const Ship &) const override { return "ship/ship: docking"; }
};

__attribute__((noinline)) static long total_area(const std::vector<std::unique_ptr<Shape>> &v) {
    long t = 0;
    for (const auto &s : v) t += s->area();
    return t;
}

int main() {
    std::vector<std::unique_ptr<Shape>> shapes;
    shapes.emplace_back(new Rect("r1", 3, 4));
    shapes.emplace_back(new Square("s1", 5));
    shapes.emplace_back(new Circle("c1", 10));
    shapes.emplace_back(new Triangle("t1", 6, 8, 10));
    shapes.emplace_back(new Rect("r2", 7, 2));
    for (int round = 0; round < 3; round++) {
        for (const auto &s : shapes)
            std::printf("round %d %-10s area=%ld perimeter=%ld\n", round, s->label().c_str(), s->area(),
                        s->perimeter());
        std::printf("round %d total area %ld\n", round, total_area(shapes));
        for (auto &s : shapes) s->scale(round + 2);
    }
    {
        std::unique_ptr<Shape> copy(shapes[1]->clone());
        std::printf("clone of %s has area %ld\n", copy->label().c_str(), copy->area());
        std::unique_ptr<Square> sq(static_cast<Square *>(shapes[1].get())->clone());
        std::printf("covariant clone kind=%s w=%ld\n", sq->kind(), sq->w);
    }

    // pointers to (virtual) member functions
    long (Shape::*measures[])() const = {&Shape::area, &Shape::perimeter};
    for (const auto &s : shapes)
        for (auto m : measures) std::printf("member pointer on %s -> %ld\n", s->kind(), (s.get()->*m)());
    const char *(Shape::*kind_ptr)() const = &Shape::kind;
    std::printf("member pointer kind: %s %s\n", (shapes[0].get()->*kind_ptr)(), (shapes[3].get()->*kind_ptr)());

    // dynamic_cast
    for (const auto &s : shapes) {
        Shape *p = s.get();
        auto *r = dynamic_cast<Rect *>(p);
        auto *sq = dynamic_cast<Square *>(p);
        auto *c = dynamic_cast<Circle *>(p);
        std::printf("dynamic_cast %-8s rect=%d square=%d circle=%d\n", p->kind(), r != nullptr, sq != nullptr,
                    c != nullptr);
        try {
            const Circle &cr = dynamic_cast<const Circle &>(*p);
            std::printf("  reference cast ok, r=%ld\n", cr.r);
        } catch (const std::bad_cast &e) {
            std::printf("  reference cast threw bad_cast\n");
        }
    }

    // multiple inheritance
    std::vector<std::unique_ptr<Item>> items;
    const char *names[] = {"apple", "bolt", "cable", "dome", "edge", "flint", "gear"};
    for (int i = 0; i < 7; i++) {
        if (i % 3 == 2)
            items.emplace_back(new SpecialItem(names[i], i * 13 + 5));
        else
            items.emplace_back(new Item(names[i], i * 13 + 5));
    }
    for (const auto &it : items) {
        const Printable *p = it.get();
        const Comparable *c = it.get();
        std::printf("%-28s priority=%d key=%ld\n", p->print().c_str(), p->priority(), c->key());
        // cross cast between the two bases
        const Comparable *cc = dynamic_cast<const Comparable *>(p);
        const Printable *pp = dynamic_cast<const Printable *>(c);
        std::printf("  cross casts ok: %d %d\n", cc == c, pp == p);
    }
    int less_count = 0;
    for (size_t i = 0; i < items.size(); i++)
        for (size_t j = 0; j < items.size(); j++) less_count += items[i]->less(*items[j]);
    std::printf("less pairs: %d\n", less_count);

    // virtual inheritance
    {
        Bottom b;
        Left l;
        Right r;
        const Base *bases[] = {&b, &l, &r, static_cast<const Left *>(&b), static_cast<const Right *>(&b)};
        for (const Base *x : bases) {
            std::printf("who=%s depth=%d", x->who().c_str(), x->depth());
            if (auto *lp = dynamic_cast<const Left *>(x)) std::printf(" left_only=%d", lp->left_only());
            if (auto *rp = dynamic_cast<const Right *>(x)) std::printf(" right_only=%d", rp->right_only());
            std::printf(" bottom=%d\n", dynamic_cast<const Bottom *>(x) != nullptr);
        }
        std::printf("typeid: %s %s %s\n", typeid(*bases[0]).name(), typeid(*bases[1]).name(),
                    typeid(*bases[2]).name());
    }

    // double dispatch
    Asteroid a;
    Ship s;
    const Body *bodies[] = {&a, &s};
    for (const Body *x : bodies)
        for (const Body *y : bodies) std::printf("collide: %s\n", x->collide(*y).c_str());

    shapes.clear(); // virtual destructors
    std::printf("traces: %d\n", trace_n);
    return 0;
}
