/*
 * main.c — sluiced: parse the configuration, open the data directory and
 * the catalogue, start the threads (coordinator, syncer, event loops), wait
 * for SIGTERM/SIGINT, shut down cleanly (final sync and checkpoints, so the
 * next start scans nothing).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blog.h"
#include "config.h"
#include "coord.h"
#include "group.h"
#include "quota.h"
#include "server.h"
#include "syncer.h"
#include "topics.h"
#include "txn_api.h"
#include "txn_commit.h"
#include "txn_dead.h"

#define SLUICE_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: sluiced [options]\n"
		"Sluice broker: Kafka wire protocol, segment logs, one machine.\n\n"
		"Options:\n"
		"  -c, --config FILE      read key=value settings from FILE\n"
		"  -d, --data-dir DIR     data directory (same as --set log.dirs=DIR)\n"
		"  -l, --listen HOST:PORT listen address (same as --set listeners=HOST:PORT)\n"
		"  -s, --set KEY=VALUE    set one configuration key (repeatable; wins over --config)\n"
		"      --port-file FILE   write the bound port to FILE once listening\n"
		"      --print-config     print the effective configuration and exit\n"
		"  -h, --help             this help\n"
		"  -V, --version          print the version\n\n"
		"Configuration keys:\n");
	config_print_help(f);
	fprintf(f, "\nExit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a start-up error,\n"
		   "2 on a usage error.  Documentation: docs/operations.md.\n");
}

static int mkdir_p(const char *path)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int write_port_file(const char *path, int port)
{
	char tmp[PATH_MAX + 8];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%d\n", port);
	if (fclose(f) != 0 || rename(tmp, path) < 0)
		return -errno;
	return 0;
}

static int load_topics(coord *co, topics *reg, const config *cfg)
{
	sqlite3 *db = coord_db(co);
	sqlite3_stmt *st, *cs;
	int rc = 0, n = 0;

	if (sqlite3_prepare_v2(db, "SELECT name, partitions, topic_id FROM topics ORDER BY name", -1, &st,
			       NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(db, "SELECT key, value FROM topic_configs WHERE topic = ?", -1, &cs,
			       NULL) != SQLITE_OK) {
		sqlite3_finalize(st);
		return -1;
	}
	while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		int32_t nparts = sqlite3_column_int(st, 1);
		uint8_t id[16] = { 0 };
		topic_conf conf = cfg->topic_defaults;
		char err[CONFIG_ERRLEN];
		char *keys[64], *vals[64];
		topic_overrides ov = { (const char *const *)keys, (const char *const *)vals, 0 };

		if (sqlite3_column_bytes(st, 2) == 16)
			memcpy(id, sqlite3_column_blob(st, 2), 16);
		sqlite3_reset(cs);
		sqlite3_bind_text(cs, 1, name, -1, SQLITE_TRANSIENT);
		while (sqlite3_step(cs) == SQLITE_ROW) {
			const char *k = (const char *)sqlite3_column_text(cs, 0);
			const char *v = (const char *)sqlite3_column_text(cs, 1);

			if (!k || !v || ov.n == 64)
				continue;
			if (topic_conf_set(&conf, k, v, err, sizeof(err)) < 0) {
				blog(BLOG_WARN, "topic %s: ignoring stored config: %s", name, err);
				continue;
			}
			keys[ov.n] = strdup(k);
			vals[ov.n] = strdup(v);
			if (keys[ov.n] && vals[ov.n])
				ov.n++;
		}
		rc = topics_load(reg, name, nparts, &conf, &ov, id);
		for (int i = 0; i < ov.n; i++) {
			free(keys[i]);
			free(vals[i]);
		}
		if (rc < 0)
			blog(BLOG_ERROR, "cannot open topic %s: %s", name, strerror(-rc));
		n++;
	}
	sqlite3_finalize(cs);
	sqlite3_finalize(st);
	if (rc == 0)
		blog(BLOG_INFO, "loaded %d topic(s)", n);
	return rc;
}

static void reaper(topic *t, void *arg)
{
	syncer_reap(arg, t);
}

static int parse_args(int argc, char **argv, config *cfg, const char **port_file)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "data-dir", required_argument, NULL, 'd' },
		{ "listen", required_argument, NULL, 'l' },
		{ "set", required_argument, NULL, 's' },
		{ "port-file", required_argument, NULL, 'P' },
		{ "print-config", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char err[CONFIG_ERRLEN];
	bool print = false;
	int opt;

	/* The config file first, so command-line keys override it. */
	for (int i = 1; i < argc - 1; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
			if (config_load_file(cfg, argv[i + 1], err, sizeof(err)) < 0) {
				fprintf(stderr, "sluiced: %s\n", err);
				return 1;
			}
		}
	}
	while ((opt = getopt_long(argc, argv, "c:d:l:s:hV", opts, NULL)) != -1) {
		int rc = 0;

		switch (opt) {
		case 'c':
			break;
		case 'd':
			rc = config_set(cfg, "log.dirs", optarg, err, sizeof(err));
			break;
		case 'l':
			rc = config_set(cfg, "listeners", optarg, err, sizeof(err));
			break;
		case 's': {
			char *eq = strchr(optarg, '=');

			if (!eq) {
				fprintf(stderr, "sluiced: --set expects KEY=VALUE, got '%s'\n", optarg);
				return 2;
			}
			*eq = '\0';
			rc = config_set(cfg, optarg, eq + 1, err, sizeof(err));
			break;
		}
		case 'P':
			*port_file = optarg;
			break;
		case 'p':
			print = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("sluiced %s\n", SLUICE_VERSION);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
		if (rc < 0) {
			fprintf(stderr, "sluiced: %s\n", err);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s' (see --help)\n", argv[optind]);
		return 2;
	}
	if (config_validate(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluiced: %s\n", err);
		return 2;
	}
	if (print) {
		config_print(stdout, cfg);
		exit(0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static config cfg;
	static server srv;
	const char *port_file = NULL;
	char path[PATH_MAX + 32];
	topics *reg = NULL;
	coord *co = NULL;
	groups *grp = NULL;
	sigset_t sigs;
	int lock_fd = -1, sig = 0, rc;

	/* glibc hands free memory at the top of an arena back to the kernel
	 * (madvise, then page faults to get it again) once more than 128 KiB
	 * is free there.  Rows the coordinator reads are freed by the loops,
	 * so under transactional load its arena kept shrinking and growing:
	 * ~2,000 madvise calls a second on the coordinator thread, 30-60 us
	 * each, and the transaction rate fell by a third (docs/benchmarks.md,
	 * session 5).  Up to 64 MiB stays with the process instead. */
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	config_defaults(&cfg);
	rc = parse_args(argc, argv, &cfg, &port_file);
	if (rc)
		return rc;
	blog_threshold = cfg.log_level;
	signal(SIGPIPE, SIG_IGN);

	rc = mkdir_p(cfg.data_dir);
	if (rc < 0) {
		blog(BLOG_ERROR, "cannot create data directory %s: %s", cfg.data_dir, strerror(-rc));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/.lock", cfg.data_dir);
	lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
		blog(BLOG_ERROR, "data directory %s is in use by another sluiced (or unwritable): %s",
		     cfg.data_dir, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/sluice.db", cfg.data_dir);
	if (coord_open(path, &co) < 0)
		return 1;
	if (topics_new(cfg.data_dir, &cfg.topic_defaults, &reg) < 0 || load_topics(co, reg, &cfg) < 0)
		goto fail;
	srv.cfg = &cfg;
	srv.topics = reg;
	srv.coord = co;
	if (quota_new(&cfg.client_limit, &srv.quota) < 0) {
		blog(BLOG_ERROR, "client.produce.* limits out of range");
		goto fail;
	}
	txn_api_init(&cfg);
	if (txn_commit_recover(coord_db(co), reg) < 0 || txn_dead_recover(coord_db(co), reg) < 0)
		goto fail;
	if (groups_new(&srv, coord_db(co), &grp) < 0 || server_listen(&srv) < 0)
		goto fail;
	groups_start(grp, &srv.workers[0]);
	if (txn_check_start(&srv, &srv.workers[0]) < 0)
		goto fail;
	/* From here on every thread inherits this mask and main takes the
	 * signals with sigwait; before it, SIGTERM simply ends a start-up
	 * (recovery, catalogue load) that nothing needs to clean up. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	txn_commit_start(&srv);
	if (syncer_start(&srv, &srv.syncer) < 0 || coord_start(co) < 0)
		goto fail;
	topics_set_reaper(reg, reaper, srv.syncer);
	if (server_start(&srv) < 0)
		goto fail;
	blog(BLOG_INFO, "sluiced %s listening on %s:%d (%d event loop(s), data in %s, %s durability)",
	     SLUICE_VERSION, cfg.listen_host, srv.port, srv.nworkers, cfg.data_dir,
	     cfg.topic_defaults.log.synced ? "fsync" : "pagecache");
	if (port_file && (rc = write_port_file(port_file, srv.port)) < 0)
		blog(BLOG_ERROR, "cannot write port file %s: %s", port_file, strerror(-rc));

	while (sig != SIGTERM && sig != SIGINT)
		sigwait(&sigs, &sig);
	blog(BLOG_INFO, "signal %d: shutting down", sig);
	server_stop(&srv);
	coord_close(co);
	co = NULL;
	server_free(&srv);
	groups_free(grp);
	txn_check_stop();
	syncer_stop(srv.syncer);
	quota_free(srv.quota);
	topics_free(reg);
	blog(BLOG_INFO, "clean shutdown");
	close(lock_fd);
	return 0;
fail:
	blog(BLOG_ERROR, "start-up failed");
	coord_close(co);
	return 1;
}
