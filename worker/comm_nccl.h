/* comm_nccl.h - the NCCL implementation of the comm interface (worker/comm.h)
 * on device buffers (device_buffers = true), and the chooser that gives a
 * group of GPU ranks NCCL when it can and a host-staged MPI comm otherwise.
 *
 * Built only with CUDA + NCCL + MPI (CARAVAN_HAVE_NCCL and CARAVAN_HAVE_MPI):
 * the NCCL communicator is made from an ncclUniqueId that rank 0 of the MPI
 * communicator broadcasts. Every call blocks until its device work is done
 * and polls NCCL's asynchronous error state while it waits, so a failed or
 * vanished peer becomes CV_ECOMM (the communicator is aborted) rather than a
 * hang, where NCCL detects it. Point-to-point tags are ignored: NCCL orders
 * messages per peer pair, and the pipeline's protocol sends in order. */
#pragma once
#include <stdbool.h>

#include <mpi.h>

#include "comm.h"

/* NCCL comm over the ranks of `mc` (collective over mc): this rank uses CUDA
 * device `device`. `name` labels error messages. */
cv_status comm_nccl_create(MPI_Comm mc, int device, const char *name, comm **out, cv_err *e);

/* Collective over mc. device >= 0: this rank computes on cuda:device; -1: on
 * the CPU. When every rank has a GPU of its own (no two ranks on one GPU of
 * one host), returns an NCCL comm; otherwise an MPI comm on host memory
 * (the forward pass then stages activations through host memory).
 * *is_nccl says which. */
cv_status comm_gpu_create(MPI_Comm mc, int device, const char *name, comm **out, bool *is_nccl,
                          cv_err *e);

bool comm_is_nccl(const comm *c);
