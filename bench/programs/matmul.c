/* matmul.bc's peer: C = A * B for 600x600 matrices in one array (A, then B, then C), loops
   i-k-j, then the checksum sum of C[i][j] * ((i + j) % 7 + 1). */
#include <stdint.h>
#include <stdio.h>

#define N 600
static int64_t mem[3 * N * N];

int main(void) {
    int64_t *a = mem, *b = mem + N * N, *c = mem + 2 * N * N;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            a[i * N + j] = (i * j + 1) % 17;
            b[i * N + j] = (i + 2 * j) % 13;
        }
    for (int64_t i = 0; i < N; i++)
        for (int64_t k = 0; k < N; k++) {
            int64_t aik = a[i * N + k];
            for (int64_t j = 0; j < N; j++) c[i * N + j] += aik * b[k * N + j];
        }
    int64_t s = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) s += c[i * N + j] * ((i + j) % 7 + 1);
    printf("%lld\n", (long long)s);
    return 0;
}
