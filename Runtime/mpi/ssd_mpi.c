/*
 * ssd_mpi.c — the MPI side of data-parallel training, built with `mpicc` into its own
 * shared library that ssdc loads (dlopen) only when it runs under mpirun. Neither ssdc nor
 * the model libraries link MPI: the model's runtime calls the two reductions below through
 * the function pointers of collective.c, which the driver sets to these.
 *
 * Reductions are deterministic: the sum of every element is taken in rank order
 * (rank 0 + rank 1 + ...), in double, by the rank that owns the element's chunk, so the
 * same inputs on the same ranks give bit-identical results whatever the timing. The float
 * reduction is a reduce-scatter over K fixed chunks (MPI_Alltoallv) then an allgather
 * (MPI_Allgatherv): each rank sends and receives 2 (K - 1) / K of the data, as a ring
 * allreduce does.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int rank_, size_;
static double reduce_seconds; /* time in ssd_mpi_sum_floats since start */
static float *send_, *recv_;  /* work buffers of the float reduction, grown as needed */
static size_t capacity;

/* Starts MPI (funneled: only the thread that calls ssdc's entry points talks MPI, between
 * the OpenMP regions). Errors end the whole job (MPI_ERRORS_ARE_FATAL), so a dead peer
 * never leaves a rank waiting. Returns 0, or the MPI error code. */
int ssd_mpi_init(int *rank, int *size)
{
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    *rank = rank_;
    *size = size_;
    return 0;
}

/* Element range [lo, hi) of chunk i of n elements split over the ranks. */
static void chunk(int64_t n, int i, int64_t *lo, int64_t *hi)
{
    *lo = n * i / size_;
    *hi = n * (i + 1) / size_;
}

static int grow(size_t floats)
{
    if (floats <= capacity) return 0;
    float *s = realloc(send_, floats * sizeof(float)), *r = NULL;
    if (s) send_ = s;
    r = realloc(recv_, floats * sizeof(float));
    if (r) recv_ = r;
    if (!s || !r) return -1;
    capacity = floats;
    return 0;
}

/* data = sum over ranks, in rank order, of weight_r * data_r (each rank passes its own
 * weight). Aborts the job if memory runs out. */
void ssd_mpi_sum_floats(float *data, int64_t n, float weight)
{
    const double t0 = MPI_Wtime();
    if (grow((size_t)n) != 0) MPI_Abort(MPI_COMM_WORLD, 3);
    int *counts = malloc(4 * sizeof(int) * (size_t)size_);
    if (!counts) MPI_Abort(MPI_COMM_WORLD, 3);
    int *displs = counts + size_, *rcounts = counts + 2 * size_, *rdispls = counts + 3 * size_;
    int64_t mlo, mhi;
    chunk(n, rank_, &mlo, &mhi);
    const int mine = (int)(mhi - mlo);
    for (int i = 0; i < size_; ++i) {
        int64_t lo, hi;
        chunk(n, i, &lo, &hi);
        counts[i] = (int)(hi - lo);
        displs[i] = (int)lo;
        rcounts[i] = mine;
        rdispls[i] = i * mine;
    }
    for (int64_t i = 0; i < n; ++i) send_[i] = data[i] * weight;
    /* recv_[r * mine + j] = rank r's element mlo + j */
    MPI_Alltoallv(send_, counts, displs, MPI_FLOAT, recv_, rcounts, rdispls, MPI_FLOAT,
                  MPI_COMM_WORLD);
    for (int j = 0; j < mine; ++j) {
        double s = 0.0;
        for (int r = 0; r < size_; ++r) s += recv_[(size_t)r * mine + j];
        data[mlo + j] = (float)s;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, data, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
    free(counts);
    reduce_seconds += MPI_Wtime() - t0;
}

/* data = sum over ranks, in rank order, of data_r (small arrays: BN sums, metrics). */
void ssd_mpi_sum_doubles(double *data, int64_t n)
{
    double *all = malloc(sizeof(double) * (size_t)n * (size_t)size_);
    if (!all) MPI_Abort(MPI_COMM_WORLD, 3);
    MPI_Allgather(data, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD);
    for (int64_t i = 0; i < n; ++i) {
        double s = 0.0;
        for (int r = 0; r < size_; ++r) s += all[(size_t)r * n + i];
        data[i] = s;
    }
    free(all);
}

/* Rank 0's data to every rank (the parameters at the start of a run). */
void ssd_mpi_broadcast_floats(float *data, int64_t n)
{
    for (int64_t off = 0; off < n; off += 1 << 30) {
        const int64_t left = n - off;
        MPI_Bcast(data + off, (int)(left < (1 << 30) ? left : (1 << 30)), MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
}

/* Seconds spent in ssd_mpi_sum_floats so far. */
double ssd_mpi_reduce_seconds(void) { return reduce_seconds; }

/* Ends every rank of the job with `code` (after an error on this one). */
void ssd_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void ssd_mpi_finalize(void)
{
    free(send_);
    free(recv_);
    send_ = recv_ = NULL;
    capacity = 0;
    MPI_Finalize();
}
