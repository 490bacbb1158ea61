/* ack.bc's peer: the sum of four calls ack(3, 10). */
#include <stdint.h>
#include <stdio.h>

static int64_t ack(int64_t m, int64_t n) {
    if (m == 0) return n + 1;
    if (n == 0) return ack(m - 1, 1);
    return ack(m - 1, ack(m, n - 1));
}

int main(void) {
    int64_t s = 0;
    for (int64_t i = 0; i < 4; i++) s += ack(3, 10);
    printf("%lld\n", (long long)s);
    return 0;
}
