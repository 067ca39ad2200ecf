#include <stdio.h>

#include "shapes.h"

static const char *size_word(int rank) {
    switch (rank) { /* dense enough for a jump table at -O2 */
    case 0: return "smallest";
    case 1: return "second";
    case 2: return "third";
    case 3: return "fourth";
    case 4: return "fifth";
    case 5: return "sixth";
    case 6: return "seventh";
    default: return "largest";
    }
}

static void print_one(int i, const struct shape *s, void *arg) {
    double *total = arg;
    *total += s->ops->area(s);
    printf("%-8s %-7s area %9.3f perimeter %8.3f\n", size_word(i), s->ops->name, s->ops->area(s),
           s->ops->perimeter(s));
}

int main(int argc, char **argv) {
    (void)argv;
    struct shape v[] = {shape_circle(2.0), shape_rect(3.0, 4.5), shape_square(1.5), shape_circle(0.5),
                        shape_rect(10.0, 0.25), shape_square(4.0 + argc - 1)};
    int n = (int)(sizeof v / sizeof v[0]);
    double total = 0;
    shapes_sort(v, n);
    shapes_visit(v, n, print_one, &total);
    printf("total area %.3f\n", total);
    return 0;
}
