/* mandel.bc's peer: Mandelbrot in 16.16 fixed point on a 500x500 grid, at most 2000 steps;
   prints the total steps and the number of points that never escaped. `>>` of a negative
   int64_t is an arithmetic shift in gcc, as `shr` is in the spec. */
#include <stdint.h>
#include <stdio.h>

static int64_t escape(int64_t cx, int64_t cy, int64_t max) {
    int64_t zx = 0, zy = 0, i = 0;
    for (;;) {
        int64_t zx2 = (zx * zx) >> 16, zy2 = (zy * zy) >> 16;
        if (zx2 + zy2 > 262144) break;
        zy = ((zx * zy) >> 15) + cy;
        zx = zx2 - zy2 + cx;
        if (!(++i < max)) break;
    }
    return i;
}

int main(void) {
    const int64_t size = 500, max = 2000, step = 163840 / size;
    int64_t total = 0, inside = 0;
    for (int64_t y = 0; y < size; y++)
        for (int64_t x = 0; x < size; x++) {
            int64_t n = escape(x * step - 131072, y * step - 81920, max);
            total += n;
            inside += n == max;
        }
    printf("%lld\n%lld\n", (long long)total, (long long)inside);
    return 0;
}
