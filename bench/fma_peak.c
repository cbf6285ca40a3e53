/* The machine's FMA peak per core: 12 independent chains of AVX-512 FMAs (enough to cover the FMA latency on
 * every pipe), in f64 and f32. The GD benchmark (RESULTS.md section 3) compares its GFLOP/s with this.
 * Build and run: gcc -O2 -mavx512f -mfma bench/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 * (run two copies at once, `/tmp/fma_peak & /tmp/fma_peak; wait`, to see both cores together). */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const long n = 200000000;
    __m512d a[12];
    __m512 b[12];
    __m512d x = _mm512_set1_pd(0.9999999), y = _mm512_set1_pd(1e-7); /* chains converge to 1 */
    __m512 xs = _mm512_set1_ps(0.9999f), ys = _mm512_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) {
        a[i] = _mm512_set1_pd(i);
        b[i] = _mm512_set1_ps(i);
    }
    double t0 = seconds();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_pd(a[i], x, y);
    }
    double t1 = seconds();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) b[i] = _mm512_fmadd_ps(b[i], xs, ys);
    }
    double t2 = seconds();
    double sum = 0;  /* keeps the chains live */
    for (int i = 0; i < 12; i++) {
        double d[8];
        float f[16];
        _mm512_storeu_pd(d, a[i]);
        _mm512_storeu_ps(f, b[i]);
        sum += d[0] + f[0];
    }
    printf("f64: %.1f GFLOP/s per core, f32: %.1f GFLOP/s per core (checksum %g)\n",
           n * 12.0 * 8 * 2 / (t1 - t0) / 1e9, n * 12.0 * 16 * 2 / (t2 - t1) / 1e9, sum);
    return 0;
}
