// The probes of probe.h on the hand-built BFS transformer (SPEC §5), whose algorithm is known: the
// check that the probes find what a model computes, where it computes it. Its vertex token u holds,
// entering layer l, the set of vertices within l + 1 hops of u (the reach section), so the fact
// "u is within k hops of vertex 1" is linear in the state entering layer k - 1 and, for k >= 2, not
// in the states before it.
#ifndef PATHFORMER_INTERP_PROBE_BFS_H
#define PATHFORMER_INTERP_PROBE_BFS_H

#include <stdint.h>

#include "bfs/bfs.h"
#include "interp/probe.h"

// Facts over `count` graphs (seed) of the BFS model (a training model, which keeps every layer's
// states): for each vertex token u, dist_u = dist(1, u) (N + 1 when unreachable) and within_k =
// [dist(1, u) <= k] for k = 1..N; for the answer token, dist_t = the model's label. States 0..L
// (bfs_layer_state). 0 or -1 with the error set.
int probe_collect_bfs(ProbeData *data, BfsModel *model, uint64_t seed, long count);
// Every weight of the model drawn from N(0, 1): the random-model control.
void probe_bfs_randomize(BfsModel *model, uint64_t seed);

#endif
