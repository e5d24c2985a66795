/* test_comm_mpi.c - comm_mpi under mpirun (2 or 4 ranks): point-to-point,
 * non-blocking ring, broadcast, all-reduce (f32, i32), uneven gatherv,
 * split into stage/TP sub-communicators, and the error path (a truncated
 * message becomes CV_ECOMM naming the peer). Every rank checks against
 * values it computes itself; rank 0 prints the summary. */
#include <mpi.h>

#include "testutil.h"
#include "worker/comm_mpi.h"

static void check_ok(cv_status st, const cv_err *e, const char *what)
{
    TU_CHECK(st == CV_OK, "%s: %s", what, e->msg);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    cv_err e = {0};
    comm *w = NULL;
    check_ok(comm_mpi_create(MPI_COMM_WORLD, "world", &w, &e), &e, "create");
    if (!w) {
        MPI_Finalize();
        return 1;
    }
    int r = comm_rank(w), n = comm_size(w);
    TU_CHECK(n >= 2, "needs at least 2 ranks, got %d", n);

    /* blocking send/recv: 0 -> 1, with a receive capacity larger than the message */
    if (r == 0) {
        int32_t v[3] = {7, 8, 9};
        check_ok(w->ops->send(w, v, sizeof v, 1, 5, &e), &e, "send");
    } else if (r == 1) {
        int32_t v[8] = {0};
        check_ok(w->ops->recv(w, v, sizeof v, 0, 5, &e), &e, "recv");
        TU_CHECK(v[0] == 7 && v[1] == 8 && v[2] == 9 && v[3] == 0, "recv got %d %d %d %d", v[0],
                 v[1], v[2], v[3]);
    }

    /* non-blocking ring: each rank sends 1000 floats to r+1, receives from r-1 */
    enum { NR = 1000 };
    float out[NR], in[NR];
    for (int i = 0; i < NR; i++)
        out[i] = (float)(r * 10000 + i);
    comm_req *rs = NULL, *rr = NULL;
    check_ok(w->ops->irecv(w, in, sizeof in, (r + n - 1) % n, 9, &rr, &e), &e, "irecv");
    check_ok(w->ops->isend(w, out, sizeof out, (r + 1) % n, 9, &rs, &e), &e, "isend");
    check_ok(w->ops->wait(w, rs, &e), &e, "wait send");
    check_ok(w->ops->wait(w, rr, &e), &e, "wait recv");
    int prev = (r + n - 1) % n, bad = 0;
    for (int i = 0; i < NR; i++)
        bad += in[i] != (float)(prev * 10000 + i);
    TU_CHECK(bad == 0, "ring: %d wrong values from rank %d", bad, prev);

    /* bcast from the last rank */
    char msg[32] = {0};
    if (r == n - 1)
        snprintf(msg, sizeof msg, "hello from %d", n - 1);
    check_ok(w->ops->bcast(w, msg, sizeof msg, n - 1, &e), &e, "bcast");
    char want[32];
    snprintf(want, sizeof want, "hello from %d", n - 1);
    TU_CHECK(!strcmp(msg, want), "bcast got '%s'", msg);

    /* all-reduce f32 and i32 */
    float f[5];
    int32_t k[3];
    for (int i = 0; i < 5; i++)
        f[i] = 0.5f * (float)(r + 1) * (float)(i + 1);
    for (int i = 0; i < 3; i++)
        k[i] = (r + 1) * (i - 1);
    check_ok(comm_allreduce_sum(w, f, 5, COMM_F32, &e), &e, "allreduce f32");
    check_ok(comm_allreduce_sum(w, k, 3, COMM_I32, &e), &e, "allreduce i32");
    float tri = (float)(n * (n + 1) / 2);
    for (int i = 0; i < 5; i++)
        TU_CHECK(f[i] == 0.5f * tri * (float)(i + 1), "allreduce f32[%d] = %g", i, f[i]);
    for (int i = 0; i < 3; i++)
        TU_CHECK(k[i] == (int32_t)tri * (i - 1), "allreduce i32[%d] = %d", i, k[i]);

    /* gatherv: rank i sends i+1 bytes of value i, root 0 */
    uint8_t sb[16], rb[64] = {0};
    memset(sb, r, sizeof sb);
    size_t counts[16], displs[16], off = 0;
    for (int i = 0; i < n; i++) {
        counts[i] = (size_t)i + 1;
        displs[i] = off;
        off += counts[i];
    }
    check_ok(w->ops->gatherv(w, sb, (size_t)r + 1, rb, counts, displs, 0, &e), &e, "gatherv");
    if (r == 0)
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < counts[i]; j++)
                TU_CHECK(rb[displs[i] + j] == i, "gatherv block %d byte %zu = %d", i, j,
                         rb[displs[i] + j]);

    /* split: stages of 2 ranks (TP comms) and columns (pipe comms) */
    comm *tp = NULL, *col = NULL;
    check_ok(comm_mpi_split(w, r / 2, r % 2, "tp", &tp, &e), &e, "split tp");
    check_ok(comm_mpi_split(w, r % 2, r / 2, "col", &col, &e), &e, "split col");
    if (tp && col) {
        TU_CHECK(comm_rank(tp) == r % 2 && comm_size(tp) == (r / 2 * 2 + 1 < n ? 2 : 1),
                 "tp rank %d size %d", comm_rank(tp), comm_size(tp));
        TU_CHECK(comm_rank(col) == r / 2, "col rank %d", comm_rank(col));
        TU_CHECK(comm_mpi_world_rank(tp, comm_rank(tp)) == r, "world rank of tp rank");
        int32_t s = r;
        check_ok(comm_allreduce_sum(tp, &s, 1, COMM_I32, &e), &e, "allreduce tp");
        int base = r / 2 * 2;
        int32_t want_s = base + (base + 1 < n ? base + 1 : 0);
        TU_CHECK(s == want_s, "tp allreduce %d != %d", s, want_s);
    }

    /* errors: a bad peer is EINVAL; a truncated message is ECOMM naming the peer */
    cv_err e2 = {0};
    TU_CHECK(w->ops->send(w, out, 4, n, 1, &e2) == CV_EINVAL, "send to rank %d accepted", n);
    if (r == 0) {
        float big[16] = {0};
        check_ok(w->ops->send(w, big, sizeof big, 1, 77, &e), &e, "send big");
    } else if (r == 1) {
        float small[4];
        cv_status st = w->ops->recv(w, small, sizeof small, 0, 77, &e2);
        TU_CHECK(st == CV_ECOMM, "truncated recv gave %s", cv_status_name(st));
        TU_CHECK(strstr(e2.msg, "rank 0") != NULL, "error does not name the peer: %s", e2.msg);
        fprintf(stderr, "rank 1: expected error: %s\n", e2.msg);
    }
    check_ok(w->ops->barrier(w, &e), &e, "barrier");

    comm_destroy(tp);
    comm_destroy(col);
    int failed = tu_failures, any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    comm_destroy(w);
    MPI_Finalize();
    if (r == 0)
        return any ? (fprintf(stderr, "test_comm_mpi: %d failure(s) over %d ranks\n", any, n), 1)
                   : tu_finish("test_comm_mpi");
    return failed ? 1 : 0;
}
