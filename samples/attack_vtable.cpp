// Attack demo: an object's vptr is overwritten with a pointer to a fake vtable
// (an array in writable memory) whose slots hold the address of win(), a
// function whose address is never taken; then a virtual call is made.
//
//   attack_vtable            normal mode: prints results, exits 0
//   attack_vtable OFFSET     attack mode: OFFSET (hex, may be negative) is
//                            sym(win) - sym(ref); the fake slots hold &ref + OFFSET
//
// win and ref have C linkage so that `nm` shows them unmangled.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

// With -fcf-protection, keep win() free of endbr64: it must not look like an indirect-branch target.
#if defined(__CET__)
#define NO_ENDBR __attribute__((nocf_check))
#else
#define NO_ENDBR
#endif

extern "C" {
NO_ENDBR __attribute__((used, noinline, force_align_arg_pointer)) static void win(void) {
    static const char msg[] = "HIJACKED\n";
    ssize_t r = write(1, msg, sizeof msg - 1);
    (void)r;
    _exit(42);
}
__attribute__((noinline)) int ref(int x) { return 5 * x - 1; }
}

struct Animal {
    virtual ~Animal() {}
    virtual int speak(int times) const = 0;
    virtual const char *name() const = 0;
};
struct Dog : Animal {
    int volume = 3;
    int speak(int times) const override { return times * volume; }
    const char *name() const override { return "dog"; }
};
struct Cat : Animal {
    int lives = 9;
    int speak(int times) const override { return lives - times; }
    const char *name() const override { return "cat"; }
};

__attribute__((noinline)) static Animal *make(int kind) {
    if (kind == 0) return new Dog;
    return new Cat;
}
__attribute__((noinline)) static int invoke(const Animal *a, int x) { return a->speak(x); }

static int (*volatile helper)(int) = ref;
static void *fake_vtable[16];

int main(int argc, char **argv) {
    Animal *zoo[2] = {make(0), make(1)};
    for (Animal *a : zoo)
        for (int x = 0; x < 4; x++) std::printf("%s speaks %d -> %d\n", a->name(), x, invoke(a, x));
    for (int x = 0; x < 4; x++) std::printf("helper(%d) = %d\n", x, helper(x));

    if (argc > 1) {
        long long off = std::strtoll(argv[1], nullptr, 16);
        std::uintptr_t target = reinterpret_cast<std::uintptr_t>(helper) + static_cast<std::uintptr_t>(off);
        for (void *&slot : fake_vtable) slot = reinterpret_cast<void *>(target);
        void **fake_vptr = &fake_vtable[2]; // [0] offset-to-top, [1] RTTI, then the virtual functions
        std::printf("attack: pointing the dog's vptr at a fake vtable of &ref%+lld\n", off);
        std::fflush(stdout);
        Animal *victim = zoo[0];
        __asm__ volatile("" : "+r"(victim));
        std::memcpy(static_cast<void *>(victim), &fake_vptr, sizeof fake_vptr);
    }
    std::printf("after: %d\n", invoke(zoo[0], 7));
    for (Animal *a : zoo) delete a;
    return 0;
}
