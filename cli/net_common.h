/* net_common.h - shared by the network subcommands (cli/net_*.c): the
 * coordinator's option parsing and event loop, reused by `caravan serve`. */
#pragma once
#include "coordinator/coord.h"

struct event_base;

/* Parse coordinator flags (-m, --host, ports, keys, limits) from argv into
 * cfg. Unknown flags: when `rest` is non-NULL they are copied there (argv
 * order, values included) for the caller; otherwise an error.
 * Returns -1 to go on, else an exit code. */
int net_coord_parse(const char *cmd, int argc, char **argv, coord_config *cfg, char **rest,
                    int *n_rest);
/* Create the coordinator, print the bound ports (one line on stdout:
 * "caravan: listening grpc=P http=P cluster=P"), run the loop until
 * SIGINT/SIGTERM. on_start is called once the coordinator is up, on_stop
 * after the loop ends (before the coordinator and loop are freed). */
int net_coord_run(const char *cmd, const coord_config *cfg,
                  void (*on_start)(coord *c, struct event_base *base, void *ud),
                  void (*on_stop)(void *ud), void *ud);
