// Exceptions: throws from depth 50 caught at the top with a destructor running
// in every frame, rethrow from the middle, catch by base class, catch(...),
// exceptions through function pointers, virtual calls and std::function,
// std::exception_ptr, nested exceptions, function-try-blocks, destructors that
// catch internally during unwinding, library exceptions, and noexcept paths.
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

static int constructed, destroyed;
static long destroy_sum;

struct Guard {
    explicit Guard(int id) : id(id) { constructed++; }
    ~Guard() {
        destroyed++;
        destroy_sum = destroy_sum * 3 % 1000003 + id;
    }
    Guard(const Guard &) = delete;
    int id;
};

struct BaseError : std::runtime_error {
    BaseError(const std::string &m, int depth) : std::runtime_error(m), depth(depth) {}
    virtual const char *tag() const { return "base"; }
    int depth;
};
struct DerivedError : BaseError {
    using BaseError::BaseError;
    const char *tag() const override { return "derived"; }
};
struct OtherError : std::logic_error {
    using std::logic_error::logic_error;
};

__attribute__((noinline)) static int dive(int depth, int throw_at, int kind) {
    Guard g(depth);
    if (depth == throw_at) {
        switch (kind) {
        case 0: throw DerivedError("derived at " + std::to_string(depth), depth);
        case 1: throw BaseError("base at " + std::to_string(depth), depth);
        case 2: throw OtherError("other at " + std::to_string(depth));
        case 3: throw depth;
        case 4: throw std::string("string at ") + std::to_string(depth);
        case 5: throw "c-string";
        default: break;
        }
    }
    if (depth > 200) return depth;
    return dive(depth + 1, throw_at, kind) + g.id % 2;
}

// a frame in the middle that catches, records and rethrows
static int rethrow_seen;
__attribute__((noinline)) static int middle(int depth, int throw_at, int rethrow_at) {
    Guard g(1000 + depth);
    if (depth == rethrow_at) {
        try {
            return dive(depth + 1, throw_at, 0);
        } catch (const BaseError &e) {
            rethrow_seen++;
            throw; // rethrow the original DerivedError
        }
    }
    return middle(depth + 1, throw_at, rethrow_at) + 1;
}

static void reset() { constructed = destroyed = 0, destroy_sum = 0; }

static void test_depth50() {
    for (int kind = 0; kind <= 6; kind++) {
        reset();
        std::string what;
        try {
            int r = dive(0, 50, kind);
            what = "returned " + std::to_string(r);
        } catch (const BaseError &e) { // catch by base class
            what = std::string(e.tag()) + " '" + e.what() + "' depth " + std::to_string(e.depth);
        } catch (const std::exception &e) {
            what = std::string("std::exception '") + e.what() + "'";
        } catch (int v) {
            what = "int " + std::to_string(v);
        } catch (const std::string &s) {
            what = "std::string '" + s + "'";
        } catch (...) {
            what = "unknown";
        }
        std::printf("depth50 kind=%d: %s; constructed=%d destroyed=%d sum=%ld\n", kind, what.c_str(),
                    constructed, destroyed, destroy_sum);
    }
}

static void test_many_depths() {
    long total = 0;
    for (int round = 0; round < 100; round++) {
        int at = round % 61;
        reset();
        try {
            dive(0, at, round % 2);
        } catch (const BaseError &e) {
            total += e.depth + destroyed;
        }
    }
    std::printf("100 throws at depths 0..60: total=%ld\n", total);
}

static void test_rethrow() {
    for (int at = 10; at <= 50; at += 20) {
        reset();
        try {
            middle(0, at + 10, at);
        } catch (const DerivedError &e) {
            std::printf("rethrow at %d: caught %s '%s' destroyed=%d seen=%d\n", at, e.tag(), e.what(), destroyed,
                        rethrow_seen);
        }
    }
}

// exceptions through indirect calls
struct Thrower {
    virtual ~Thrower() = default;
    virtual int run(int x) const = 0;
};
struct Fine : Thrower {
    int run(int x) const override { return x * 2; }
};
struct Bad : Thrower {
    int run(int x) const override {
        Guard g(x);
        if (x % 3 == 0) throw std::out_of_range("bad " + std::to_string(x));
        return -x;
    }
};
static int fp_ok(int x) { return x + 1; }
static int fp_throw(int x) {
    Guard g(x);
    throw DerivedError("via function pointer", x);
}

static void test_indirect() {
    int (*fps[])(int) = {fp_ok, fp_throw, fp_ok};
    for (int i = 0; i < 3; i++) {
        try {
            std::printf("fp[%d] -> %d\n", i, fps[i](i));
        } catch (const BaseError &e) {
            std::printf("fp[%d] threw %s (%s)\n", i, e.what(), e.tag());
        }
    }
    Fine fine;
    Bad bad;
    const Thrower *ts[] = {&fine, &bad};
    for (const Thrower *t : ts) {
        for (int x = 1; x <= 6; x++) {
            try {
                std::printf("virtual run(%d) -> %d\n", x, t->run(x));
            } catch (const std::logic_error &e) {
                std::printf("virtual run(%d) threw logic_error '%s'\n", x, e.what());
            }
        }
    }
    std::vector<std::function<int(int)>> fns = {
        [](int x) { return x * x; },
        [](int x) -> int { throw OtherError("lambda " + std::to_string(x)); },
        [&](int x) { return ts[0]->run(x) + ts[1]->run(x + 1); },
    };
    for (size_t i = 0; i < fns.size(); i++) {
        for (int x = 1; x <= 2; x++) {
            try {
                std::printf("std::function[%zu](%d) -> %d\n", i, x, fns[i](x));
            } catch (const std::exception &e) {
                std::printf("std::function[%zu](%d) threw '%s'\n", i, x, e.what());
            }
        }
    }
}

// exception_ptr, nested exceptions
static void test_exception_ptr() {
    std::vector<std::exception_ptr> saved;
    for (int i = 0; i < 4; i++) {
        try {
            dive(0, 5 + i, i % 3);
        } catch (...) {
            saved.push_back(std::current_exception());
        }
    }
    for (size_t i = 0; i < saved.size(); i++) {
        try {
            std::rethrow_exception(saved[i]);
        } catch (const std::exception &e) {
            std::printf("rethrow_exception[%zu]: %s\n", i, e.what());
        }
    }
    try {
        try {
            dive(0, 20, 2);
        } catch (...) {
            std::throw_with_nested(std::runtime_error("outer wrapper"));
        }
    } catch (const std::exception &e) {
        std::printf("nested: %s", e.what());
        try {
            std::rethrow_if_nested(e);
        } catch (const std::exception &inner) {
            std::printf(" <- %s", inner.what());
        }
        std::printf("\n");
    }
}

// destructors that use exceptions internally while unwinding
struct Careful {
    int id;
    static int inner_caught;
    ~Careful() {
        try {
            if (std::uncaught_exceptions() > 0) throw std::runtime_error("inside destructor");
        } catch (const std::exception &) {
            inner_caught++;
        }
    }
};
int Careful::inner_caught = 0;
__attribute__((noinline)) static void careful_dive(int d) {
    Careful c{d};
    if (d == 0) throw std::runtime_error("bottom");
    careful_dive(d - 1);
}

// function-try-block in a constructor
struct Widget {
    std::unique_ptr<int> p;
    explicit Widget(int v) try : p(make(v)) {
    } catch (const std::invalid_argument &e) {
        std::printf("Widget ctor caught '%s', converting\n", e.what());
        throw std::runtime_error(std::string("widget failed: ") + e.what());
    }
    static std::unique_ptr<int> make(int v) {
        if (v < 0) throw std::invalid_argument("negative");
        return std::unique_ptr<int>(new int(v));
    }
};

// noexcept paths
static int safe_div(int a, int b) noexcept {
    try {
        if (b == 0) throw std::domain_error("div by zero");
        return a / b;
    } catch (const std::domain_error &) {
        return 0;
    }
}
static int may_throw(int x) { return x > 100 ? throw std::overflow_error("too big") : x; }
static int never_throws(int x) noexcept { return x + 1; }

int main() {
    test_depth50();
    test_many_depths();
    test_rethrow();
    test_indirect();
    test_exception_ptr();

    try {
        careful_dive(30);
    } catch (const std::exception &e) {
        std::printf("careful_dive: '%s', destructors caught internally %d times\n", e.what(), Careful::inner_caught);
    }
    for (int v : {5, -5}) {
        try {
            Widget w(v);
            std::printf("Widget(%d) = %d\n", v, *w.p);
        } catch (const std::exception &e) {
            std::printf("Widget(%d) threw '%s'\n", v, e.what());
        }
    }
    std::printf("noexcept: safe_div=%d,%d may_throw noexcept? %d never_throws noexcept? %d -> %d\n",
                safe_div(10, 3), safe_div(1, 0), noexcept(may_throw(1)), noexcept(never_throws(1)),
                never_throws(41));
    try {
        std::printf("may_throw(5)=%d\n", may_throw(5));
        std::printf("may_throw(500)=%d\n", may_throw(500));
    } catch (const std::overflow_error &e) {
        std::printf("may_throw threw '%s'\n", e.what());
    }

    // library exceptions
    std::vector<int> v(3);
    try {
        v.at(10) = 1;
    } catch (const std::out_of_range &e) {
        std::printf("vector::at threw out_of_range\n");
    }
    try {
        std::string s("abc");
        s.substr(10);
    } catch (const std::out_of_range &e) {
        std::printf("string::substr threw out_of_range\n");
    }
    try {
        std::printf("stoi: %d\n", std::stoi("12345"));
        std::printf("stoi: %d\n", std::stoi("nope"));
    } catch (const std::invalid_argument &e) {
        std::printf("stoi threw invalid_argument\n");
    }
    try {
        std::function<void()> empty;
        empty();
    } catch (const std::bad_function_call &e) {
        std::printf("empty std::function threw bad_function_call\n");
    }
    std::printf("totals: constructed=%d destroyed=%d\n", constructed, destroyed);
    return 0;
}
