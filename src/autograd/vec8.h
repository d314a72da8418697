/* vec8.h - eight-lane float and double vectors (GCC/Clang vector extensions) for the
 * reductions that sum on eight fixed lanes: lane j takes the elements c with c mod 8 = j,
 * the tail joins lane 0, and the lanes combine in a fixed tree. Written with vectors the
 * compiler keeps them in registers at any target width (SSE2 pairs up to AVX-512 whole);
 * the arithmetic per lane is the scalar one, so the sums are the same bits as the scalar
 * loops they replace. No lane ever mixes with another before the tree. */
#ifndef BG_VEC8_H
#define BG_VEC8_H

#include <stdint.h>
#include <string.h>

/* The helpers are always inlined: a vector passed to or returned from a real call would
 * travel by different conventions in an AVX clone and a baseline helper. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi" /* no vector crosses a call (see above) */
#endif
#define BG_V8_INLINE static inline __attribute__((always_inline))

/* Row kernels built with these run in the widest vectors the CPU has: the compiler makes an
 * AVX-512, an AVX2 and a baseline copy and the loader picks one by CPUID (GNU ifunc). The
 * arithmetic is the same in each (ISO C mode: no contraction into FMA), so are the bits. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute) && defined(__linux__)
#if __has_attribute(target_clones)
#define BG_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), noinline))
#endif
#endif
#ifndef BG_CLONES
#define BG_CLONES
#endif

typedef float bg_v8f __attribute__((vector_size(32)));
typedef double bg_v8d __attribute__((vector_size(64)));

BG_V8_INLINE bg_v8f bg_v8f_load(const float *p)
{
    bg_v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

BG_V8_INLINE void bg_v8f_store(float *p, bg_v8f v) { memcpy(p, &v, sizeof v); }
BG_V8_INLINE bg_v8f bg_v8f_set1(float x) { return (bg_v8f){ x, x, x, x, x, x, x, x }; }
BG_V8_INLINE bg_v8d bg_v8d_set1(double x) { return (bg_v8d){ x, x, x, x, x, x, x, x }; }
BG_V8_INLINE bg_v8d bg_v8_widen(bg_v8f v) { return __builtin_convertvector(v, bg_v8d); }

BG_V8_INLINE double bg_v8d_tree(bg_v8d l)
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#endif
