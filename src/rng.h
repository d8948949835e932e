// Seeded, counter-based random numbers: a stream is keyed by (seed, a, b) — for data, a = step and
// b = example index — so the same key gives the same numbers whatever the thread count or order.
// The generator is splitmix64 over a key hashed from the three words.
#ifndef PATHFORMER_RNG_H
#define PATHFORMER_RNG_H

#include <math.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    uint64_t state;
} Rng;

static inline uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline Rng rng_stream(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t key = rng_mix64(seed + 0x9e3779b97f4a7c15ULL);
    key = rng_mix64(key ^ (a + 0x632be59bd9b4e019ULL));
    key = rng_mix64(key ^ (b + 0x85157af5ULL));
    Rng rng = {key};
    return rng;
}

static inline uint64_t rng_u64(Rng *rng) {
    rng->state += 0x9e3779b97f4a7c15ULL;
    return rng_mix64(rng->state);
}

// Uniform integer in [0, n), n >= 1, without modulo bias (Lemire's multiply-and-reject).
static inline uint32_t rng_below(Rng *rng, uint32_t n) {
    uint64_t m = (uint64_t)(uint32_t)(rng_u64(rng) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(rng_u64(rng) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

// Uniform integer in [lo, hi].
static inline int rng_range(Rng *rng, int lo, int hi) { return lo + (int)rng_below(rng, (uint32_t)(hi - lo + 1)); }

// Uniform double in [0, 1) with 53 random bits.
static inline double rng_uniform(Rng *rng) { return (double)(rng_u64(rng) >> 11) * 0x1.0p-53; }

// Standard normal (Box-Muller; one value per call keeps streams simple).
static inline double rng_normal(Rng *rng) {
    double u1 = rng_uniform(rng);
    double u2 = rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * pf_log(u1)) * pf_cos_pi(2.0 * u2);  // the same bits on every machine (common.h)
}

#endif
