/*
 * Projectors: registration, their calls inside an append, and their
 * offsets (meta "projector/NAME", 8 bytes big-endian: the last position
 * the projector applied, committed with those events).
 */
#include "store/store_internal.h"

#include <errno.h>
#include <string.h>

#include "common/internal.h"

#define PROJECTOR_KEY_PREFIX "projector/"
#define PROJECTOR_KEY_MAX    (sizeof PROJECTOR_KEY_PREFIX + 255)

int sc_store_add_projector(sc_store *store, const sc_projector *p,
			   sc_error *err)
{
	if (!p || !p->apply || !p->name || !*p->name || strlen(p->name) > 255)
		return sc_error_set(err, SC_EINVAL,
				    "a projector needs a name of 1..255 bytes "
				    "and an apply function");
	size_t len = strlen(p->name);
	char *name = sc_malloc(len + 1);
	if (!name)
		return sc_error_set(
		    err, ENOMEM, "out of memory adding projector %s", p->name);
	memcpy(name, p->name, len + 1);
	pthread_mutex_lock(&store->write_mu);
	sc_projector *np = sc_realloc(store->projectors,
				      (store->nprojectors + 1) * sizeof *np);
	if (!np) {
		pthread_mutex_unlock(&store->write_mu);
		sc_free(name);
		return sc_error_set(
		    err, ENOMEM, "out of memory adding projector %s", p->name);
	}
	store->projectors = np;
	np[store->nprojectors] = *p;
	np[store->nprojectors].name = name;
	store->nprojectors++;
	pthread_mutex_unlock(&store->write_mu);
	return 0;
}

int sc_store_remove_projector(sc_store *store, const char *name)
{
	if (!store || !name)
		return SC_EINVAL;
	int rc = SC_NOTFOUND;
	pthread_mutex_lock(&store->write_mu);
	for (size_t i = 0; i < store->nprojectors; i++) {
		if (strcmp(store->projectors[i].name, name) != 0)
			continue;
		sc_free((char *)store->projectors[i].name);
		memmove(&store->projectors[i], &store->projectors[i + 1],
			(store->nprojectors - i - 1) *
			    sizeof store->projectors[0]);
		store->nprojectors--;
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&store->write_mu);
	return rc;
}

void sc_projectors_free(sc_store *store)
{
	for (size_t i = 0; i < store->nprojectors; i++)
		sc_free((char *)store->projectors[i].name);
	sc_free(store->projectors);
	store->projectors = NULL;
	store->nprojectors = 0;
}

int sc_projectors_apply(sc_store *store, MDB_txn *txn, const sc_event *ev,
			size_t i, uint64_t pos, sc_error *err)
{
	for (size_t j = 0; j < store->nprojectors; j++) {
		const sc_projector *p = &store->projectors[j];
		sc_error perr;
		sc_error_clear(&perr);
		int prc = p->apply(p->ctx, txn, ev, &perr);
		if (prc)
			return sc_error_set(err, SC_EPROJECTOR,
					    "projector %s failed on event %zu "
					    "(position %llu): %s",
					    p->name, i, (unsigned long long)pos,
					    perr.message[0] ? perr.message
							    : sc_strerror(prc));
	}
	return 0;
}

void sc_projectors_commit(sc_store *store)
{
	for (size_t j = 0; j < store->nprojectors; j++)
		if (store->projectors[j].commit)
			store->projectors[j].commit(store->projectors[j].ctx);
}

void sc_projectors_rollback(sc_store *store)
{
	for (size_t i = 0; i < store->nprojectors; i++)
		if (store->projectors[i].rollback)
			store->projectors[i].rollback(store->projectors[i].ctx);
}

static size_t projector_key(uint8_t *k, const char *name)
{
	size_t n = strlen(name);
	memcpy(k, PROJECTOR_KEY_PREFIX, sizeof PROJECTOR_KEY_PREFIX - 1);
	memcpy(k + sizeof PROJECTOR_KEY_PREFIX - 1, name, n);
	return sizeof PROJECTOR_KEY_PREFIX - 1 + n;
}

int sc_projectors_put_offsets(sc_store *store, MDB_txn *txn, uint64_t last)
{
	uint8_t vb[8];
	sc_be64_put(vb, last);
	for (size_t j = 0; j < store->nprojectors; j++) {
		uint8_t kb[PROJECTOR_KEY_MAX];
		MDB_val k = {projector_key(kb, store->projectors[j].name), kb},
			v = {8, vb};
		int rc = mdb_put(txn, store->dbi_meta, &k, &v, 0);
		if (rc)
			return rc;
	}
	return 0;
}

int sc_store_projector_position(sc_store *store, const char *name,
				uint64_t *position, sc_error *err)
{
	if (!store || !name || !*name || strlen(name) > 255 || !position)
		return sc_error_set(
		    err, SC_EINVAL,
		    "sc_store_projector_position needs a store, "
		    "a name of 1..255 bytes and an out pointer");
	*position = 0;
	MDB_txn *txn;
	int rc = sc_store_read_begin(store, &txn, err);
	if (rc)
		return rc;
	uint8_t kb[PROJECTOR_KEY_MAX];
	MDB_val k = {projector_key(kb, name), kb}, v;
	rc = mdb_get(txn, store->dbi_meta, &k, &v);
	if (rc == 0 && v.mv_size == 8)
		*position = sc_be64_get(v.mv_data);
	else if (rc == 0)
		rc = sc_error_set(err, SC_ECORRUPT,
				  "the offset of projector %s is %zu bytes, "
				  "expected 8; the store is damaged",
				  name, v.mv_size);
	else if (rc == MDB_NOTFOUND)
		rc = 0;
	else
		rc = sc_store_lmdb_error(err, rc, "reading a projector offset");
	sc_store_read_end(store, txn);
	return rc;
}
