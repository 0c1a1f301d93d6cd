/*
 * topics.c — see topics.h.
 *
 * The registry is a small array searched linearly under an rwlock: a broker
 * on one machine holds tens to a few thousand topics, and a lookup is one
 * pass of memcmp, cheaper than the request parsing around it.
 */
#include "topics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blog.h"
#include "recbatch.h"
#include "server.h"

struct topics {
	pthread_rwlock_t lock;      /* protects list, n, cap, deleting */
	topic **list;               /* owned references */
	int n, cap;
	char **deleting;            /* names whose files are not gone yet */
	int ndeleting;
	char data_dir[PATH_MAX];
	topic_conf defaults;
	void (*reaper)(topic *t, void *arg);
	void *reaper_arg;
};

int topics_new(const char *data_dir, const topic_conf *defaults, topics **out)
{
	topics *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return -ENOMEM;
	pthread_rwlock_init(&reg->lock, NULL);
	snprintf(reg->data_dir, sizeof(reg->data_dir), "%s", data_dir);
	reg->defaults = *defaults;
	*out = reg;
	return 0;
}

void topics_set_reaper(topics *reg, void (*reaper)(topic *t, void *arg), void *arg)
{
	reg->reaper = reaper;
	reg->reaper_arg = arg;
}

const char *topics_data_dir(const topics *reg)
{
	return reg->data_dir;
}

static void free_overrides(char **k, char **v, int n)
{
	for (int i = 0; i < n; i++) {
		free(k[i]);
		free(v[i]);
	}
	free(k);
	free(v);
}

static void topic_free(topic *t)
{
	if (!t)
		return;
	free_overrides(t->ov_keys, t->ov_vals, t->nov);
	pthread_mutex_destroy(&t->conf_lock);
	pthread_mutex_destroy(&t->gate_lock);
	for (int i = 0; t->parts && i < t->nparts; i++) {
		partlog_close(t->parts[i].log);
		pidstate_free(t->parts[i].pids);
		pthread_mutex_destroy(&t->parts[i].wait_lock);
		pthread_mutex_destroy(&t->parts[i].pid_lock);
	}
	free(t->parts);
	free(t);
}

void topics_free(topics *reg)
{
	if (!reg)
		return;
	for (int i = 0; i < reg->n; i++)
		topic_free(reg->list[i]);
	for (int i = 0; i < reg->ndeleting; i++)
		free(reg->deleting[i]);
	free(reg->deleting);
	free(reg->list);
	pthread_rwlock_destroy(&reg->lock);
	free(reg);
}

bool topics_valid_name(const char *name, size_t len)
{
	if (len == 0 || len > TOPIC_NAME_MAX)
		return false;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '_' || ch == '-'))
			return false;
	}
	return true;
}

static int find_locked(topics *reg, const char *name, size_t len)
{
	for (int i = 0; i < reg->n; i++) {
		const char *tn = reg->list[i]->name;

		if (strlen(tn) == len && memcmp(tn, name, len) == 0)
			return i;
	}
	return -1;
}

static bool deleting_locked(topics *reg, const char *name)
{
	for (int i = 0; i < reg->ndeleting; i++)
		if (!strcmp(reg->deleting[i], name))
			return true;
	return false;
}

topic *topics_get(topics *reg, const char *name, size_t len)
{
	topic *t = NULL;
	int i;

	pthread_rwlock_rdlock(&reg->lock);
	i = find_locked(reg, name, len);
	if (i >= 0) {
		t = reg->list[i];
		atomic_fetch_add(&t->refs, 1);
	}
	pthread_rwlock_unlock(&reg->lock);
	return t;
}

void topic_ref(topic *t)
{
	atomic_fetch_add(&t->refs, 1);
}

void topic_unref(topic *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	/* Only a deleted topic can reach zero: the registry holds a ref. */
	if (t->reg->reaper)
		t->reg->reaper(t, t->reg->reaper_arg);
	else
		topic_destroy(t);
}

static int part_dir(const topics *reg, const char *name, int32_t i, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/%s-%d", reg->data_dir, name, i);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

#define SNAPSHOT_NAME "producers.snapshot"

int partition_each_batch(partition *p, int64_t from,
			 int (*fn)(void *arg, const uint8_t *b, size_t len, const recbatch_hdr *h),
			 void *arg)
{
	uint8_t *buf = NULL;
	size_t cap = 0;
	int64_t off = from;
	int rc = 0;

	while (off < partlog_hw(p->log)) {
		partlog_range r;
		size_t pos = 0, len;

		rc = partlog_read(p->log, off, 1 << 20, &r);
		if (rc != 0 || r.len == 0) {
			if (rc == 0)
				partlog_range_release(&r);
			rc = rc > 0 ? -EIO : rc; /* out of range: the log changed */
			break;
		}
		if (r.len > cap) {
			uint8_t *nb = realloc(buf, r.len);

			if (!nb) {
				partlog_range_release(&r);
				rc = -ENOMEM;
				break;
			}
			buf = nb;
			cap = r.len;
		}
		len = r.len;
		if (pread(r.fd, buf, len, r.pos) != (ssize_t)len) {
			partlog_range_release(&r);
			rc = -EIO;
			break;
		}
		partlog_range_release(&r); /* clears r */
		while (pos < len) {
			size_t size = recbatch_size(buf + pos, len - pos);
			recbatch_hdr h;

			if (size == 0 || recbatch_parse_hdr(buf + pos, len - pos, &h) != RECBATCH_OK) {
				rc = -EIO;
				goto out;
			}
			if (h.base_offset + h.last_offset_delta >= from) {
				rc = fn(arg, buf + pos, size, &h);
				if (rc != 0)
					goto out;
			}
			off = h.base_offset + h.last_offset_delta + 1;
			pos += size;
		}
	}
out:
	free(buf);
	return rc;
}

struct replay {
	partition *p;
	int64_t now; /* wall clock ms of the recovery */
};

static int observe_producer(void *arg, const uint8_t *b, size_t len, const recbatch_hdr *h)
{
	struct replay *r = arg;

	(void)b;
	(void)len;
	/* The time of the recovery, not the batch's max_timestamp: a client
	 * sets that (CreateTime) to anything, and the append time is not in
	 * the log.  The batch was written before now, so its producer is
	 * kept at least as long as without the restart. */
	if (h->producer_id >= 0)
		pidstate_observe(r->p->pids, h->producer_id, h->producer_epoch, h->base_sequence,
				 pidstate_seq_add(h->base_sequence, h->last_offset_delta), h->base_offset,
				 h->base_offset + h->last_offset_delta, r->now);
	return 0;
}

/* Replays the idempotent-producer fields of every batch header from
 * `from` to the end of the log into p->pids. */
static int replay_producers(partition *p, int64_t from, int64_t now)
{
	struct replay r = { p, now };

	return partition_each_batch(p, from, observe_producer, &r);
}

/* Snapshot (if valid and not ahead of the log) + replay of what follows. */
static int load_producers(partition *p, const char *dir)
{
	char path[PATH_MAX];
	int64_t from = partlog_start_offset(p->log), covered = -1, now = now_ms();
	uint8_t *buf = NULL;
	pidstate *snap = pidstate_new();
	struct stat st;
	int fd;

	if (!snap)
		return -ENOMEM;
	if (snprintf(path, sizeof(path), "%s/" SNAPSHOT_NAME, dir) >= (int)sizeof(path)) {
		pidstate_free(snap);
		return -ENAMETOOLONG;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	/* decoded aside: a snapshot ahead of the recovered log (it was cut
	 * below it) must leave nothing behind, or a retried batch past the
	 * log's end would pass for a duplicate */
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < (64 << 20) &&
	    (buf = malloc((size_t)st.st_size)) &&
	    pread(fd, buf, (size_t)st.st_size, 0) == st.st_size &&
	    pidstate_decode(snap, buf, (size_t)st.st_size, now, &covered) == 0 &&
	    covered <= partlog_end_offset(p->log) && covered >= from) {
		from = covered;
		pidstate_free(p->pids);
		p->pids = snap;
		snap = NULL;
	} else if (covered >= 0) {
		blog(BLOG_WARN, "%s: producer snapshot ahead of the log or unusable; rescanning", dir);
	}
	pidstate_free(snap);
	free(buf);
	if (fd >= 0)
		close(fd);
	return replay_producers(p, from, now);
}

int partition_snapshot_producers(partition *p, int64_t now, int64_t expiration_ms, bool always)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	uint8_t *buf = NULL;
	int64_t covered;
	size_t expired;
	long len;
	int fd, rc = 0;

	if (part_dir(p->topic->reg, p->topic->name, p->index, path, sizeof(path) - 32) < 0)
		return -ENAMETOOLONG;
	strcat(path, "/" SNAPSHOT_NAME);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	pthread_mutex_lock(&p->pid_lock);
	/* Expiry and encoding see the same covered end under one lock hold:
	 * the snapshot leaves out exactly the producers memory forgot (why
	 * that is safe: pidstate_expire in pidstate.c). */
	covered = partlog_durable_end(p->log);
	expired = pidstate_expire(p->pids, now, expiration_ms, covered);
	if (!always && expired == 0) {
		pthread_mutex_unlock(&p->pid_lock);
		return 0;
	}
	len = pidstate_encode(p->pids, covered, &buf);
	pthread_mutex_unlock(&p->pid_lock);
	if (expired)
		blog(BLOG_INFO, "producer state %s-%d: expired %zu producer id(s) idle for %lld ms or more",
		     p->topic->name, p->index, expired, (long long)expiration_ms);
	if (len < 0)
		return (int)len;
	/* No fsync: a lost or torn snapshot only costs a full header scan
	 * at the next start (its CRC fails), never a wrong answer. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, (size_t)len) != len || rename(tmp, path) < 0)
		rc = -errno ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

/* Builds a topic with open partition logs (not yet in the registry). */
static int copy_overrides(const topic_overrides *ov, char ***keys, char ***vals)
{
	int n = ov ? ov->n : 0;
	char **k = calloc((size_t)n + 1, sizeof(*k)), **v = calloc((size_t)n + 1, sizeof(*v));

	if (!k || !v)
		goto fail;
	for (int i = 0; i < n; i++)
		if (!(k[i] = strdup(ov->keys[i])) || !(v[i] = strdup(ov->values[i])))
			goto fail;
	*keys = k;
	*vals = v;
	return 0;
fail:
	free_overrides(k, v, k && v ? n : 0);
	return -ENOMEM;
}

bool partition_synced(partition *p)
{
	bool synced;

	pthread_mutex_lock(&p->topic->conf_lock);
	synced = p->topic->conf.log.synced;
	pthread_mutex_unlock(&p->topic->conf_lock);
	return synced;
}

void topic_gate_conf(const produce_limit *l, gate_conf *out)
{
	out->msg_rate = l->msg_rate;
	out->msg_burst = l->msg_burst > 0 ? (uint64_t)l->msg_burst
			 : (uint64_t)(l->msg_rate < 1 ? 1 : l->msg_rate + 0.999999);
	out->byte_rate = l->byte_rate;
	out->byte_burst = l->byte_burst > 0 ? (uint64_t)l->byte_burst
			  : (uint64_t)(l->byte_rate < 1 ? 1 : l->byte_rate + 0.999999);
	out->max_queued = (uint32_t)l->queue_max;
	out->max_wait_ns = (int64_t)l->queue_max_wait_ms * 1000000;
}

bool topic_conf_check(const topic_conf *c, char *err, size_t errlen)
{
	ratelimit_gate g;
	gate_conf gc;

	topic_gate_conf(&c->limit, &gc);
	if (gate_init(&g, &gc) < 0) {
		snprintf(err, errlen, "produce.* rate limit settings out of range");
		return false;
	}
	return true;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int topic_gate_apply(topic *t, const produce_limit *l, bool first)
{
	gate_conf gc;
	int rc;

	topic_gate_conf(l, &gc);
	pthread_mutex_lock(&t->gate_lock);
	rc = first ? gate_init(&t->gate, &gc) : gate_set(&t->gate, &gc, mono_ns());
	if (rc == 0)
		atomic_store(&t->gated, l->msg_rate > 0 || l->byte_rate > 0);
	pthread_mutex_unlock(&t->gate_lock);
	return rc;
}

void topic_get_conf(topic *t, topic_conf *out)
{
	pthread_mutex_lock(&t->conf_lock);
	*out = t->conf;
	pthread_mutex_unlock(&t->conf_lock);
}

int topic_set_conf(topic *t, const topic_conf *conf, const topic_overrides *ov)
{
	char **k, **v, **ok, **ovv;
	int on;

	if (copy_overrides(ov, &k, &v) < 0)
		return -ENOMEM;
	if (topic_gate_apply(t, &conf->limit, false) < 0) {
		free_overrides(k, v, ov ? ov->n : 0);
		return -EINVAL;
	}
	pthread_mutex_lock(&t->conf_lock);
	ok = t->ov_keys;
	ovv = t->ov_vals;
	on = t->nov;
	t->ov_keys = k;
	t->ov_vals = v;
	t->nov = ov ? ov->n : 0;
	t->conf = *conf;
	for (int i = 0; i < t->nparts; i++)
		partlog_set_conf(t->parts[i].log, &conf->log);
	pthread_mutex_unlock(&t->conf_lock);
	/* Requests waiting for a sync (acks=-1 produces, commits) re-check:
	 * leaving fsync durability may have made their offsets visible. */
	for (int i = 0; i < t->nparts; i++)
		partition_wake(&t->parts[i]);
	free_overrides(ok, ovv, on);
	return 0;
}

void topic_each_override(topic *t, void (*fn)(const char *key, const char *value, void *arg), void *arg)
{
	pthread_mutex_lock(&t->conf_lock);
	for (int i = 0; i < t->nov; i++)
		fn(t->ov_keys[i], t->ov_vals[i], arg);
	pthread_mutex_unlock(&t->conf_lock);
}

static int topic_open(topics *reg, const char *name, int32_t nparts, const topic_conf *conf,
		      const topic_overrides *ov, const uint8_t id[16], topic **out)
{
	char dir[PATH_MAX];
	topic *t = calloc(1, sizeof(*t));
	int rc = -ENOMEM;

	if (!t)
		goto fail;
	pthread_mutex_init(&t->conf_lock, NULL);
	pthread_mutex_init(&t->gate_lock, NULL);
	if (copy_overrides(ov, &t->ov_keys, &t->ov_vals) < 0)
		goto fail;
	if (topic_gate_apply(t, &conf->limit, true) < 0) {
		rc = -EINVAL;
		goto fail;
	}
	t->nov = ov ? ov->n : 0;
	t->parts = calloc((size_t)nparts, sizeof(*t->parts));
	if (!t->parts)
		goto fail;
	atomic_init(&t->refs, 1);
	snprintf(t->name, sizeof(t->name), "%s", name);
	memcpy(t->id, id, 16);
	t->conf = *conf;
	t->reg = reg;
	t->nparts = nparts;
	for (int32_t i = 0; i < nparts; i++) {
		partition *p = &t->parts[i];
		uint64_t cut = 0;

		p->topic = t;
		p->index = i;
		pthread_mutex_init(&p->wait_lock, NULL);
		pthread_mutex_init(&p->pid_lock, NULL);
		p->pids = pidstate_new();
		if (!p->pids) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = part_dir(reg, name, i, dir, sizeof(dir));
		if (rc < 0)
			goto fail;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			rc = -errno;
			blog(BLOG_ERROR, "mkdir %s: %s", dir, strerror(errno));
			goto fail;
		}
		rc = partlog_open(dir, &conf->log, &p->log, &cut);
		if (rc < 0) {
			blog(BLOG_ERROR, "open log %s: %s", dir, strerror(-rc));
			goto fail;
		}
		if (cut)
			blog(BLOG_WARN, "recovery: %s: truncated %llu bytes of invalid tail", dir,
			     (unsigned long long)cut);
		rc = load_producers(p, dir);
		if (rc < 0) {
			blog(BLOG_ERROR, "rebuild producer state of %s: %s", dir, strerror(-rc));
			goto fail;
		}
	}
	*out = t;
	return 0;
fail:
	topic_free(t);
	return rc;
}

static int insert_locked(topics *reg, topic *t)
{
	if (reg->n == reg->cap) {
		int cap = reg->cap ? reg->cap * 2 : 16;
		topic **l = realloc(reg->list, sizeof(*l) * (size_t)cap);

		if (!l)
			return -ENOMEM;
		reg->list = l;
		reg->cap = cap;
	}
	reg->list[reg->n++] = t;
	return 0;
}

int topics_create(topics *reg, const char *name, int32_t nparts, const topic_conf *conf,
		  const topic_overrides *ov, topic **out, char *err, size_t errlen)
{
	uint8_t id[16];
	topic *t = NULL;
	int rc;

	if (!topics_valid_name(name, strlen(name))) {
		snprintf(err, errlen, "topic name must be 1-%d characters of [a-zA-Z0-9._-], not '.' or '..'",
			 TOPIC_NAME_MAX);
		return TOPICS_E_INVALID_NAME;
	}
	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id))
		memset(id, 0x5a, sizeof(id));
	/* The write lock is held across opening the logs so two creates of one
	 * name cannot both open the same directories; creation is rare. */
	pthread_rwlock_wrlock(&reg->lock);
	if (find_locked(reg, name, strlen(name)) >= 0) {
		snprintf(err, errlen, "topic '%s' already exists", name);
		rc = TOPICS_E_EXISTS;
		goto out;
	}
	if (deleting_locked(reg, name)) {
		snprintf(err, errlen, "topic '%s' is marked for deletion", name);
		rc = TOPICS_E_DELETING;
		goto out;
	}
	rc = topic_open(reg, name, nparts, conf, ov, id, &t);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create the partition logs: %s", strerror(-rc));
		goto out;
	}
	rc = insert_locked(reg, t);
	if (rc < 0) {
		topic_free(t);
		goto out;
	}
	atomic_fetch_add(&t->refs, 1);
	*out = t;
out:
	pthread_rwlock_unlock(&reg->lock);
	return rc;
}

int topics_load(topics *reg, const char *name, int32_t nparts, const topic_conf *conf,
		const topic_overrides *ov, const uint8_t id[16])
{
	topic *t;
	int rc = topic_open(reg, name, nparts, conf, ov, id, &t);

	if (rc < 0)
		return rc;
	pthread_rwlock_wrlock(&reg->lock);
	rc = insert_locked(reg, t);
	pthread_rwlock_unlock(&reg->lock);
	if (rc < 0)
		topic_free(t);
	return rc;
}

int topics_delete(topics *reg, const char *name)
{
	topic *t = NULL;
	char *copy = strdup(name);
	char **d;
	int i;

	if (!copy)
		return -ENOMEM;
	pthread_rwlock_wrlock(&reg->lock);
	i = find_locked(reg, name, strlen(name));
	d = realloc(reg->deleting, sizeof(*d) * (size_t)(reg->ndeleting + 1));
	if (i >= 0 && d) {
		t = reg->list[i];
		reg->list[i] = reg->list[--reg->n];
		reg->deleting = d;
		reg->deleting[reg->ndeleting++] = copy;
		copy = NULL;
	} else if (d) {
		reg->deleting = d;
	}
	pthread_rwlock_unlock(&reg->lock);
	free(copy);
	if (i < 0)
		return TOPICS_E_NOT_FOUND;
	if (!t)
		return -ENOMEM;
	atomic_store(&t->deleted, true);
	/* Waiting fetches see the topic gone and answer with an error. */
	for (int p = 0; p < t->nparts; p++)
		partition_wake(&t->parts[p]);
	topic_unref(t);
	return TOPICS_OK;
}

void topic_destroy(topic *t)
{
	topics *reg = t->reg;

	for (int i = 0; i < t->nparts; i++) {
		int rc = partlog_destroy(t->parts[i].log);

		t->parts[i].log = NULL;
		if (rc < 0)
			blog(BLOG_WARN, "delete topic %s partition %d: %s", t->name, i, strerror(-rc));
	}
	pthread_rwlock_wrlock(&reg->lock);
	for (int i = 0; i < reg->ndeleting; i++) {
		if (!strcmp(reg->deleting[i], t->name)) {
			free(reg->deleting[i]);
			reg->deleting[i] = reg->deleting[--reg->ndeleting];
			break;
		}
	}
	pthread_rwlock_unlock(&reg->lock);
	blog(BLOG_INFO, "topic %s deleted", t->name);
	topic_free(t);
}

static int cmp_topic(const void *a, const void *b)
{
	return strcmp((*(topic *const *)a)->name, (*(topic *const *)b)->name);
}

int topics_list(topics *reg, topic ***out, int *n)
{
	topic **l;

	pthread_rwlock_rdlock(&reg->lock);
	l = malloc(sizeof(*l) * (size_t)(reg->n ? reg->n : 1));
	if (!l) {
		pthread_rwlock_unlock(&reg->lock);
		return -ENOMEM;
	}
	for (int i = 0; i < reg->n; i++) {
		l[i] = reg->list[i];
		atomic_fetch_add(&l[i]->refs, 1);
	}
	*n = reg->n;
	pthread_rwlock_unlock(&reg->lock);
	qsort(l, (size_t)*n, sizeof(*l), cmp_topic);
	*out = l;
	return 0;
}

void topics_list_free(topic **list, int n)
{
	for (int i = 0; i < n; i++)
		topic_unref(list[i]);
	free(list);
}
