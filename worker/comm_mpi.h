/* comm_mpi.h - the MPI implementation of the comm interface (worker/comm.h)
 * on host buffers, plus the helpers a worker group needs to carve its
 * communicators (one per pipeline stage, one per TP column).
 *
 * Every MPI call runs with MPI_ERRORS_RETURN on the communicator, and a
 * failure becomes CV_ECOMM with the MPI error string and the peer named by
 * its rank in this comm and in MPI_COMM_WORLD. Point-to-point receives take
 * a capacity: a shorter message is accepted (the protocols above it carry
 * their own lengths). All-reduce, gatherv and request waits poll and nap
 * rather than spin (a spinning rank slows the peer it waits for on shared
 * cores). Only in builds with MPI (CARAVAN_HAVE_MPI). */
#pragma once
#include <mpi.h>

#include "comm.h"

/* Wrap `mc` (duplicated, so the caller keeps ownership of `mc`); `name`
 * labels error messages ("world", "stage 1 tp"). */
cv_status comm_mpi_create(MPI_Comm mc, const char *name, comm **out, cv_err *e);
/* MPI_Comm_split of an MPI comm: ranks with the same color form a new comm,
 * ordered by key. Collective over `parent`. */
cv_status comm_mpi_split(comm *parent, int color, int key, const char *name, comm **out,
                         cv_err *e);
/* The underlying communicator (the duplicate owned by c). */
MPI_Comm comm_mpi_handle(comm *c);
/* True when c is an MPI comm. */
bool comm_is_mpi(const comm *c);
/* Rank of this comm's rank `r` in MPI_COMM_WORLD (for messages). */
int comm_mpi_world_rank(comm *c, int r);
