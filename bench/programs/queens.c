/* queens.bc's peer: the number of solutions of the 12-queens puzzle, counted twice over,
   with the same board (one cell per row) and the same helpers. */
#include <stdint.h>
#include <stdio.h>

static int64_t board[32];

static int64_t absdiff(int64_t a, int64_t b) {
    int64_t d = a - b;
    return d < 0 ? -d : d;
}

static int64_t safe(int64_t row, int64_t col) {
    for (int64_t r = 0; r < row; r++) {
        int64_t c = board[r];
        if (c == col) return 0;
        if (absdiff(c, col) == row - r) return 0;
    }
    return 1;
}

static int64_t place(int64_t row, int64_t n) {
    if (!(row < n)) return 1;
    int64_t count = 0;
    for (int64_t col = 0; col < n; col++)
        if (safe(row, col)) {
            board[row] = col;
            count += place(row + 1, n);
        }
    return count;
}

int main(void) {
    int64_t s = 0;
    for (int64_t i = 0; i < 2; i++) s += place(0, 12);
    printf("%lld\n", (long long)s);
    return 0;
}
