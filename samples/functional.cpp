// std::function, lambdas (capturing and not), std::bind, std::sort / stable_sort
// with lambda comparators, std::map / std::set / std::unordered_map /
// std::string, std::visit over std::variant, priority_queue with a lambda
// comparator, and smart pointers with custom deleters.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

static int add(int a, int b) { return a + b; }
struct Multiplier {
    int k;
    int operator()(int x) const { return k * x; }
    int twice(int x) const { return 2 * k * x; }
};

static std::function<long(long)> compose(std::function<long(long)> f, std::function<long(long)> g) {
    return [f, g](long x) { return f(g(x)); };
}

static const char *text =
    "the quick brown fox jumps over the lazy dog while the lazy cat sleeps and the quick "
    "dog barks at the brown cat near the old oak tree where a fox once slept under the old "
    "moon and the stars and a dog and a cat and a fox watched the quick river run";

struct Circle {
    double r;
};
struct Rect {
    double w, h;
};
struct Label {
    std::string text;
};
using Thing = std::variant<Circle, Rect, Label, int>;

static int deleted;
static void free_int(int *p) {
    deleted++;
    delete p;
}

int main() {
    // calculator: map of std::function
    std::map<std::string, std::function<int(int, int)>> ops = {
        {"add", add},
        {"sub", [](int a, int b) { return a - b; }},
        {"mul", std::multiplies<int>()},
        {"pow", [](int a, int b) { int r = 1; while (b-- > 0) r *= a; return r; }},
        {"bind", std::bind(add, std::placeholders::_2, 100)},
    };
    int base = 7;
    ops["cap"] = [base](int a, int b) { return a * base + b; };
    ops["mod"] = [&base](int a, int b) { return b ? (a + base) % b : 0; };
    for (int a = -2; a <= 4; a += 3)
        for (int b = 0; b <= 3; b++)
            for (const auto &kv : ops) std::printf("%s(%d,%d)=%d\n", kv.first.c_str(), a, b, kv.second(a, b));
    base = 9;
    std::printf("after base change: cap=%d mod=%d\n", ops["cap"](1, 1), ops["mod"](1, 5));

    // function objects, member pointers through std::function
    Multiplier m3{3};
    std::function<int(int)> f1 = m3;
    std::function<int(const Multiplier &, int)> f2 = &Multiplier::twice;
    std::function<int(int)> f3 = std::bind(&Multiplier::twice, &m3, std::placeholders::_1);
    for (int x = 0; x < 4; x++) std::printf("functor %d: %d %d %d\n", x, f1(x), f2(m3, x), f3(x));

    // composition and recursion through std::function
    auto inc = [](long x) { return x + 1; };
    auto sq = [](long x) { return x * x; };
    auto h = compose(compose(sq, inc), [](long x) { return 2 * x; });
    for (long x = 0; x < 6; x++) std::printf("compose(%ld)=%ld\n", x, h(x));
    std::function<long(int)> fib = [&fib](int n) -> long { return n < 2 ? n : fib(n - 1) + fib(n - 2); };
    for (int n = 0; n <= 24; n += 4) std::printf("fib(%d)=%ld\n", n, fib(n));

    // word statistics with map / set / unordered_map / string
    std::map<std::string, int> counts;
    std::unordered_map<std::string, int> first_pos;
    std::string t(text), word;
    int pos = 0;
    for (size_t i = 0; i <= t.size(); i++) {
        if (i == t.size() || t[i] == ' ') {
            if (!word.empty()) {
                counts[word]++;
                first_pos.emplace(word, pos++);
            }
            word.clear();
        } else {
            word += t[i];
        }
    }
    for (const auto &kv : counts)
        std::printf("count %-6s %d first=%d\n", kv.first.c_str(), kv.second, first_pos.at(kv.first));
    std::vector<std::pair<std::string, int>> byfreq(counts.begin(), counts.end());
    std::sort(byfreq.begin(), byfreq.end(), [](const auto &a, const auto &b) {
        if (a.second != b.second) return a.second > b.second;
        return a.first < b.first;
    });
    for (size_t i = 0; i < 8; i++) std::printf("top %zu: %s x%d\n", i, byfreq[i].first.c_str(), byfreq[i].second);
    std::set<size_t> lengths;
    for (const auto &kv : counts) lengths.insert(kv.first.size());
    std::printf("distinct lengths:");
    for (size_t l : lengths) std::printf(" %zu", l);
    std::printf("\n");

    // sorting with lambdas
    std::vector<int> nums(200);
    unsigned seed = 2024;
    for (int &n : nums) {
        seed = seed * 1664525u + 1013904223u;
        n = static_cast<int>(seed >> 20) % 1000 - 500;
    }
    auto by_abs = [](int a, int b) { return std::abs(a) != std::abs(b) ? std::abs(a) < std::abs(b) : a < b; };
    std::vector<std::function<bool(int, int)>> cmps = {
        std::less<int>(), std::greater<int>(), by_abs,
        [](int a, int b) { return (a & 7) != (b & 7) ? (a & 7) < (b & 7) : a < b; }};
    for (size_t c = 0; c < cmps.size(); c++) {
        std::vector<int> v = nums;
        std::sort(v.begin(), v.end(), cmps[c]);
        long checksum = 0;
        for (size_t i = 0; i < v.size(); i++) checksum = (checksum * 31 + v[i]) % 1000000007;
        std::printf("sort[%zu]: first=%d last=%d checksum=%ld\n", c, v.front(), v.back(), checksum);
    }
    std::vector<std::string> words;
    for (const auto &kv : counts) words.push_back(kv.first);
    std::stable_sort(words.begin(), words.end(), [](const std::string &a, const std::string &b) {
        return a.size() < b.size();
    });
    std::string joined = std::accumulate(words.begin(), words.end(), std::string(),
                                         [](std::string acc, const std::string &w) { return acc.empty() ? w : acc + "," + w; });
    std::printf("stable by length: %s\n", joined.c_str());
    std::vector<int> squares(10);
    std::iota(squares.begin(), squares.end(), 1);
    std::transform(squares.begin(), squares.end(), squares.begin(), [](int x) { return x * x; });
    int evens = static_cast<int>(std::count_if(squares.begin(), squares.end(), [](int x) { return x % 2 == 0; }));
    std::printf("squares sum=%d evens=%d\n", std::accumulate(squares.begin(), squares.end(), 0), evens);

    // priority_queue with a lambda comparator
    auto cmp = [](const std::pair<int, std::string> &a, const std::pair<int, std::string> &b) {
        return a.first != b.first ? a.first > b.first : a.second > b.second;
    };
    std::priority_queue<std::pair<int, std::string>, std::vector<std::pair<int, std::string>>, decltype(cmp)> pq(cmp);
    for (const auto &kv : counts) pq.push({static_cast<int>(kv.first.size()) * 10 - kv.second, kv.first});
    std::printf("pq order:");
    while (!pq.empty()) {
        std::printf(" %s", pq.top().second.c_str());
        pq.pop();
    }
    std::printf("\n");

    // std::visit
    std::vector<Thing> things = {Circle{1.5}, Rect{2, 3}, Label{"hello"}, 42, Rect{0.5, 8}, Label{""}, -7};
    for (const Thing &th : things) {
        std::string d = std::visit(
            [](const auto &x) -> std::string {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, Circle>) return "circle area*100=" + std::to_string(int(x.r * x.r * 314));
                else if constexpr (std::is_same_v<T, Rect>) return "rect area=" + std::to_string(int(x.w * x.h));
                else if constexpr (std::is_same_v<T, Label>) return "label '" + x.text + "'";
                else return "int " + std::to_string(x);
            },
            th);
        std::printf("visit[%zu]: %s\n", th.index(), d.c_str());
    }

    // smart pointers with custom deleters
    {
        std::unique_ptr<int, void (*)(int *)> a(new int(1), free_int);
        std::shared_ptr<int> b(new int(2), [](int *p) { deleted += 10; delete p; });
        std::shared_ptr<int> c = b;
        std::printf("use_count=%ld values=%d,%d\n", b.use_count(), *a, *c);
    }
    std::printf("deleted=%d\n", deleted);
    return 0;
}
