/* atomics.bc's peer: four pthreads each __atomic_fetch_add (sequentially consistent, as
   the spec's atomic_add) 20,000,000 times into eight shared cells, joined; prints the sum of
   the threads' results, then the sum of the cells. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#define CELLS 8
#define WORKERS 4
#define N 20000000
static int64_t mem[CELLS];

static void *worker(void *arg) {
    int64_t w = (int64_t)(intptr_t)arg, mine = 0;
    for (int64_t i = 0; i < N; i++) {
        int64_t d = i % 3 + 1;
        __atomic_fetch_add(&mem[(i + w) % CELLS], d, __ATOMIC_SEQ_CST);
        mine += d;
    }
    return (void *)(intptr_t)mine;
}

int main(void) {
    pthread_t t[WORKERS];
    for (int64_t w = 0; w < WORKERS; w++)
        if (pthread_create(&t[w], NULL, worker, (void *)(intptr_t)w) != 0) return 1;
    int64_t joined = 0, cells = 0;
    for (int64_t w = 0; w < WORKERS; w++) {
        void *r;
        pthread_join(t[w], &r);
        joined += (int64_t)(intptr_t)r;
    }
    for (int64_t i = 0; i < CELLS; i++) cells += mem[i];
    printf("%lld\n%lld\n", (long long)joined, (long long)cells);
    return 0;
}
