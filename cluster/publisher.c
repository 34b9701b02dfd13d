/*
 * The publisher: one batch, one JetStream message, one message id.
 *
 * De-duplication is the server's: a message whose Nats-Msg-Id the stream
 * stored within its window is acknowledged again with the first sequence
 * and "duplicate", and stored once. So a publish whose ack is lost (a
 * timeout, a leader change, a reconnect) is simply sent again with the same
 * id. With an expected-last-subject-sequence condition, a server before
 * 2.10.14 checks the condition before the id: the retry of a conditional
 * publish that was stored fails as a conflict. A conflict is therefore
 * checked against the partition's last message: if that message carries
 * our id, it is ours, and the publish succeeded (as a duplicate).
 */
#include "cluster/cluster_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/internal.h"

#define MSG_ID_MAX	64
#define DEFAULT_RETRIES 10

struct sc_cluster_publisher {
	natsConnection *nc;
	jsCtx *js;
	char stream[SC_CLUSTER_STREAM_MAX + 1];
	size_t max_payload;
	sc_event *stamped; /* the caller's events with their times set */
	size_t stamped_cap;
	uint8_t *buf;
	size_t buf_cap;
};

int sc_cluster_publisher_open(const sc_cluster_options *opt,
			      sc_cluster_publisher **out, sc_error *err)
{
	*out = NULL;
	const char *name = sc_cluster_stream_name(opt, err);
	if (!name)
		return SC_EINVAL;
	sc_cluster_publisher *pub = sc_calloc(1, sizeof *pub);
	if (!pub)
		return sc_error_set(err, ENOMEM, "out of memory");
	snprintf(pub->stream, sizeof pub->stream, "%s", name);
	int rc = sc_cluster_connect(opt, &pub->nc, &pub->js, err);
	if (rc) {
		sc_free(pub);
		return rc;
	}
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, pub->js, name, NULL, &jerr);
	if (s != NATS_OK) {
		char what[128];
		snprintf(what, sizeof what, "stream %s%s", name,
			 jerr == JSStreamNotFoundErr
			     ? " (create it with `statecache stream-create`)"
			     : "");
		rc = sc_cluster_nats_error(err, what, s, jerr);
		sc_cluster_publisher_close(pub);
		return rc;
	}
	size_t max = (size_t)natsConnection_GetMaxPayload(pub->nc);
	if (si->Config && si->Config->MaxMsgSize > 0 &&
	    (size_t)si->Config->MaxMsgSize < max)
		max = (size_t)si->Config->MaxMsgSize;
	jsStreamInfo_Destroy(si);
	pub->max_payload = max;
	*out = pub;
	return 0;
}

void sc_cluster_publisher_close(sc_cluster_publisher *pub)
{
	if (!pub)
		return;
	if (pub->js)
		jsCtx_Destroy(pub->js);
	if (pub->nc)
		natsConnection_Destroy(pub->nc);
	sc_free(pub->stamped);
	sc_free(pub->buf);
	sc_free(pub);
}

size_t sc_cluster_publisher_max_batch_bytes(sc_cluster_publisher *pub)
{
	return pub->max_payload;
}

static int msg_id_check(const char *id, sc_error *err)
{
	size_t len = strlen(id);
	bool ok = len >= 1 && len <= MSG_ID_MAX;
	for (size_t i = 0; ok && i < len; i++) {
		char c = id[i];
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		     (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
	}
	if (!ok)
		return sc_error_set(err, SC_EINVAL,
				    "msg_id \"%.64s\" is not 1..%d letters, "
				    "digits, '-', '_' or '.'",
				    id, MSG_ID_MAX);
	return 0;
}

static int msg_id_random(char out[MSG_ID_MAX + 1], sc_error *err)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t r[16];
	size_t got = 0;
	while (got < sizeof r) {
		ssize_t n = getrandom(r + got, sizeof r - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sc_error_set(err, errno,
					    "getrandom for a message id: %s",
					    strerror(errno));
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof r; i++) {
		out[2 * i] = hex[r[i] >> 4];
		out[2 * i + 1] = hex[r[i] & 15];
	}
	out[2 * sizeof r] = '\0';
	return 0;
}

/* A conflict on a conditional publish: true (and *seq) when the
 * partition's last message is the one with our id, stored by an earlier
 * attempt. */
static bool conflict_is_ours(sc_cluster_publisher *pub, const char *subject,
			     const char *id, uint64_t *seq)
{
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	if (js_GetLastMsg(&m, pub->js, pub->stream, subject, NULL, &jerr) !=
	    NATS_OK)
		return false;
	const char *got = NULL;
	bool ours = natsMsgHeader_Get(m, "Nats-Msg-Id", &got) == NATS_OK &&
		    got && strcmp(got, id) == 0;
	if (ours) {
		*seq = natsMsg_GetSequence(m);
		ours = *seq > 0;
	}
	natsMsg_Destroy(m);
	return ours;
}

int sc_cluster_publish(sc_cluster_publisher *pub, const sc_event *events,
		       size_t n, const sc_cluster_publish_options *opt,
		       sc_cluster_publish_result *res, sc_error *err)
{
	sc_cluster_publish_options none = {0};
	if (!opt)
		opt = &none;
	if (res)
		memset(res, 0, sizeof *res);
	if (!pub || !events || n == 0)
		return sc_error_set(err, SC_EINVAL,
				    "publish: no events (a batch holds at "
				    "least one)");
	for (size_t i = 0; i < n; i++) {
		sc_error e;
		if (sc_event_validate(&events[i], &e))
			return sc_error_set(err, SC_EINVAL, "event %zu: %s", i,
					    e.message);
		sc_str p0 = events[0].partition, pi = events[i].partition;
		if (pi.len != p0.len ||
		    (pi.len && memcmp(pi.ptr, p0.ptr, pi.len) != 0))
			return sc_error_set(err, SC_EINVAL,
					    "event %zu: its partition differs "
					    "from event 0's (a batch is one "
					    "partition's: publish one batch "
					    "per partition)",
					    i);
	}
	char id_buf[MSG_ID_MAX + 1];
	const char *id = opt->msg_id;
	int rc = id ? msg_id_check(id, err) : msg_id_random(id_buf, err);
	if (rc)
		return rc;
	if (!id)
		id = id_buf;
	char token[SC_CLUSTER_TOKEN_MAX];
	rc = sc_cluster_partition_token(events[0].partition, token, err);
	if (rc)
		return rc;
	char subject[SC_CLUSTER_STREAM_MAX + SC_CLUSTER_TOKEN_MAX + 2];
	snprintf(subject, sizeof subject, "%s.%s", pub->stream, token);

	/* Stamp the times here, so that every node applies the same. */
	if (n > pub->stamped_cap) {
		sc_event *p = sc_realloc(pub->stamped, n * sizeof *p);
		if (!p)
			return sc_error_set(err, ENOMEM, "out of memory");
		pub->stamped = p;
		pub->stamped_cap = n;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	for (size_t i = 0; i < n; i++) {
		pub->stamped[i] = events[i];
		pub->stamped[i].position = 0;
		if (pub->stamped[i].time == 0)
			pub->stamped[i].time = now;
	}
	size_t size = sc_cluster_batch_size(pub->stamped, n);
	if (size > pub->max_payload)
		return sc_error_set(err, SC_ETOOBIG,
				    "batch of %zu events encodes to %zu bytes; "
				    "the server's maximum message size is %zu: "
				    "publish fewer events per batch",
				    n, size, pub->max_payload);
	if (size > pub->buf_cap) {
		uint8_t *b = sc_realloc(pub->buf, size);
		if (!b)
			return sc_error_set(err, ENOMEM, "out of memory");
		pub->buf = b;
		pub->buf_cap = size;
	}
	sc_cluster_batch_write(pub->stamped, n, pub->buf);

	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MsgId = id;
	po.ExpectStream = pub->stream;
	if (opt->expect) {
		if (opt->expect_partition_seq == 0)
			po.ExpectNoMessage = true;
		else
			po.ExpectLastSubjectSeq = opt->expect_partition_seq;
	}
	unsigned retries = opt->retries ? opt->retries : DEFAULT_RETRIES;
	for (unsigned attempt = 0;; attempt++) {
		jsPubAck *ack = NULL;
		jsErrCode jerr = 0;
		natsStatus s = js_Publish(&ack, pub->js, subject, pub->buf,
					  (int)size, &po, &jerr);
		if (res)
			res->attempts = attempt + 1;
		if (s == NATS_OK) {
			if (res) {
				res->sequence = ack->Sequence;
				res->duplicate = ack->Duplicate;
			}
			jsPubAck_Destroy(ack);
			return 0;
		}
		if (jerr == JSStreamWrongLastSequenceErr) {
			uint64_t seq = 0;
			if (conflict_is_ours(pub, subject, id, &seq)) {
				if (res) {
					res->sequence = seq;
					res->duplicate = true;
				}
				return 0;
			}
			return sc_error_set(
			    err, SC_ECONFLICT,
			    "partition's last stream sequence is not %llu "
			    "(subject %s): nothing stored; read again and "
			    "decide again",
			    (unsigned long long)opt->expect_partition_seq,
			    subject);
		}
		/* What a leader election, a server restart or a lost
		 * connection answers: worth the same message again. */
		bool transient = s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS ||
				 s == NATS_CONNECTION_DISCONNECTED ||
				 s == NATS_CONNECTION_CLOSED ||
				 jerr == JSClusterNotAvailErr ||
				 jerr == JSClusterNotLeaderErr ||
				 jerr == JSNotEnabledErr;
		if (!transient || attempt >= retries) {
			char what[320];
			snprintf(what, sizeof what,
				 "publish to %s (message id %s, %u attempts; "
				 "publish again with this id)",
				 subject, id, attempt + 1);
			return sc_cluster_nats_error(err, what, s, jerr);
		}
		/* Give an election time: 50 ms, doubling up to 1 s. */
		if (s != NATS_TIMEOUT) {
			long ms = attempt < 5 ? 50L << attempt : 1000;
			struct timespec d = {ms / 1000, (ms % 1000) * 1000000};
			nanosleep(&d, NULL);
		}
	}
}
