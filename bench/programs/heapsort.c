/* heapsort.bc's peer: heapsort of 1,000,000 Park-Miller numbers (seed 42, each mod 1,000,000)
   through the same less and swap helpers, a check that the array is in order, and the
   checksum s = (s * 31 + a[i]) mod 1,000,000,007. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N 1000000
static int64_t mem[N];

static int64_t less(int64_t i, int64_t j) { return mem[i] < mem[j]; }

static void swap(int64_t i, int64_t j) {
    int64_t t = mem[i];
    mem[i] = mem[j];
    mem[j] = t;
}

static void sift(int64_t root, int64_t end) {
    for (;;) {
        int64_t child = root * 2 + 1;
        if (child >= end) return;
        if (child + 1 < end && less(child, child + 1)) child++;
        if (!less(root, child)) return;
        swap(root, child);
        root = child;
    }
}

static void heapsort(int64_t n) {
    for (int64_t i = n / 2; i != 0;) sift(--i, n);
    for (int64_t e = n; !(e <= 1);) {
        e--;
        swap(0, e);
        sift(0, e);
    }
}

int main(void) {
    int64_t x = 42, s = 0;
    for (int64_t i = 0; i < N; i++) {
        x = x * 16807 % 2147483647;
        mem[i] = x % 1000000;
    }
    heapsort(N);
    for (int64_t i = 1; i < N; i++)
        if (less(i, i - 1)) abort();
    for (int64_t i = 0; i < N; i++) s = (s * 31 + mem[i]) % 1000000007;
    printf("%lld\n", (long long)s);
    return 0;
}
