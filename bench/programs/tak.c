/* tak.bc's peer: s = sum of tak(26 + i % 3, 16, 8) for i < 30. */
#include <stdint.h>
#include <stdio.h>

static int64_t tak(int64_t x, int64_t y, int64_t z) {
    if (!(y < x)) return z;
    return tak(tak(x - 1, y, z), tak(y - 1, z, x), tak(z - 1, x, y));
}

int main(void) {
    int64_t s = 0;
    for (int64_t i = 0; i < 30; i++) s += tak(26 + i % 3, 16, 8);
    printf("%lld\n", (long long)s);
    return 0;
}
