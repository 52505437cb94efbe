/*
 * collective.c — where a compiled train step takes part in a data-parallel run.
 *
 * In one process nothing is set and every function here is a no-op (or the identity), so
 * a model library never depends on MPI. Under mpirun, ssdc sets the two reductions to
 * those of its MPI shim (Runtime/mpi/ssd_mpi.c) and, before each step, this rank's share
 * of the global batch. The emitted train step calls ssd_allreduce_gradients just before
 * SGD; with sync-bn on, bn.c and fused.c call ssd_bn_sync_sums between their per-channel
 * sums and the use of those sums.
 */
#include "ssd_runtime.h"

static ssd_sum_floats_fn sum_floats;
static ssd_sum_doubles_fn sum_doubles;
static int sync_bn;
static int64_t local_examples = 1, global_examples = 1;

void ssd_set_collectives(ssd_sum_floats_fn floats, ssd_sum_doubles_fn doubles, int sync_batch_norm)
{
    sum_floats = floats;
    sum_doubles = doubles;
    sync_bn = doubles != NULL && sync_batch_norm;
}

void ssd_set_batch_share(int64_t local, int64_t global)
{
    local_examples = local > 0 ? local : 1;
    global_examples = global > 0 ? global : 1;
}

/* The loss is the mean over this rank's examples, so its gradient is weighted by the
 * rank's share of the global batch before the sum: the result is the gradient of the mean
 * over the global batch. */
void ssd_allreduce_gradients(int64_t n, float *g)
{
    if (sum_floats) sum_floats(g, n, (float)((double)local_examples / (double)global_examples));
}

int ssd_bn_sync_active(void) { return sync_bn; }

int64_t ssd_bn_sync_count(int64_t count)
{
    return sync_bn ? count * global_examples / local_examples : count;
}

void ssd_bn_sync_sums(int C, double *sums, int weighted)
{
    if (!sync_bn) return;
    const double share = (double)local_examples / (double)global_examples;
    if (weighted)
        for (int i = 0; i < 2 * C; ++i) sums[i] *= share;
    sum_doubles(sums, 2 * (int64_t)C);
    if (weighted)
        for (int i = 0; i < 2 * C; ++i) sums[i] /= share;
}
