/* primes.bc's peer: the count and the sum of the primes below 2,000,000 by trial division,
   with the same is_prime and divides helpers. */
#include <stdint.h>
#include <stdio.h>

static int64_t divides(int64_t n, int64_t d) { return n % d == 0; }

static int64_t is_prime(int64_t n) {
    if (n < 2) return 0;
    if (n < 4) return 1;
    if (divides(n, 2)) return 0;
    for (int64_t d = 3; !(d * d > n); d += 2)
        if (divides(n, d)) return 0;
    return 1;
}

int main(void) {
    int64_t count = 0, sum = 0;
    for (int64_t n = 0; n < 2000000; n++)
        if (is_prime(n)) {
            count++;
            sum += n;
        }
    printf("%lld\n%lld\n", (long long)count, (long long)sum);
    return 0;
}
