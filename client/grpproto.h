/*
 * grpproto.h — the "consumer" embedded protocol of Kafka consumer groups:
 * ConsumerProtocolSubscription (JoinGroup metadata) and
 * ConsumerProtocolAssignment (SyncGroup assignment) codecs, and the range
 * and roundrobin assignors the group leader runs.
 *
 * Owns nothing global: pure functions on caller-owned values, callable from
 * any thread.  Byte compatibility: encoders write exactly what librdkafka
 * 2.0.2 writes (subscription v1 with an empty, non-null user_data and an
 * empty owned-partitions list; assignment v0 with empty user_data), so
 * librdkafka and libsluice members can share one group; decoders accept
 * subscription v0-v3 and assignment v0-v3 (later fields are skipped).
 *
 * Errors: 0 ok; -ENOMEM; GRPPROTO_E_BAD (positive) = malformed input.
 * Out-values are written only on success.
 */
#ifndef SLUICE_CLIENT_GRPPROTO_H
#define SLUICE_CLIENT_GRPPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define GRPPROTO_E_BAD 1

/* One topic's partitions. */
struct grpproto_topic {
	char *topic;     /* owned */
	int32_t *parts;  /* owned, ascending after grpproto_tplist_sort */
	int nparts, cap;
};

/* A set of topic partitions.  A zeroed value is an empty list. */
struct grpproto_tplist {
	struct grpproto_topic *t; /* owned */
	int n, cap;
};

/* Adds topic[0..tlen)/part (topic appended if new).  0 or -ENOMEM. */
int grpproto_tplist_add(struct grpproto_tplist *l, const char *topic, size_t tlen, int32_t part);
/* Sorts topics by name and each topic's partitions ascending. */
void grpproto_tplist_sort(struct grpproto_tplist *l);
/* Total number of partitions. */
int grpproto_tplist_count(const struct grpproto_tplist *l);
/* Frees the contents and leaves an empty list.  NULL-safe. */
void grpproto_tplist_free(struct grpproto_tplist *l);

/* A decoded ConsumerProtocolSubscription. */
struct grpproto_sub {
	int16_t version;
	char **topics; /* owned */
	int ntopics;
	struct grpproto_tplist owned; /* v1+ owned partitions */
};

/* Appends subscription v1 for topics[0..n) to b (b->oom on failure). */
void grpproto_sub_encode(wire_buf *b, const char *const *topics, int n);
/* Decodes len bytes at p into *out (fully written only on 0). */
int grpproto_sub_decode(const void *p, size_t len, struct grpproto_sub *out);
void grpproto_sub_free(struct grpproto_sub *s); /* NULL-safe */

/* Appends assignment v0 of l to b (b->oom on failure). */
void grpproto_assignment_encode(wire_buf *b, const struct grpproto_tplist *l);
/* Decodes an assignment; an empty (len 0) buffer is an empty assignment,
 * as the Java client reads it. */
int grpproto_assignment_decode(const void *p, size_t len, struct grpproto_tplist *out);

/* Assignor input/output: one group member. */
struct grpproto_member {
	const char *member_id;          /* borrowed */
	const char *instance_id;        /* borrowed; NULL: dynamic member */
	const struct grpproto_sub *sub; /* borrowed: the topics it wants */
	struct grpproto_tplist assigned; /* output, freed by the caller */
};

struct grpproto_topic_meta {
	const char *topic; /* borrowed */
	int32_t partitions; /* <= 0: unknown topic, assigned to nobody */
};

/* Known assignor names in preference order support: 1 if name is one. */
int grpproto_assignor_known(const char *name);
/* Runs assignor `name` ("range" or "roundrobin") over members[0..nm) and
 * topics[0..nt), filling members[i].assigned (sorted).  Kafka's results:
 * range: per topic, the subscribed members in member order get
 * consecutive ranges, the first (partitions % members) one extra;
 * roundrobin: every partition of every topic, topics sorted by name, dealt
 * in turn to the members (in member order) subscribed to its topic.
 * Member order is Java's (KIP-345): members with an instance_id first,
 * sorted by it, then the others sorted by member id.
 * Returns 0, -ENOMEM (assignments freed), or GRPPROTO_E_BAD for an
 * unknown name. */
int grpproto_assign(const char *name, struct grpproto_member *members, int nm,
		    const struct grpproto_topic_meta *topics, int nt);

#endif
