// Inside src/bfs/ only: the BFS transformer's training kernels (bfs_kernels.c), written once against
// lanes.h's 16-lane vector and compiled once per instruction set like src/ops/'s kernels, every
// variant giving the same bits. A token index sits in the lanes (T = N + 1 <= 16), so one vector
// holds a head's scores for every query, or a column of the projections for every token.
//
// Projections come packed per token: proj (B, T, PW) holds every head's query, then every head's
// key, then every head's value: head h's query at columns h QK .. h QK + QK, its key at
// H QK + h QK, its value at 2 H QK + h HV (PW = 2 H QK + H HV, H QK <= 32, HV <= 16).
// The saved probabilities are att (B, H, T, 16): for example b, head h and key s, a vector over
// the queries t (lanes from T on unused).
#ifndef PATHFORMER_BFS_KERNELS_H
#define PATHFORMER_BFS_KERNELS_H

#include <stddef.h>

enum { BFS_KERNEL_LANES = 16, BFS_KERNEL_MAX_QK = 32 };  // tokens, and query columns of all heads

typedef struct {
    const char *name;
    // y (B, T, C) += at columns [offset, offset + HV): the sum over the H heads of softmax(q k^T) v
    // for examples [b0, b1); att saved.
    void (*attention_forward)(float *y, float *att, const float *proj, int PW, int b0, int b1, int T, int C, int offset, int H, int QK, int HV);
    // dproj (B, T, PW) WRITTEN (all its columns) from dy (B, T, C) at
    // columns [offset, offset + HV), for examples [b0, b1).
    void (*attention_backward)(float *dproj, const float *dy, const float *proj, const float *att, int PW, int b0,
                               int b1, int T, int C, int offset, int H, int QK, int HV);
    // Rows [r0, r1) of out (R, C): columns [offset, offset + W) = 2 sigmoid(5 inp) - 1 (the others untouched).
    void (*squash_forward)(float *out, const float *inp, int r0, int r1, int C, int offset, int W);
    // Rows [r0, r1): dinp at columns [offset, offset + W) WRITTEN = dout 10 s (1 - s), s = sigmoid(5 inp).
    void (*squash_backward)(float *dinp, const float *dout, const float *inp, int r0, int r1, int C, int offset,
                            int W);
} BfsKernels;

#if defined(__x86_64__) && defined(PF_KERNELS_SIMD)
extern const BfsKernels BFS_KERNELS_avx512, BFS_KERNELS_avx2;
#endif
#if defined(__aarch64__)
extern const BfsKernels BFS_KERNELS_neon;
#else
extern const BfsKernels BFS_KERNELS_plain;
#endif

#endif
