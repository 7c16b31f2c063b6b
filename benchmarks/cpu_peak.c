/* The instruction rates the kernels are bound by, on one core: 512-bit vpdpbusd (byte dot products, the
 * integer kernel) and vfmadd231ps (float32 fmas, attention's products), each as 12 independent chains so
 * that latency does not count. Their product with the lanes gives the machine's ceiling: a vpdpbusd is 64
 * byte products, 32 with the integer kernel's 16-bit activations (high and low bytes); an fma is 16.
 *
 *   gcc -O3 -funroll-loops -mavx512f -mavx512bw -mavx512vnni benchmarks/cpu_peak.c -o /tmp/cpu_peak
 *   /tmp/cpu_peak & /tmp/cpu_peak & wait      # both cores at once (the clock may drop with two)
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const long n = 200000000;
  __m512i a[12], b = _mm512_set1_epi8(3), c = _mm512_set1_epi8(5);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_epi32(i);
  double t = now();
  for (long k = 0; k < n; k++) {
    for (int i = 0; i < 12; i++) a[i] = _mm512_dpbusd_epi32(a[i], b, c);
    __asm__ volatile("" : "+v"(b));  /* keeps the loop from being folded */
  }
  double dt = now() - t;
  int s = 0;
  for (int i = 0; i < 12; i++) s += _mm512_reduce_add_epi32(a[i]);
  printf("vpdpbusd zmm: %.2f G/s a core (%.0f G 16-bit MAC/s)  [%d]\n", n * 12 / dt / 1e9, n * 12 * 32 / dt / 1e9, s);

  __m512 f[12], x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  for (int i = 0; i < 12; i++) f[i] = _mm512_set1_ps((float)i);
  t = now();
  for (long k = 0; k < n; k++) {
    for (int i = 0; i < 12; i++) f[i] = _mm512_fmadd_ps(f[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  dt = now() - t;
  float fs = 0;
  for (int i = 0; i < 12; i++) fs += _mm512_reduce_add_ps(f[i]);
  printf("vfmadd231ps zmm: %.2f G/s a core (%.0f G float32 MAC/s)  [%g]\n", n * 12 / dt / 1e9, n * 12 * 16 / dt / 1e9, fs);
  return 0;
}
