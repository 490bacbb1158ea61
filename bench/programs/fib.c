#include <stdio.h>
#include <stdlib.h>
long fib(long n){ return n < 2 ? n : fib(n-1) + fib(n-2); }
int main(int c, char**v){ long n = c>1?atol(v[1]):38; printf("%ld\n", fib(n)); return 0; }
