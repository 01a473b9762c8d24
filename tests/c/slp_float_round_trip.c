/* A float32 round trip of a row, reduced from a graphc row loop (no undefined behaviour: every
   index is in bounds).  GCC 12.2 at -O3 with AVX2 or AVX-512 (-march=native on the CI machine)
   versions the loop on whether `a` and `out` overlap, and its fallback copies the doubles
   straight through, dropping the rounding to float; -fno-tree-slp-vectorize keeps it.  Exit
   status 0 when every value was rounded.  The arrays below sit next to each other on the stack,
   which is what sends the call down the fallback path. */
#include <stdint.h>
#include <stdio.h>

__attribute__((noinline)) void row(const double *a, double *out, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        float v0[4];
        for (int64_t c = 0; c < 4; c++) v0[c] = (float)a[r * 4 + c];
        double v1[4];
        for (int64_t c = 0; c < 4; c++) v1[c] = (double)v0[c];
        for (int64_t c = 0; c < 4; c++) out[r * 4 + c] = v1[c];
    }
}

int main(void) {
    double a[4] = {1.86459274, 2.96351763, 2.67488018, 2.67488018}, out[4];
    row(a, out, 1);
    int dropped = 0;
    for (int c = 0; c < 4; c++) {
        const double want = (double)(float)a[c];
        if (out[c] != want) {
            dropped = 1;
            printf("element %d: %.17g, not the float32 value %.17g\n", c, out[c], want);
        }
    }
    return dropped;
}
