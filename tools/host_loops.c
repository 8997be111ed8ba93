/* What this machine gives two copies of a loop against one, with no engine code at all: the
 * controls for the two-process figures (see docs/benchmarks.md, "Where CBOW's second core
 * goes").
 *
 *   fma SECS          ten independent AVX2 FMA chains in registers (compute only)
 *   stream SECS MIB   read-modify-write of every float of a MIB-MiB buffer, again and again
 *                     (0.5: inside one core's L2; 12: in the shared L3; 256: memory)
 *   rand SECS MIB     a dependent walk over the cache lines of a MIB-MiB buffer (latency)
 *
 * Prints operations per second. Build and compare one copy with two at once:
 *   gcc -O2 -mavx2 -mfma -o host_loops tools/host_loops.c
 *   one=$(./host_loops stream 1.5 12)
 *   (./host_loops stream 1.5 12 > two.out &); a=$(./host_loops stream 1.5 12); sleep 0.3
 *   python3 -c "print(($a + $(cat two.out)) / $one)"
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s fma|stream|rand SECONDS [MIB]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    double secs = atof(argv[2]), mib = argc > 3 ? atof(argv[3]) : 1.0;
    double t0 = now(), t;
    uint64_t ops = 0;
    if (!strcmp(mode, "fma")) {
        __m256 a[10];
        for (int i = 0; i < 10; i++) a[i] = _mm256_set1_ps(1.0f + i * 1e-7f);
        __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
        do {
            for (int r = 0; r < 100000; r++)
                for (int i = 0; i < 10; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
            ops += 100000 * 10;
            t = now();
        } while (t - t0 < secs);
        float s = 0, o[8];
        for (int i = 0; i < 10; i++) { _mm256_storeu_ps(o, a[i]); s += o[0]; }
        if (s == 12345.0f) puts("");
    } else {
        size_t n = (size_t)(mib * 1024 * 1024 / 4);
        if (n < 64) n = 64;
        float *b = aligned_alloc(64, n * 4);
        if (!b) return 1;
        for (size_t i = 0; i < n; i++) b[i] = 1.0f;
        if (!strcmp(mode, "stream")) {
            do {
                for (size_t i = 0; i < n; i++) b[i] = b[i] * 0.999f + 0.001f;
                ops += n;
                t = now();
            } while (t - t0 < secs);
        } else if (!strcmp(mode, "rand")) {
            uint32_t *p = (uint32_t *)b;
            size_t lines = n / 16;
            uint32_t *perm = malloc(lines * 4);
            for (size_t i = 0; i < lines; i++) perm[i] = (uint32_t)i;
            srand(1);
            for (size_t i = lines - 1; i > 0; i--) {
                size_t j = ((size_t)rand() * RAND_MAX + rand()) % (i + 1);
                uint32_t x = perm[i]; perm[i] = perm[j]; perm[j] = x;
            }
            for (size_t i = 0; i < lines; i++) p[perm[i] * 16] = perm[(i + 1) % lines] * 16;
            uint32_t cur = 0;
            t0 = now();
            do {
                for (int r = 0; r < 1000000; r++) cur = p[cur];
                ops += 1000000;
                t = now();
            } while (t - t0 < secs);
            if (cur == 7) puts("");
            free(perm);
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
        free(b);
    }
    printf("%.4e\n", ops / (t - t0));
    return 0;
}
