/*
 * txn_client.c — libsluice transactional producer driver for
 * test_client_txn.py.  Each mode prints one result line per step on stdout
 * (flushed) and exits 0, or prints "FAIL ..." and exits 1.
 *
 *   txn_client BROKER send TOPIC GROUP commit|rollback|unknown KEY VALUE
 *       sluice_txn_send with a local transaction answering as given;
 *       prints "txn ID partition P offset O err E".
 *   txn_client BROKER die TOPIC GROUP VALUE
 *       prepare, then _exit(0) inside the local transaction (the producer
 *       dies before it can end); prints "prepared ID" first.
 *   txn_client BROKER checker GROUP DECISIONS SECONDS
 *       a producer of GROUP answering checks: DECISIONS is a file of lines
 *       "TXN_ID commit|rollback|unknown" re-read at each check (missing:
 *       unknown); prints "check ID COUNT TOPIC VALUE -> DECISION".
 *   txn_client BROKER sync TOPIC GROUP
 *       the plain prepare/end API and its error cases; prints "ok ..." per
 *       assertion.
 *   txn_client BROKER unknown-then-check TOPIC GROUP DECISION
 *       one producer whose local transaction answers UNKNOWN and whose own
 *       check callback answers DECISION; waits up to 20 s for the check.
 *   txn_client BROKER async TOPIC GROUP N INFLIGHT
 *       N transactions through sluice_txn_prepare_async/_end_async, INFLIGHT
 *       at a time, value "v<i>", every third one rolled back; prints
 *       "commit V PARTITION OFFSET", "rollback V" or "error V STEP ERR" per
 *       transaction, then "async done N"; FAIL if a callback ran twice,
 *       never ran, or reported something impossible (commit without an
 *       offset, rollback with one, a txn id given twice).
 *   txn_client BROKER async-destroy TOPIC GROUP N
 *       queues N prepares and destroys the producer at once; prints
 *       "destroyed OK DESTROYED" (callbacks by outcome); FAIL unless every
 *       callback ran exactly once with one of those two.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice.h"

static const char *broker;

static void fail(const char *what, const char *errstr)
{
	printf("FAIL %s: %s\n", what, errstr ? errstr : "");
	fflush(stdout);
	exit(1);
}

static sluice_txn_decision_t parse_decision(const char *s)
{
	if (!strcmp(s, "commit"))
		return SLUICE_TXN_COMMIT;
	if (!strcmp(s, "rollback"))
		return SLUICE_TXN_ROLLBACK;
	return SLUICE_TXN_UNKNOWN;
}

static const char *decision_name(sluice_txn_decision_t d)
{
	return d == SLUICE_TXN_COMMIT ? "commit" : d == SLUICE_TXN_ROLLBACK ? "rollback" : "unknown";
}

static sluice_txn_producer_t *new_producer(const char *group, sluice_txn_check_cb *cb, void *ctx,
					   const char *check_timeout)
{
	sluice_conf_t *conf = sluice_conf_new();
	sluice_txn_producer_t *p;
	char errstr[512];

	if (sluice_conf_set(conf, "bootstrap.servers", broker, errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "transaction.group", group, errstr, sizeof(errstr)) ||
	    sluice_conf_set(conf, "request.timeout.ms", "10000", errstr, sizeof(errstr)) ||
	    (check_timeout && sluice_conf_set(conf, "transaction.check.timeout.ms", check_timeout,
					      errstr, sizeof(errstr))))
		fail("conf", errstr);
	sluice_conf_set_txn_check_cb(conf, cb, ctx);
	if (!(p = sluice_txn_producer_new(conf, errstr, sizeof(errstr))))
		fail("sluice_txn_producer_new", errstr);
	return p;
}

static sluice_txn_decision_t local_answer(sluice_txn_producer_t *p, int64_t txn_id, void *arg)
{
	(void)p;
	(void)txn_id;
	return *(sluice_txn_decision_t *)arg;
}

static int mode_send(int argc, char **argv)
{
	sluice_txn_decision_t d;
	sluice_txn_result_t res;
	sluice_txn_producer_t *p;
	char errstr[512] = "";
	sluice_err_t err;

	if (argc != 7)
		fail("usage", "send TOPIC GROUP DECISION KEY VALUE");
	d = parse_decision(argv[4]);
	p = new_producer(argv[3], NULL, NULL, NULL);
	err = sluice_txn_send(p, argv[2], SLUICE_PARTITION_ANY, argv[5], strlen(argv[5]), argv[6],
			      strlen(argv[6]), NULL, 0, local_answer, &d, &res, errstr,
			      sizeof(errstr));
	printf("txn %" PRId64 " partition %d offset %" PRId64 " err %s\n", res.txn_id,
	       res.partition, res.offset, sluice_err2name(err));
	sluice_txn_producer_destroy(p);
	return err ? 1 : 0;
}

static sluice_txn_decision_t local_die(sluice_txn_producer_t *p, int64_t txn_id, void *arg)
{
	(void)p;
	(void)arg;
	printf("prepared %" PRId64 "\n", txn_id);
	fflush(stdout);
	_exit(0);
}

static int mode_die(int argc, char **argv)
{
	sluice_txn_producer_t *p;
	sluice_txn_result_t res;
	char errstr[512] = "";

	if (argc != 5)
		fail("usage", "die TOPIC GROUP VALUE");
	p = new_producer(argv[3], NULL, NULL, NULL);
	sluice_txn_send(p, argv[2], SLUICE_PARTITION_ANY, NULL, 0, argv[4], strlen(argv[4]), NULL, 0,
			local_die, NULL, &res, errstr, sizeof(errstr));
	fail("prepare", errstr); /* local_die exits unless the prepare failed */
	return 1;
}

struct checker {
	const char *file;
	atomic_int checks;
	sluice_txn_decision_t fixed; /* unknown-then-check mode */
	bool use_fixed;
};

static sluice_txn_decision_t lookup(const char *file, int64_t txn_id)
{
	sluice_txn_decision_t d = SLUICE_TXN_UNKNOWN;
	FILE *f = fopen(file, "r");
	char word[32];
	int64_t id;

	while (f && fscanf(f, "%" SCNd64 " %31s", &id, word) == 2)
		if (id == txn_id)
			d = parse_decision(word);
	if (f)
		fclose(f);
	return d;
}

static sluice_txn_decision_t on_check(sluice_txn_producer_t *p, const sluice_txn_check_t *c,
				      void *ctx)
{
	struct checker *ck = ctx;
	sluice_txn_decision_t d = ck->use_fixed ? ck->fixed : lookup(ck->file, c->txn_id);

	(void)p;
	printf("check %" PRId64 " %d %s %.*s -> %s\n", c->txn_id, c->check_count, c->topic,
	       (int)c->value_len, c->value ? (const char *)c->value : "", decision_name(d));
	fflush(stdout);
	atomic_fetch_add(&ck->checks, 1);
	return d;
}

static int mode_checker(int argc, char **argv)
{
	struct checker ck = { .file = NULL };
	sluice_txn_producer_t *p;

	if (argc != 5)
		fail("usage", "checker GROUP DECISIONS SECONDS");
	ck.file = argv[3];
	p = new_producer(argv[2], on_check, &ck, NULL);
	printf("ready\n");
	fflush(stdout);
	sleep((unsigned)atoi(argv[4]));
	sluice_txn_producer_destroy(p);
	printf("checks %d\n", atomic_load(&ck.checks));
	return 0;
}

static int mode_unknown_then_check(int argc, char **argv)
{
	struct checker ck = { .use_fixed = true };
	sluice_txn_decision_t unknown = SLUICE_TXN_UNKNOWN;
	sluice_txn_producer_t *p;
	sluice_txn_result_t res;
	char errstr[512] = "";

	if (argc != 5)
		fail("usage", "unknown-then-check TOPIC GROUP DECISION");
	ck.fixed = parse_decision(argv[4]);
	p = new_producer(argv[3], on_check, &ck, "500");
	if (sluice_txn_send(p, argv[2], SLUICE_PARTITION_ANY, NULL, 0, "asked-later", 11, NULL, 0,
			    local_answer, &unknown, &res, errstr, sizeof(errstr)))
		fail("send", errstr);
	printf("txn %" PRId64 " sent unknown\n", res.txn_id);
	fflush(stdout);
	for (int i = 0; i < 200 && !atomic_load(&ck.checks); i++)
		usleep(100 * 1000);
	sluice_txn_producer_destroy(p);
	return atomic_load(&ck.checks) ? 0 : 1;
}

#define EXPECT(cond, what)                                   \
	do {                                                 \
		if (!(cond))                                 \
			fail(what, errstr);                  \
		printf("ok %s\n", what);                     \
	} while (0)

static int mode_sync(int argc, char **argv)
{
	sluice_txn_producer_t *p;
	char errstr[512] = "";
	int64_t id = -1, id2 = -1, off = -1, off2 = -1;
	int32_t part = -2;
	sluice_err_t err;
	const char *key = "user-42";

	if (argc != 4)
		fail("usage", "sync TOPIC GROUP");
	p = new_producer(argv[3], NULL, NULL, NULL);
	err = sluice_txn_prepare(p, argv[2], SLUICE_PARTITION_ANY, key, strlen(key), "v1", 2, NULL,
				 0, &id, &part, errstr, sizeof(errstr));
	EXPECT(!err && id > 0, "prepare");
	printf("partition %d\n", part);
	err = sluice_txn_end(p, id, SLUICE_TXN_COMMIT, &off, errstr, sizeof(errstr));
	EXPECT(!err && off >= 0, "commit");
	err = sluice_txn_end(p, id, SLUICE_TXN_COMMIT, &off2, errstr, sizeof(errstr));
	EXPECT(!err && off2 == off, "second commit answers the same offset");
	err = sluice_txn_end(p, id, SLUICE_TXN_ROLLBACK, NULL, errstr, sizeof(errstr));
	EXPECT(err == SLUICE_ERR_INVALID_TXN_STATE, "rollback after commit is INVALID_TXN_STATE");
	err = sluice_txn_end(p, 999999999, SLUICE_TXN_COMMIT, NULL, errstr, sizeof(errstr));
	EXPECT(err == SLUICE_ERR_TRANSACTIONAL_ID_NOT_FOUND, "unknown id is TRANSACTIONAL_ID_NOT_FOUND");
	err = sluice_txn_prepare(p, argv[2], SLUICE_PARTITION_ANY, NULL, 0, "v2", 2, NULL, 0, &id2,
				 NULL, errstr, sizeof(errstr));
	EXPECT(!err && id2 > id, "second prepare");
	err = sluice_txn_end(p, id2, SLUICE_TXN_ROLLBACK, &off, errstr, sizeof(errstr));
	EXPECT(!err && off == -1, "rollback");
	err = sluice_txn_end(p, id2, SLUICE_TXN_ROLLBACK, NULL, errstr, sizeof(errstr));
	EXPECT(!err, "second rollback succeeds");
	err = sluice_txn_end(p, id2, SLUICE_TXN_COMMIT, NULL, errstr, sizeof(errstr));
	EXPECT(err == SLUICE_ERR_INVALID_TXN_STATE, "commit after rollback is INVALID_TXN_STATE");
	err = sluice_txn_prepare(p, "no-such-topic-xyz", 0, NULL, 0, "v", 1, NULL, 0, &id2, NULL,
				 errstr, sizeof(errstr));
	EXPECT(err == SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION && id2 == -1, "unknown topic");
	err = sluice_txn_prepare(p, "no-such-topic-xyz", SLUICE_PARTITION_ANY, "k", 1, "v", 1, NULL,
				 0, &id2, NULL, errstr, sizeof(errstr));
	EXPECT(err == SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION, "unknown topic with a key");
	err = sluice_txn_prepare(p, argv[2], 999, NULL, 0, "v", 1, NULL, 0, &id2, NULL, errstr,
				 sizeof(errstr));
	EXPECT(err == SLUICE_ERR_UNKNOWN_TOPIC_OR_PARTITION, "unknown partition");
	{
		size_t big = 2 * 1000 * 1000;
		char *v = calloc(1, big);

		err = sluice_txn_prepare(p, argv[2], 0, NULL, 0, v, big, NULL, 0, &id2, NULL,
					 errstr, sizeof(errstr));
		free(v);
		EXPECT(err == SLUICE_ERR_MSG_SIZE_TOO_LARGE, "message larger than message.max.bytes");
	}
	err = sluice_txn_end(p, id, (sluice_txn_decision_t)7, NULL, errstr, sizeof(errstr));
	EXPECT(err == SLUICE_ERR_INVALID_ARG, "bad decision is INVALID_ARG");
	sluice_txn_producer_destroy(p);
	{
		sluice_conf_t *conf = sluice_conf_new();

		sluice_conf_set(conf, "bootstrap.servers", broker, errstr, sizeof(errstr));
		p = sluice_txn_producer_new(conf, errstr, sizeof(errstr));
		EXPECT(!p && strstr(errstr, "transaction.group"), "transaction.group is required");
		sluice_conf_destroy(conf);
	}
	printf("done\n");
	return 0;
}

/* ---- asynchronous calls ---- */

struct atxn {
	struct async_run *run;
	int idx;
	int64_t txn_id;
	int32_t partition;
	atomic_int prepared, ended; /* callback counts */
};

struct async_run {
	const char *topic;
	int n;
	atomic_int next, finished;
	struct atxn *t;
	pthread_mutex_t lock; /* stdout, ids */
	int64_t *ids;
	int nids;
};

static sluice_txn_decision_t async_decision(int i)
{
	return i % 3 == 2 ? SLUICE_TXN_ROLLBACK : SLUICE_TXN_COMMIT;
}

static void async_start(sluice_txn_producer_t *p, struct async_run *r);

static void async_finish(sluice_txn_producer_t *p, struct atxn *t)
{
	atomic_fetch_add(&t->run->finished, 1);
	async_start(p, t->run); /* this slot's next transaction */
}

static void async_ended(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id, int64_t offset,
			const char *errstr, void *opaque)
{
	struct atxn *t = opaque;
	struct async_run *r = t->run;
	sluice_txn_decision_t d = async_decision(t->idx);

	if (atomic_fetch_add(&t->ended, 1))
		fail("end callback ran twice", "");
	if (txn_id != t->txn_id)
		fail("end callback names another txn", "");
	pthread_mutex_lock(&r->lock);
	if (err)
		printf("error v%d end %s %s\n", t->idx, sluice_err2name(err), errstr);
	else if (d == SLUICE_TXN_COMMIT && offset < 0)
		fail("commit answered without an offset", "");
	else if (d == SLUICE_TXN_ROLLBACK && offset != -1)
		fail("rollback answered with an offset", "");
	else if (d == SLUICE_TXN_COMMIT)
		printf("commit v%d %d %" PRId64 "\n", t->idx, t->partition, offset);
	else
		printf("rollback v%d\n", t->idx);
	pthread_mutex_unlock(&r->lock);
	async_finish(p, t);
}

static void async_prepared(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id,
			   int32_t partition, const char *errstr, void *opaque)
{
	struct atxn *t = opaque;
	struct async_run *r = t->run;

	t->partition = partition;
	if (atomic_fetch_add(&t->prepared, 1))
		fail("prepare callback ran twice", "");
	if (err) {
		pthread_mutex_lock(&r->lock);
		printf("error v%d prepare %s %s\n", t->idx, sluice_err2name(err), errstr);
		pthread_mutex_unlock(&r->lock);
		async_finish(p, t);
		return;
	}
	if (txn_id < 0 || errstr[0])
		fail("prepare succeeded without an id, or with an error text", errstr);
	pthread_mutex_lock(&r->lock);
	for (int i = 0; i < r->nids; i++)
		if (r->ids[i] == txn_id)
			fail("one txn id given to two prepares", "");
	r->ids[r->nids++] = txn_id;
	pthread_mutex_unlock(&r->lock);
	t->txn_id = txn_id;
	err = sluice_txn_end_async(p, txn_id, async_decision(t->idx), async_ended, t);
	if (err)
		fail("sluice_txn_end_async", sluice_err2str(err));
}

static void async_start(sluice_txn_producer_t *p, struct async_run *r)
{
	int i = atomic_fetch_add(&r->next, 1);
	char value[32];
	sluice_err_t err;

	if (i >= r->n)
		return;
	snprintf(value, sizeof(value), "v%d", i);
	err = sluice_txn_prepare_async(p, r->topic, SLUICE_PARTITION_ANY, NULL, 0, value,
				       strlen(value), NULL, 0, async_prepared, &r->t[i]);
	if (err)
		fail("sluice_txn_prepare_async", sluice_err2str(err));
}

static void async_init(struct async_run *r, const char *topic, int n)
{
	memset(r, 0, sizeof(*r));
	r->topic = topic;
	r->n = n;
	r->t = calloc((size_t)n, sizeof(*r->t));
	r->ids = calloc((size_t)n, sizeof(*r->ids));
	if (!r->t || !r->ids)
		fail("calloc", "");
	for (int i = 0; i < n; i++) {
		r->t[i].run = r;
		r->t[i].idx = i;
		r->t[i].txn_id = -1;
	}
	pthread_mutex_init(&r->lock, NULL);
}

static int mode_async(int argc, char **argv)
{
	struct async_run r;
	sluice_txn_producer_t *p;
	int n, inflight;

	if (argc != 6)
		fail("usage", "async TOPIC GROUP N INFLIGHT");
	n = atoi(argv[4]);
	inflight = atoi(argv[5]);
	if (n <= 0 || inflight <= 0)
		fail("usage", "N and INFLIGHT must be positive");
	async_init(&r, argv[2], n);
	p = new_producer(argv[3], NULL, NULL, NULL);
	for (int i = 0; i < inflight; i++)
		async_start(p, &r);
	/* every transaction finishes: errors are reported, not waited out
	 * forever (end retries stop at request.timeout.ms, 10 s) */
	for (int waited = 0; atomic_load(&r.finished) < n; waited++) {
		if (waited > 900)
			fail("async", "not every transaction finished within 90 s");
		usleep(100 * 1000);
	}
	sluice_txn_producer_destroy(p);
	for (int i = 0; i < n; i++)
		if (atomic_load(&r.t[i].prepared) != 1 ||
		    (r.t[i].txn_id >= 0 && atomic_load(&r.t[i].ended) != 1))
			fail("async", "a callback did not run exactly once");
	printf("async done %d\n", n);
	free(r.t);
	free(r.ids);
	return 0;
}

struct destroy_count {
	atomic_int ok, destroyed, other, calls;
};

static void destroy_prepared(sluice_txn_producer_t *p, sluice_err_t err, int64_t txn_id,
			     int32_t partition, const char *errstr, void *opaque)
{
	struct destroy_count *c = opaque;

	(void)p;
	(void)txn_id;
	(void)partition;
	(void)errstr;
	atomic_fetch_add(&c->calls, 1);
	if (err == SLUICE_ERR_NO_ERROR)
		atomic_fetch_add(&c->ok, 1);
	else if (err == SLUICE_ERR_DESTROYED)
		atomic_fetch_add(&c->destroyed, 1);
	else
		atomic_fetch_add(&c->other, 1);
}

static int mode_async_destroy(int argc, char **argv)
{
	struct destroy_count c = { 0 };
	sluice_txn_producer_t *p;
	int n;

	if (argc != 5)
		fail("usage", "async-destroy TOPIC GROUP N");
	n = atoi(argv[4]);
	p = new_producer(argv[3], NULL, NULL, NULL);
	for (int i = 0; i < n; i++)
		if (sluice_txn_prepare_async(p, argv[2], SLUICE_PARTITION_ANY, NULL, 0, "d", 1, NULL, 0,
					     destroy_prepared, &c))
			fail("sluice_txn_prepare_async", "");
	sluice_txn_producer_destroy(p);
	if (atomic_load(&c.calls) != n || atomic_load(&c.other))
		fail("async-destroy", "a callback did not run exactly once with OK or DESTROYED");
	printf("destroyed %d %d\n", atomic_load(&c.ok), atomic_load(&c.destroyed));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: txn_client BROKER send|die|checker|sync|unknown-then-check|async|"
				"async-destroy ...\n");
		return 2;
	}
	broker = argv[1];
	argv++;
	argc--;
	if (!strcmp(argv[1], "send"))
		return mode_send(argc, argv);
	if (!strcmp(argv[1], "die"))
		return mode_die(argc, argv);
	if (!strcmp(argv[1], "checker"))
		return mode_checker(argc, argv);
	if (!strcmp(argv[1], "sync"))
		return mode_sync(argc, argv);
	if (!strcmp(argv[1], "unknown-then-check"))
		return mode_unknown_then_check(argc, argv);
	if (!strcmp(argv[1], "async"))
		return mode_async(argc, argv);
	if (!strcmp(argv[1], "async-destroy"))
		return mode_async_destroy(argc, argv);
	fprintf(stderr, "txn_client: unknown mode %s\n", argv[1]);
	return 2;
}
