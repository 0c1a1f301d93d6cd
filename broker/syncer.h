/*
 * syncer.h — the sync thread: everything that waits on the disk, off the
 * event loops.
 *  - fsync durability: partitions appended to are queued here; each round
 *    fdatasyncs every queued partition once (appends arriving during a round
 *    share the next one: group commit), then publishes the new high
 *    watermark and wakes waiting produce acks and fetches.
 *  - every log.flush.interval.ms: syncs dirty partitions and writes their
 *    recovery checkpoints (pagecache durability relies on this to bound
 *    recovery).
 *  - every log.retention.check.interval.ms: retention.
 *  - idempotent-producer expiry (producer.id.expiration.ms): with each
 *    producer snapshot written after a checkpoint, and every
 *    producer.id.expiration.check.interval.ms for all partitions (idle
 *    ones write no snapshot).
 *  The periodic work syncs the partitions queued for acknowledgements
 *  between its steps (serve_acks), so an acknowledgement waits behind one
 *  step at most (one partition's index files).
 *  - reaping deleted topics (their files), off the loops.
 *
 * Threads: syncer_mark_dirty and syncer_reap from any thread; the rest from
 * main.
 */
#ifndef SLUICE_SYNCER_H
#define SLUICE_SYNCER_H

#include "server.h"
#include "topics.h"

typedef struct syncer syncer;

int syncer_start(server *srv, syncer **out);
/* p was appended to and its topic is in fsync durability. */
void syncer_mark_dirty(syncer *s, partition *p);
/* t was deleted and its last reference dropped: remove its files. */
void syncer_reap(syncer *s, topic *t);
/* Stops the thread after a final sync and checkpoint of every partition. */
void syncer_stop(syncer *s);

#endif
