/*
 * group.h — the consumer group coordinator (Kafka's classic group protocol)
 * and committed offsets.
 *
 * Groups follow Kafka's state machine: Empty → PreparingRebalance (members
 * (re)join; JoinGroup requests are parked) → CompletingRebalance (join
 * answered, the leader computes the assignment; followers' SyncGroup
 * requests are parked) → Stable (assignment delivered; heartbeats keep
 * members alive) → back to PreparingRebalance when a member joins, leaves
 * or misses its session timeout.  Static members (group.instance.id) keep
 * their identity across restarts; a new member id for a known instance id
 * fences the old one.
 *
 * Committed offsets live in an in-memory map for OffsetFetch (offmap.h) and
 * in SQLite (table group_offsets) for restarts: an OffsetCommit is answered
 * after the coordinator thread's commit (batched with every other commit
 * queued at that moment) and after its done has applied it to the map, in
 * SQLite order whatever loop the done runs on (offmap.h).  Loaded at
 * start-up.  Offsets of a group with no members expire
 * offsets.retention.minutes after its last commit.
 *
 * Threads: every group and the offset map are guarded by one mutex (the
 * coordinator state lock); handlers run on any loop and take it briefly.  A
 * parked request belongs to its own loop; whoever completes it (another
 * loop, or the ticker) writes its response under the lock and hands it back
 * with req_post_finish().  The ticker (session and rebalance timeouts,
 * offset expiry) runs on worker 0's loop every 100 ms.  The sequence
 * counter of the offset jobs belongs to the coordinator thread (their
 * run()); nothing on a loop touches SQLite.
 */
#ifndef SLUICE_GROUP_H
#define SLUICE_GROUP_H

#include <sqlite3.h>

#include "conn.h"
#include "server.h"

typedef struct groups groups;

/* Loads committed offsets from db (main thread, before coord_start). */
int groups_new(server *srv, sqlite3 *db, groups **out);
/* Starts the ticker on w's loop (before the loops run). */
void groups_start(groups *g, worker *w);
void groups_free(groups *g);

int api_find_coordinator(req *r, wire_rd *rd);
int api_join_group(req *r, wire_rd *rd);
int api_sync_group(req *r, wire_rd *rd);
int api_heartbeat(req *r, wire_rd *rd);
int api_leave_group(req *r, wire_rd *rd);
int api_offset_commit(req *r, wire_rd *rd);
int api_offset_fetch(req *r, wire_rd *rd);
int api_describe_groups(req *r, wire_rd *rd);
int api_list_groups(req *r, wire_rd *rd);
int api_delete_groups(req *r, wire_rd *rd);
int api_offset_delete(req *r, wire_rd *rd);

#endif
