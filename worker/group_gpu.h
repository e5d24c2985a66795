/* group_gpu.h - the GPU side of a worker group (worker/group.c): which
 * device each rank computes on, from one --device spec for the whole group,
 * and the NCCL communicator of a stage's TP ranks for the forward pass's
 * all-reduce. MPI builds only (like group.c).
 *
 * Device spec (group_gpu_device), one string for every rank:
 *   "cpu" (or empty)   the CPU
 *   "cuda:N"           cuda:N on every rank
 *   "cuda:local"       cuda:L, L = this rank's index among the ranks of its
 *                      node (MPI shared-memory split, ordered by world rank)
 *   "D0,D1,...,Dn-1"   world rank r takes element r (each one of the above),
 *                      so a group can mix CPU and GPU ranks: "cuda:0,cpu".
 * Which comm carries the TP all-reduce (group_gpu_tp_comm): NCCL on device
 * buffers when the build has NCCL and every rank of the stage has a GPU of
 * its own; otherwise the MPI comm on host memory, with forward.c staging the
 * activations through the host (ranks sharing one GPU, CPU ranks, mixed
 * stages). CARAVAN_NCCL=0 forces the host-staged path. Stage-to-stage
 * traffic (the pipeline's hidden states) always goes over MPI from host
 * memory: forward_stage takes and returns host activations. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include <mpi.h>

#include "../core/status.h"
#include "../kernels/backend.h"
#include "comm.h"

/* This rank's device for `spec`, written to out ("cpu" or "cuda:N").
 * Pure: rank/size of the world, local_rank its index on its node. The error
 * names the spec, the element and the rank. */
cv_status group_gpu_device_pick(const char *spec, int rank, int size, int local_rank, char *out,
                                size_t out_size, cv_err *e);

/* Collective over wc: group_gpu_device_pick with this rank's rank, size and
 * node-local rank. */
cv_status group_gpu_device(MPI_Comm wc, const char *spec, char *out, size_t out_size, cv_err *e);

/* "cuda:N" -> N; anything else -> -1 (the CPU). */
int group_gpu_index(const char *device);

/* Collective over the ranks of `tp` (an MPI comm, e.g. from comm_mpi_split):
 * *out = an NCCL comm over the same ranks when NCCL can serve them all (see
 * above), else NULL (keep using tp, host-staged). *out is never an MPI comm,
 * so the caller keeps `tp` for host-memory traffic (plan broadcast, logits
 * gather) either way. `be` is this rank's backend (cuda:N or not). */
cv_status group_gpu_tp_comm(comm *tp, backend *be, comm **out, cv_err *e);
