/*
 * cli.h — shared pieces of the `sluice` command-line tool (cli.c: main,
 * topic/produce/consume; cli_bench.c: bench; cli_group.c: group; cli_txn.c:
 * txn).  Single-threaded except where
 * bench says otherwise.
 *
 * Exit codes (docs/client.md): 0 ok, 1 error (broker, network, I/O),
 * 2 usage, 3 some messages were not delivered, 4 consume stopped by its
 * time limit before --count messages arrived.
 */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include <stdbool.h>

#include "sluice.h"

#define EXIT_OK 0
#define EXIT_ERR 1
#define EXIT_USAGE 2
#define EXIT_UNDELIVERED 3
#define EXIT_INCOMPLETE 4

/* Global options (before the command). */
struct cli_global {
	const char *brokers;
	const char *sets[64]; /* "key=value" from -X */
	int nsets;
};

/* A new conf with -b and -X applied, or NULL (message printed). */
sluice_conf_t *cli_conf(const struct cli_global *g);
/* Applies "key=value" to conf; prints the error and returns false. */
bool cli_conf_set(sluice_conf_t *conf, const char *key, const char *value);
/* An admin handle from -b/-X, or NULL (message printed). */
sluice_admin_t *cli_admin(const struct cli_global *g);
/* Creates topic with partitions partitions unless it exists; 0 or exit code. */
int cli_ensure_topic(const struct cli_global *g, const char *topic, int partitions);
/* Partition count of topic (without creating it), or -1 (message printed). */
int cli_partition_count(const struct cli_global *g, const char *topic);

int cli_bench(const struct cli_global *g, int argc, char **argv);
/* `sluice group ...` (cli_group.c). */
int cli_group(const struct cli_global *g, int argc, char **argv);
/* `sluice txn ...` (cli_txn.c). */
int cli_txn(const struct cli_global *g, int argc, char **argv);

#endif
