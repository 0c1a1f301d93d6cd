/* quota.c — see quota.h. */
#include "quota.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "topics.h"

typedef struct qentry {
	char id[128];          /* client id (truncated like req->client_id) */
	int64_t last_used_ns;
	ratelimit_gate gate;
} qentry;

struct quota {
	pthread_mutex_t lock;  /* protects everything below */
	gate_conf conf;
	qentry *e;             /* owned array of QUOTA_MAX_CLIENTS */
	int n;
};

int quota_new(const produce_limit *per_client, quota **out)
{
	ratelimit_gate probe;
	quota *q;

	*out = NULL;
	if (per_client->msg_rate <= 0 && per_client->byte_rate <= 0)
		return 0;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	topic_gate_conf(per_client, &q->conf);
	q->conf.max_queued = 0; /* fail-fast: never parks */
	if (gate_init(&probe, &q->conf) < 0) {
		free(q);
		return -EINVAL;
	}
	q->e = calloc(QUOTA_MAX_CLIENTS, sizeof(*q->e));
	if (!q->e) {
		free(q);
		return -ENOMEM;
	}
	pthread_mutex_init(&q->lock, NULL);
	*out = q;
	return 0;
}

void quota_free(quota *q)
{
	if (!q)
		return;
	pthread_mutex_destroy(&q->lock);
	free(q->e);
	free(q);
}

/* Lock held.  The entry of id, creating (or recycling the stalest) one. */
static qentry *entry_for(quota *q, const char *id, int64_t now_ns)
{
	int oldest = 0;

	for (int i = 0; i < q->n; i++) {
		if (!strcmp(q->e[i].id, id))
			return &q->e[i];
		if (q->e[i].last_used_ns < q->e[oldest].last_used_ns)
			oldest = i;
	}
	if (q->n < QUOTA_MAX_CLIENTS)
		oldest = q->n++;
	snprintf(q->e[oldest].id, sizeof(q->e[oldest].id), "%s", id);
	gate_init(&q->e[oldest].gate, &q->conf); /* validated in quota_new */
	return &q->e[oldest];
}

bool quota_admit(quota *q, const char *client_id, uint64_t msgs, uint64_t bytes, int64_t now_ns,
		 int64_t *hint_ns)
{
	qentry *e;
	int v;

	if (!q)
		return true;
	pthread_mutex_lock(&q->lock);
	e = entry_for(q, client_id, now_ns);
	e->last_used_ns = now_ns;
	v = gate_decide(&e->gate, now_ns, msgs, bytes, NULL, hint_ns);
	pthread_mutex_unlock(&q->lock);
	return v == GATE_ADMIT;
}
