/* A small shared library with the indirect control flow cfiguard guards: an operations table (indirect
 * calls inside the library), a qsort comparator (libc calls back into the library) and a visitor callback
 * (the library calls back into the executable). */
#ifndef SHAPES_H
#define SHAPES_H

struct shape;

struct shape_ops {
    const char *name;
    double (*area)(const struct shape *);
    double (*perimeter)(const struct shape *);
};

struct shape {
    const struct shape_ops *ops;
    double a, b;
};

struct shape shape_rect(double w, double h);
struct shape shape_square(double side);
struct shape shape_circle(double r);

/* Sort by area (through qsort and a comparator), then call visit(index, shape, arg) for each. */
void shapes_sort(struct shape *v, int n);
void shapes_visit(const struct shape *v, int n, void (*visit)(int, const struct shape *, void *), void *arg);

#endif
