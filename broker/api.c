/*
 * api.c — the API table and ApiVersions.  ApiVersions advertises exactly
 * this table: add an API here only when its handler is complete.
 */
#include "api.h"

#include <stddef.h>

#include "group.h"
#include "kerr.h"
#include "txn_api.h"

static const api_def apis[] = {
	{ API_PRODUCE, 3, 8, api_produce, "Produce" },
	{ API_FETCH, 4, 11, api_fetch, "Fetch" },
	{ API_LIST_OFFSETS, 1, 5, api_list_offsets, "ListOffsets" },
	{ API_METADATA, 0, 8, api_metadata, "Metadata" },
	{ API_API_VERSIONS, 0, 2, api_versions, "ApiVersions" },
	{ API_CREATE_TOPICS, 0, 4, api_create_topics, "CreateTopics" },
	{ API_DELETE_TOPICS, 0, 3, api_delete_topics, "DeleteTopics" },
	{ 8, 0, 7, api_offset_commit, "OffsetCommit" },
	{ 9, 1, 5, api_offset_fetch, "OffsetFetch" },
	{ 10, 0, 2, api_find_coordinator, "FindCoordinator" },
	{ 11, 0, 5, api_join_group, "JoinGroup" },
	{ 12, 0, 3, api_heartbeat, "Heartbeat" },
	{ 13, 0, 3, api_leave_group, "LeaveGroup" },
	{ 14, 0, 3, api_sync_group, "SyncGroup" },
	{ 15, 0, 4, api_describe_groups, "DescribeGroups" },
	{ 16, 0, 2, api_list_groups, "ListGroups" },
	{ 42, 0, 1, api_delete_groups, "DeleteGroups" },
	{ 22, 0, 1, api_init_producer_id, "InitProducerId" },
	{ 32, 0, 3, api_describe_configs, "DescribeConfigs" },
	{ 33, 0, 1, api_alter_configs, "AlterConfigs" },
	{ 47, 0, 0, api_offset_delete, "OffsetDelete" },
	{ API_TXN_PREPARE, 0, 1, api_txn_prepare, "TxnPrepare" },
	{ API_TXN_END, 0, 1, api_txn_end, "TxnEnd" },
	{ API_TXN_CHECK_POLL, 0, 1, api_txn_check_poll, "TxnCheckPoll" },
	{ API_TXN_LIST, 0, 1, api_txn_list, "TxnList" },
	{ API_TXN_DESCRIBE, 0, 1, api_txn_describe, "TxnDescribe" },
};

#define NAPIS ((int)(sizeof(apis) / sizeof(apis[0])))

const api_def *api_find(int16_t key)
{
	for (int i = 0; i < NAPIS; i++)
		if (apis[i].key == key)
			return &apis[i];
	return NULL;
}

const api_def *api_table(int *n)
{
	*n = NAPIS;
	return apis;
}

static void write_ranges(wire_buf *b)
{
	wire_w_i32(b, NAPIS);
	for (int i = 0; i < NAPIS; i++) {
		wire_w_i16(b, apis[i].key);
		wire_w_i16(b, apis[i].min);
		wire_w_i16(b, apis[i].max);
	}
}

int api_versions(req *r, wire_rd *rd)
{
	/* v0-v2 bodies are empty; ignore trailing bytes as Kafka does. */
	wire_w_i16(&r->resp, KERR_NONE);
	write_ranges(&r->resp);
	if (r->api_version >= 1)
		wire_w_i32(&r->resp, 0); /* throttle_time_ms */
	req_finish(r);
	return API_OK;
}

void api_versions_unsupported(req *r)
{
	wire_w_i16(&r->resp, KERR_UNSUPPORTED_VERSION);
	write_ranges(&r->resp);
	req_finish(r);
}
