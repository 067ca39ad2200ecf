// Exceptions thrown inside callbacks running on many threads, caught and rethrown across frames.
#include <atomic>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

static std::atomic<long> caught{0};

__attribute__((noinline)) static void deep(int n, const std::function<void(int)> &cb) {
    if (n == 0) cb(n);
    else deep(n - 1, cb);
}

static void run(int id) {
    std::function<void(int)> thrower = [id](int) { throw std::runtime_error("t" + std::to_string(id)); };
    for (int i = 0; i < 2000; i++) {
        try {
            try {
                deep(i % 40, thrower);
            } catch (const std::runtime_error &) {
                throw;
            }
        } catch (const std::exception &e) {
            caught += e.what()[0] == 't';
        }
    }
}

int main() {
    std::vector<std::thread> ts;
    for (int i = 0; i < 8; i++) ts.emplace_back(run, i);
    for (auto &t : ts) t.join();
    std::printf("caught %ld\n", caught.load());
    return 0;
}
