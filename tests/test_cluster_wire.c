/* test_cluster_wire.c - the cluster protocol framing and step/result mapping
 * (coordinator/cluster_wire.c): round trips compared field by field, frame
 * lengths over the maximum refused from the header, invalid protobuf and
 * out-of-range slots/tokens refused, and seeded random bytes that never crash
 * the decoder (run under ASan by scripts/test.sh). */
#include "coordinator/cluster.h"
#include "testutil.h"

static void test_step_roundtrip(void)
{
    int32_t t0[3] = {1, 2, 3}, t1[1] = {77}, rel[2] = {5, 6};
    step_seq seqs[2];
    memset(seqs, 0, sizeof seqs);
    seqs[0] = (step_seq){.seq_id = 10, .slot = 0, .pos = 0, .n_tokens = 3, .tokens = t0, .want_sample = false};
    seqs[1] = (step_seq){.seq_id = 11, .slot = 3, .pos = 40, .n_tokens = 1, .tokens = t1, .want_sample = true};
    sampling_params_default(&seqs[0].sp);
    sampling_params_default(&seqs[1].sp);
    seqs[1].sp.temperature = 0.7f;
    seqs[1].sp.top_k = 40;
    seqs[1].sp.top_p = 0.9f;
    seqs[1].sp.seed = 0xdeadbeefcafeULL;
    seqs[1].sp.n_top_logprobs = 5;
    step s = {.id = 99, .n_seqs = 2, .seqs = seqs, .n_released = 2, .released_slots = rel};
    cl_step *p = cluster_step_to_pb(&s);
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP;
    env.step = p;
    uint8_t *frame;
    size_t len;
    cv_err e;
    TU_CHECK(cluster_frame_encode(&env, &frame, &len, &e) == CV_OK, "encode: %s", e.msg);
    cluster_step_pb_free(p);
    uint32_t n = 0;
    TU_CHECK(cluster_frame_length(frame, 1 << 20, &n, &e) == CV_OK && n + 4 == len, "length %u vs %zu", n, len);
    cl_env *d = NULL;
    TU_CHECK(cluster_env_decode(frame + 4, n, &d, &e) == CV_OK, "decode: %s", e.msg);
    free(frame);
    step back;
    TU_CHECK(cluster_step_from_pb(d->step, 8, 512, &back, &e) == CV_OK, "from_pb: %s", e.msg);
    TU_CHECK(back.id == 99 && back.n_seqs == 2 && back.n_released == 2, "header");
    TU_CHECK(back.released_slots[0] == 5 && back.released_slots[1] == 6, "released");
    for (int i = 0; i < 2; i++) {
        TU_CHECK(back.seqs[i].seq_id == seqs[i].seq_id && back.seqs[i].slot == seqs[i].slot &&
                     back.seqs[i].pos == seqs[i].pos && back.seqs[i].n_tokens == seqs[i].n_tokens &&
                     back.seqs[i].want_sample == seqs[i].want_sample,
                 "seq %d fields", i);
        TU_CHECK(!memcmp(back.seqs[i].tokens, seqs[i].tokens, seqs[i].n_tokens * sizeof(int32_t)), "seq %d tokens", i);
        TU_CHECK(!memcmp(&back.seqs[i].sp, &seqs[i].sp, sizeof(sampling_params)), "seq %d sampling", i);
    }
    cluster_step_free(&back);
    /* validation against the group's sizes */
    TU_CHECK(cluster_step_from_pb(d->step, 3, 512, &back, &e) == CV_EFORMAT, "slot 3 of 3 accepted");
    TU_CHECK(cluster_step_from_pb(d->step, 8, 50, &back, &e) == CV_EFORMAT, "token 77 of 50 accepted");
    d->step->seqs[0]->pos = -1;
    TU_CHECK(cluster_step_from_pb(d->step, 8, 512, &back, &e) == CV_EFORMAT, "pos -1 accepted");
    cluster_env_free(d);
}

static void test_result_roundtrip(void)
{
    step_seq_result rs[2];
    memset(rs, 0, sizeof rs);
    rs[0].seq_id = 4;
    rs[0].r.token = 9;
    rs[0].r.logprob = -0.25f;
    rs[0].r.n_top = 3;
    for (int i = 0; i < 3; i++) {
        rs[0].r.top_ids[i] = 9 + i;
        rs[0].r.top_logprobs[i] = -0.25f - i;
    }
    rs[1].seq_id = 5;
    rs[1].r.token = 1;
    step_result r = {.id = 7, .n_results = 2, .results = rs};
    cl_step_result *p = cluster_result_to_pb(&r);
    size_t n = caravan__cluster__v1__step_result__get_packed_size(p);
    uint8_t *buf = malloc(n + 1);
    caravan__cluster__v1__step_result__pack(p, buf);
    cluster_result_pb_free(p);
    cl_step_result *q = caravan__cluster__v1__step_result__unpack(NULL, n, buf);
    free(buf);
    TU_CHECK(q != NULL, "unpack");
    step_seq_result out[2];
    step_result ro = {.results = out};
    cv_err e;
    TU_CHECK(cluster_result_from_pb(q, 1, &ro, &e) == CV_EFORMAT, "2 results for a 1-sequence step accepted");
    TU_CHECK(cluster_result_from_pb(q, 2, &ro, &e) == CV_OK, "from_pb: %s", e.msg);
    TU_CHECK(ro.id == 7 && ro.n_results == 2, "header");
    TU_CHECK(!memcmp(&out[0], &rs[0], sizeof rs[0]) && !memcmp(&out[1], &rs[1], sizeof rs[1]), "results differ");
    caravan__cluster__v1__step_result__free_unpacked(q, NULL);
}

static void test_frames_refused(void)
{
    cv_err e;
    uint32_t n;
    uint8_t zero[4] = {0, 0, 0, 0}, big[4] = {0, 0, 0, 0x40}, edge[4] = {0x00, 0x04, 0, 0};
    TU_CHECK(cluster_frame_length(zero, 100, &n, &e) == CV_EFORMAT, "empty frame accepted");
    TU_CHECK(cluster_frame_length(big, 64u << 20, &n, &e) == CV_ERANGE, "1 GiB frame accepted");
    TU_CHECK(strstr(e.msg, "1073741824") && strstr(e.msg, "67108864"), "message: %s", e.msg);
    TU_CHECK(cluster_frame_length(edge, 1024, &n, &e) == CV_OK && n == 1024, "frame at the maximum refused");
    TU_CHECK(cluster_frame_length(edge, 1023, &n, &e) == CV_ERANGE, "frame over the maximum accepted");
    cl_env *d = NULL;
    uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    TU_CHECK(cluster_env_decode(junk, sizeof junk, &d, &e) == CV_EFORMAT && !d, "junk decoded");
    uint8_t unknown_field[2] = {0x78, 0x01}; /* field 15 varint: valid protobuf, no message set */
    TU_CHECK(cluster_env_decode(unknown_field, 2, &d, &e) == CV_EFORMAT, "empty envelope accepted");
    /* seeded mutations of a valid Step frame: decode must fail or succeed
     * cleanly, and a decoded step must validate or be refused, never crash */
    int32_t toks[4] = {1, 5, 9, 200};
    step_seq q = {.seq_id = 3, .slot = 2, .pos = 7, .n_tokens = 4, .tokens = toks, .want_sample = true};
    sampling_params_default(&q.sp);
    int32_t rel[1] = {1};
    step s0 = {.id = 5, .n_seqs = 1, .seqs = &q, .n_released = 1, .released_slots = rel};
    cl_step *p = cluster_step_to_pb(&s0);
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP;
    env.step = p;
    uint8_t *frame;
    size_t flen;
    TU_CHECK(cluster_frame_encode(&env, &frame, &flen, &e) == CV_OK, "encode");
    cluster_step_pb_free(p);
    uint64_t seed = 12345;
    int ok = 0, valid = 0;
    size_t blen = flen - 4;
    uint8_t *buf = malloc(blen);
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, frame + 4, blen);
        int nm = 1 + (int)(tu_rand_u64(&seed) % 4);
        for (int m = 0; m < nm; m++) buf[tu_rand_u64(&seed) % blen] = (uint8_t)tu_rand_u64(&seed);
        size_t len = it % 5 == 0 ? 1 + tu_rand_u64(&seed) % blen : blen; /* truncations too */
        if (cluster_env_decode(buf, len, &d, &e) == CV_OK) {
            ok++;
            if (d->msg_case == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP) {
                step s;
                if (cluster_step_from_pb(d->step, 16, 512, &s, &e) == CV_OK) {
                    valid++;
                    for (int32_t i = 0; i < s.n_seqs; i++)
                        for (int32_t t = 0; t < s.seqs[i].n_tokens; t++)
                            TU_CHECK(s.seqs[i].tokens[t] >= 0 && s.seqs[i].tokens[t] < 512, "token escaped");
                    cluster_step_free(&s);
                }
            }
            cluster_env_free(d);
        }
    }
    free(buf);
    free(frame);
    printf("mutated Step frames: %d of 20000 decoded, %d valid steps\n", ok, valid);
    TU_CHECK(ok > 0 && ok < 20000, "mutation did not exercise both paths (%d decoded)", ok);
}

int main(void)
{
    test_step_roundtrip();
    test_result_roundtrip();
    test_frames_refused();
    return tu_finish("test_cluster_wire");
}
