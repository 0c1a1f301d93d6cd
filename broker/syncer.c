/* syncer.c — see syncer.h. */
#include "syncer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blog.h"

struct syncer {
	server *srv;
	pthread_t thread;
	pthread_mutex_t lock;     /* protects dirty, reap, stop */
	pthread_cond_t cond;      /* CLOCK_MONOTONIC */
	partition *dirty;         /* each holds a topic reference */
	topic **reap;
	int nreap, capreap;
	bool stop;
	int64_t next_flush, next_retention, next_expiry; /* monotonic ms; thread-owned */
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sync_one(partition *p, uint64_t prealloc)
{
	int rc;

	if (!partlog_dirty(p->log))
		return;
	rc = partlog_sync_data(p->log, NULL); /* indexes: at the checkpoint */
	if (rc < 0) {
		if (partlog_sync_failed(p->log))
			BLOG_RL(BLOG_ERROR, "fdatasync %s-%d: %s: appends to it are refused and its "
					    "high watermark stays until a restart (recovery rescans the "
					    "log from its last good checkpoint)",
				p->topic->name, p->index, strerror(-rc));
		else
			BLOG_RL(BLOG_WARN, "syncing %s-%d: %s (retried with the next sync)",
				p->topic->name, p->index, strerror(-rc));
		return;
	}
	p->ckpt_stale = true;
	partition_wake(p);
	/* After the wake-up: the zeros are for the next syncs. */
	rc = partlog_fill_ahead(p->log, prealloc);
	if (rc < 0)
		BLOG_RL(BLOG_WARN, "preallocating %s-%d: %s (appends grow the file instead)",
			p->topic->name, p->index, strerror(-rc));
}

/* fsync durability: one sync per queued partition (group commit), each
 * followed by its preallocation (partlog_fill_ahead). */
static void sync_dirty(partition *list, uint64_t prealloc)
{
	partition *next;

	for (partition *p = list; p; p = next) {
		next = p->sync_next;
		/* Clear before syncing: an append during the sync queues p
		 * again for the next round. */
		atomic_store(&p->sync_queued, false);
		sync_one(p, prealloc);
		topic_unref(p->topic);
	}
}

/* Syncs the partitions queued since the round began: the periodic work
 * calls it between its steps, so that an fsync acknowledgement waits
 * behind one step at most (one partition's index files: two syncs), not
 * behind the checkpoints of every partition (three syncs each: with 8
 * partitions and 0.3 s syncs, an ack took 7.4 s instead of 0.9). */
static void serve_acks(void *arg)
{
	syncer *s = arg;
	partition *dirty;

	pthread_mutex_lock(&s->lock);
	dirty = s->dirty;
	s->dirty = NULL;
	pthread_mutex_unlock(&s->lock);
	sync_dirty(dirty, s->srv->cfg->preallocate_bytes);
}

static void for_each_partition(syncer *s, void (*fn)(syncer *s, partition *p, int64_t now),
			       int64_t now)
{
	topic **list;
	int n;

	if (topics_list(s->srv->topics, &list, &n) < 0)
		return;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < list[i]->nparts; j++)
			fn(s, &list[i]->parts[j], now);
	topics_list_free(list, n);
}

static void flush_one(syncer *s, partition *p, int64_t now)
{
	int rc;

	serve_acks(s);
	sync_one(p, 0); /* acknowledgements do not wait for it: no preallocation */
	if (!p->ckpt_stale)
		return;
	serve_acks(s);
	rc = partlog_checkpoint_serving(p->log, serve_acks, s);
	if (rc < 0) {
		BLOG_RL(BLOG_ERROR, "checkpoint %s-%d: %s", p->topic->name, p->index, strerror(-rc));
		return;
	}
	p->ckpt_stale = false;
	/* the snapshot walks the producers anyway: expire them on the way */
	rc = partition_snapshot_producers(p, now_ms(), s->srv->cfg->producer_id_expiration_ms, true);
	if (rc < 0)
		BLOG_RL(BLOG_WARN, "producer snapshot %s-%d: %s", p->topic->name, p->index, strerror(-rc));
}

static void retain_one(syncer *s, partition *p, int64_t now)
{
	int deleted = 0;
	int rc;

	serve_acks(s);
	rc = partlog_retention(p->log, now, &deleted);

	if (rc < 0)
		BLOG_RL(BLOG_ERROR, "retention %s-%d: %s", p->topic->name, p->index, strerror(-rc));
	else if (deleted)
		blog(BLOG_INFO, "retention: %s-%d: deleted %d segment(s)", p->topic->name, p->index,
		     deleted);
}

/* Idle partitions get no snapshot from flush_one: their producers expire
 * here (the snapshot is rewritten only if some did). */
static void expire_one(syncer *s, partition *p, int64_t now)
{
	int rc;

	serve_acks(s);
	rc = partition_snapshot_producers(p, now, s->srv->cfg->producer_id_expiration_ms, false);
	if (rc < 0)
		BLOG_RL(BLOG_WARN, "producer snapshot %s-%d: %s", p->topic->name, p->index, strerror(-rc));
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static void *syncer_main(void *arg)
{
	syncer *s = arg;
	const config *cfg = s->srv->cfg;

	pthread_setname_np(pthread_self(), "sl-logsync");
	s->next_flush = mono_ms() + cfg->flush_interval_ms;
	s->next_retention = mono_ms() + cfg->retention_check_interval_ms;
	s->next_expiry = mono_ms() + cfg->producer_id_expiration_check_interval_ms;
	for (;;) {
		partition *dirty;
		topic **reap;
		int nreap;
		bool stop;
		int64_t now = mono_ms();

		pthread_mutex_lock(&s->lock);
		while (!s->dirty && !s->nreap && !s->stop && now < s->next_flush &&
		       now < s->next_retention && now < s->next_expiry) {
			int64_t until = min64(min64(s->next_flush, s->next_retention), s->next_expiry);
			struct timespec ts = { until / 1000, (until % 1000) * 1000000 };

			pthread_cond_timedwait(&s->cond, &s->lock, &ts);
			now = mono_ms();
		}
		dirty = s->dirty;
		s->dirty = NULL;
		reap = s->reap;
		nreap = s->nreap;
		s->reap = NULL;
		s->nreap = s->capreap = 0;
		stop = s->stop;
		pthread_mutex_unlock(&s->lock);

		sync_dirty(dirty, cfg->preallocate_bytes);
		for (int i = 0; i < nreap; i++)
			topic_destroy(reap[i]);
		free(reap);
		if (stop) {
			for_each_partition(s, flush_one, 0);
			break;
		}
		if (now >= s->next_flush) {
			for_each_partition(s, flush_one, 0);
			s->next_flush = mono_ms() + cfg->flush_interval_ms;
		}
		if (now >= s->next_retention) {
			for_each_partition(s, retain_one, now_ms());
			s->next_retention = mono_ms() + cfg->retention_check_interval_ms;
		}
		if (now >= s->next_expiry) {
			for_each_partition(s, expire_one, now_ms());
			s->next_expiry = mono_ms() + cfg->producer_id_expiration_check_interval_ms;
		}
	}
	return NULL;
}

int syncer_start(server *srv, syncer **out)
{
	syncer *s = calloc(1, sizeof(*s));
	pthread_condattr_t attr;
	int rc;

	if (!s)
		return -ENOMEM;
	s->srv = srv;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &attr);
	pthread_condattr_destroy(&attr);
	rc = pthread_create(&s->thread, NULL, syncer_main, s);
	if (rc != 0) {
		free(s);
		return -rc;
	}
	*out = s;
	return 0;
}

void syncer_mark_dirty(syncer *s, partition *p)
{
	if (atomic_exchange(&p->sync_queued, true))
		return; /* already queued: it shares the coming sync */
	topic_ref(p->topic);
	pthread_mutex_lock(&s->lock);
	p->sync_next = s->dirty;
	s->dirty = p;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void syncer_reap(syncer *s, topic *t)
{
	pthread_mutex_lock(&s->lock);
	if (s->nreap == s->capreap) {
		int cap = s->capreap ? s->capreap * 2 : 8;
		topic **r = realloc(s->reap, sizeof(*r) * (size_t)cap);

		if (!r) {
			pthread_mutex_unlock(&s->lock);
			blog(BLOG_ERROR, "out of memory queueing deletion of %s; files kept", t->name);
			return;
		}
		s->reap = r;
		s->capreap = cap;
	}
	s->reap[s->nreap++] = t;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void syncer_stop(syncer *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}
