#include <stdlib.h>

#include "shapes.h"

static const double PI = 3.14159265358979323846;

static double rect_area(const struct shape *s) { return s->a * s->b; }
static double rect_perimeter(const struct shape *s) { return 2 * (s->a + s->b); }
static double circle_area(const struct shape *s) { return PI * s->a * s->a; }
static double circle_perimeter(const struct shape *s) { return 2 * PI * s->a; }

static const struct shape_ops RECT = {"rect", rect_area, rect_perimeter};
static const struct shape_ops SQUARE = {"square", rect_area, rect_perimeter};
static const struct shape_ops CIRCLE = {"circle", circle_area, circle_perimeter};

struct shape shape_rect(double w, double h) { return (struct shape){&RECT, w, h}; }
struct shape shape_square(double side) { return (struct shape){&SQUARE, side, side}; }
struct shape shape_circle(double r) { return (struct shape){&CIRCLE, r, 0}; }

static int by_area(const void *x, const void *y) {
    const struct shape *p = x, *q = y;
    double d = p->ops->area(p) - q->ops->area(q);
    return (d > 0) - (d < 0);
}

void shapes_sort(struct shape *v, int n) { qsort(v, (size_t)n, sizeof *v, by_area); }

void shapes_visit(const struct shape *v, int n, void (*visit)(int, const struct shape *, void *), void *arg) {
    for (int i = 0; i < n; i++)
        visit(i, &v[i], arg);
}
