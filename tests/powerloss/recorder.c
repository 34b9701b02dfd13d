/*
 * Power-loss test: an LD_PRELOAD recorder of what a process makes durable.
 *
 * Loaded into the workload (LD_PRELOAD=recorder.so), it wraps the libc
 * calls through which LMDB and the store change files and writes a trace
 * (trace.h) of every change made under one path prefix, with the data, in
 * the order the calls returned:
 *
 *   SC_PL_PREFIX  absolute path; only files and directories under it
 *   SC_PL_TRACE   the trace file to write
 *   SC_PL_ACK     the workload's acknowledgement file (outside the
 *                 prefix): each write of "ack N\n" to it becomes a PL_ACK,
 *                 of "phase NAME\n" a PL_PHASE
 *   SC_PL_IGNORE  a file name (no directory) left out, such as LMDB's
 *                 lock.mdb, which open rebuilds and no crash state needs
 *
 * Descriptors opened with O_DSYNC or O_SYNC (LMDB writes its meta pages
 * through such a second descriptor of data.mdb unless MDB_NOMETASYNC or
 * MDB_NOSYNC) mark their writes durable. A sync records which records it
 * covers before it runs, so a write from another thread that races with
 * it counts as not covered.
 *
 * Writes through a writable shared mapping (MDB_WRITEMAP) make no call at
 * all, so the recorder keeps an image of each such mapping as last
 * recorded and, at every recorded call (in particular every sync, unmap
 * and acknowledgement), records each 4096-byte page that differs from the
 * image as a write of that page, then updates the image. A page changed
 * between two looks may reach the disk at any time after, which is what
 * the builder assumes of every unsynced write.
 *
 * The recorder serializes its own bookkeeping with one mutex; the wrapped
 * calls themselves run unlocked. Everything it needs it takes with dlsym
 * on first use, and its own writes go through the real functions.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tests/powerloss/trace.h"

#define PL_PAGE	   4096
#define PL_MAX_FD  4096
#define PL_MAX_FID 256
#define PL_MAX_MAP 64

typedef struct pl_fd {
	int fid; /* -1: not a file under the prefix */
	bool dsync;
	bool ack;
} pl_fd;

typedef struct pl_file {
	dev_t dev;
	ino_t ino;
} pl_file;

typedef struct pl_map {
	char *addr;
	size_t len;
	off_t off;
	int fid;
	int fd;	     /* a descriptor of the file, for its size */
	char *image; /* contents as last recorded */
} pl_map;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bool ready;
static int trace_fd = -1;
static char prefix[4096];
static size_t prefix_len;
static char ack_path[4096];
static char ignore_name[256];
static uint64_t nrec;
static pl_fd fds[PL_MAX_FD];
static pl_file files[PL_MAX_FID];
static int nfiles;
static pl_map maps[PL_MAX_MAP];

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_msync)(void *, size_t, int);
static int (*real_sync_file_range)(int, off_t, off_t, unsigned);
static void (*real_sync)(void);
static int (*real_syncfs)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_unlink)(const char *);
static int (*real_mkdir)(const char *, mode_t);
static char *(*real_mkdtemp)(char *);
static int (*real_rmdir)(const char *);
static int (*real_link)(const char *, const char *);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);

static void die(const char *what)
{
	static const char msg[] = "powerloss recorder: fatal: ";
	ssize_t r = write(2, msg, sizeof msg - 1);
	r = write(2, what, strlen(what));
	r = write(2, "\n", 1);
	(void)r;
	abort();
}

#define LOAD(name)                                                             \
	do {                                                                   \
		*(void **)&real_##name = dlsym(RTLD_NEXT, #name);              \
		if (!real_##name)                                              \
			die("dlsym " #name);                                   \
	} while (0)

static void init_once(void)
{
	LOAD(open);
	LOAD(openat);
	LOAD(close);
	LOAD(write);
	LOAD(pwrite);
	LOAD(writev);
	LOAD(pwritev);
	LOAD(ftruncate);
	LOAD(fallocate);
	LOAD(fsync);
	LOAD(fdatasync);
	LOAD(msync);
	LOAD(sync_file_range);
	LOAD(sync);
	LOAD(syncfs);
	LOAD(rename);
	LOAD(unlink);
	LOAD(mkdir);
	LOAD(mkdtemp);
	LOAD(rmdir);
	LOAD(link);
	LOAD(mmap);
	LOAD(munmap);
	for (int i = 0; i < PL_MAX_FD; i++)
		fds[i].fid = -1;
	const char *p = getenv("SC_PL_PREFIX");
	const char *t = getenv("SC_PL_TRACE");
	const char *a = getenv("SC_PL_ACK");
	if (p && t && p[0] == '/') {
		snprintf(prefix, sizeof prefix, "%s", p);
		prefix_len = strlen(prefix);
		while (prefix_len > 1 && prefix[prefix_len - 1] == '/')
			prefix[--prefix_len] = '\0';
		snprintf(ack_path, sizeof ack_path, "%s", a ? a : "");
		const char *ig = getenv("SC_PL_IGNORE");
		snprintf(ignore_name, sizeof ignore_name, "%s", ig ? ig : "");
		trace_fd = real_open(
		    t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (trace_fd < 0)
			die("cannot create the trace file (SC_PL_TRACE)");
	}
	ready = true;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
#define INIT() pthread_once(&once, init_once)

static bool under_prefix(const char *path)
{
	if (trace_fd < 0 || !path || path[0] != '/')
		return false;
	if (strncmp(path, prefix, prefix_len) != 0 ||
	    (path[prefix_len] != '\0' && path[prefix_len] != '/'))
		return false;
	if (ignore_name[0]) {
		const char *base = strrchr(path, '/') + 1;
		if (!strcmp(base, ignore_name))
			return false;
	}
	return true;
}

static void put(const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = real_write(trace_fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("writing the trace failed");
		c += w;
		n -= (size_t)w;
	}
}

/* Append one record; call with mu held. Returns its number. */
static uint64_t emit(uint32_t type, int fid, uint64_t off, uint64_t size,
		     uint64_t aux, const void *data, size_t len)
{
	pl_rec r = {.type = type,
		    .fid = (uint32_t)fid,
		    .off = off,
		    .size = size,
		    .len = len,
		    .aux = aux};
	put(&r, sizeof r);
	if (len)
		put(data, len);
	return nrec++;
}

static void emit_path(uint32_t type, int fid, const char *a, const char *b)
{
	size_t la = strlen(a), lb = b ? strlen(b) + 1 : 0;
	char buf[8192];
	if (la + 1 + lb > sizeof buf)
		die("path too long");
	memcpy(buf, a, la + 1);
	if (b)
		memcpy(buf + la + 1, b, lb);
	emit(type, fid, 0, 0, 0, buf, b ? la + lb : la);
}

/* Record the pages of every writable mapping that changed since the
 * last look. Call with mu held. */
static void scan_maps(void)
{
	for (int i = 0; i < PL_MAX_MAP; i++) {
		pl_map *m = &maps[i];
		if (!m->addr)
			continue;
		struct stat st;
		if (fstat(m->fd, &st) != 0)
			continue;
		size_t n = m->len;
		if (st.st_size <= m->off)
			n = 0;
		else if ((uint64_t)(st.st_size - m->off) < n)
			n = (size_t)(st.st_size - m->off);
		for (size_t p = 0; p < n; p += PL_PAGE) {
			size_t k = n - p < PL_PAGE ? n - p : PL_PAGE;
			if (!memcmp(m->addr + p, m->image + p, k))
				continue;
			memcpy(m->image + p, m->addr + p, k);
			emit(PL_WRITE, m->fid, (uint64_t)m->off + p, 0, 0,
			     m->image + p, k);
		}
	}
}

static int fid_of(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -1;
	for (int i = 0; i < nfiles; i++)
		if (files[i].dev == st.st_dev && files[i].ino == st.st_ino)
			return i;
	if (nfiles == PL_MAX_FID)
		die("too many files");
	files[nfiles].dev = st.st_dev;
	files[nfiles].ino = st.st_ino;
	return nfiles++;
}

static pl_fd *tracked(int fd)
{
	if (!ready || trace_fd < 0 || fd < 0 || fd >= PL_MAX_FD)
		return NULL;
	if (fds[fd].fid < 0 && !fds[fd].ack)
		return NULL;
	return &fds[fd];
}

static void after_open(const char *path, int flags, bool existed, int fd)
{
	if (fd < 0 || fd >= PL_MAX_FD || trace_fd < 0)
		return;
	pthread_mutex_lock(&mu);
	fds[fd].fid = -1;
	fds[fd].ack = false;
	fds[fd].dsync = false;
	if (ack_path[0] && path && !strcmp(path, ack_path)) {
		fds[fd].ack = true;
	} else if (under_prefix(path)) {
		scan_maps();
		fds[fd].fid = fid_of(fd);
		fds[fd].dsync = (flags & (O_DSYNC | O_SYNC)) != 0;
		if ((flags & O_CREAT) && !existed)
			emit_path(PL_CREATE, fds[fd].fid, path, NULL);
	}
	pthread_mutex_unlock(&mu);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int do_open(const char *path, int flags, mode_t mode)
{
	INIT();
	bool existed = (flags & O_CREAT) && under_prefix(path) && exists(path);
	int fd = real_open(path, flags, mode);
	after_open(path, flags, existed, fd);
	return fd;
}

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return do_open(path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return do_open(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	INIT();
	if (path[0] == '/')
		return do_open(path, flags, mode);
	return real_openat(dirfd, path, flags, mode);
}

int creat(const char *path, mode_t mode)
{
	return do_open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int close(int fd)
{
	INIT();
	pthread_mutex_lock(&mu);
	if (fd >= 0 && fd < PL_MAX_FD) {
		fds[fd].fid = -1;
		fds[fd].ack = false;
	}
	pthread_mutex_unlock(&mu);
	return real_close(fd);
}

static void record_ack(const void *buf, size_t n)
{
	char line[64];
	size_t k = n < sizeof line - 1 ? n : sizeof line - 1;
	memcpy(line, buf, k);
	line[k] = '\0';
	unsigned long long pos;
	char phase[32];
	pthread_mutex_lock(&mu);
	scan_maps();
	if (sscanf(line, "ack %llu", &pos) == 1)
		emit(PL_ACK, 0, pos, 0, 0, NULL, 0);
	else if (sscanf(line, "phase %31s", phase) == 1)
		emit(PL_PHASE, 0, 0, 0, 0, phase, strlen(phase));
	else
		die("the ack file takes lines \"ack N\" and \"phase NAME\"");
	pthread_mutex_unlock(&mu);
}

static void record_write(pl_fd *f, uint64_t off, const struct iovec *iov,
			 int iovcnt, size_t n)
{
	pthread_mutex_lock(&mu);
	scan_maps();
	for (int i = 0; i < iovcnt && n; i++) {
		size_t k = iov[i].iov_len < n ? iov[i].iov_len : n;
		if (k)
			emit(PL_WRITE, f->fid, off, 0, f->dsync,
			     iov[i].iov_base, k);
		off += k;
		n -= k;
	}
	pthread_mutex_unlock(&mu);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	INIT();
	pl_fd *f = tracked(fd);
	if (!f)
		return real_write(fd, buf, n);
	if (f->ack) {
		ssize_t r = real_write(fd, buf, n);
		if (r > 0)
			record_ack(buf, (size_t)r);
		return r;
	}
	off_t off = lseek(fd, 0, SEEK_CUR);
	ssize_t r = real_write(fd, buf, n);
	if (r > 0) {
		struct iovec v = {(void *)buf, (size_t)r};
		record_write(f, (uint64_t)off, &v, 1, (size_t)r);
	}
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	INIT();
	ssize_t r = real_pwrite(fd, buf, n, off);
	pl_fd *f = tracked(fd);
	if (f && f->fid >= 0 && r > 0) {
		struct iovec v = {(void *)buf, (size_t)r};
		record_write(f, (uint64_t)off, &v, 1, (size_t)r);
	}
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	INIT();
	pl_fd *f = tracked(fd);
	if (!f || f->fid < 0)
		return real_writev(fd, iov, iovcnt);
	off_t off = lseek(fd, 0, SEEK_CUR);
	ssize_t r = real_writev(fd, iov, iovcnt);
	if (r > 0)
		record_write(f, (uint64_t)off, iov, iovcnt, (size_t)r);
	return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	INIT();
	ssize_t r = real_pwritev(fd, iov, iovcnt, off);
	pl_fd *f = tracked(fd);
	if (f && f->fid >= 0 && r > 0)
		record_write(f, (uint64_t)off, iov, iovcnt, (size_t)r);
	return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return pwritev(fd, iov, iovcnt, off);
}

static void record_size(int fd, off_t size)
{
	pl_fd *f = tracked(fd);
	if (!f || f->fid < 0)
		return;
	pthread_mutex_lock(&mu);
	scan_maps();
	emit(PL_TRUNC, f->fid, (uint64_t)size, 0, 0, NULL, 0);
	pthread_mutex_unlock(&mu);
}

int ftruncate(int fd, off_t size)
{
	INIT();
	int r = real_ftruncate(fd, size);
	if (r == 0)
		record_size(fd, size);
	return r;
}

int ftruncate64(int fd, off_t size)
{
	return ftruncate(fd, size);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	INIT();
	struct stat st;
	int r = real_fallocate(fd, mode, off, len);
	/* Only a size change matters to the contents the builder keeps. */
	if (r == 0 && !(mode & FALLOC_FL_KEEP_SIZE) && fstat(fd, &st) == 0)
		record_size(fd, st.st_size);
	return r;
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

/* Before a sync of fid (-1: all files): look at the maps, return the
 * number of the next record (every record below it is covered). */
static uint64_t sync_begin(void)
{
	pthread_mutex_lock(&mu);
	scan_maps();
	uint64_t n = nrec;
	pthread_mutex_unlock(&mu);
	return n;
}

static void sync_end(uint32_t type, int fid, uint64_t off, uint64_t size,
		     uint64_t covers)
{
	pthread_mutex_lock(&mu);
	emit(type, fid, off, size, covers, NULL, 0);
	pthread_mutex_unlock(&mu);
}

static int sync_fd(int fd, int (*fn)(int))
{
	INIT();
	pl_fd *f = tracked(fd);
	if (!f || f->fid < 0)
		return fn(fd);
	uint64_t covers = sync_begin();
	int r = fn(fd);
	if (r == 0)
		sync_end(PL_SYNC, f->fid, 0, 0, covers);
	return r;
}

int fsync(int fd)
{
	INIT();
	return sync_fd(fd, real_fsync);
}

int fdatasync(int fd)
{
	INIT();
	return sync_fd(fd, real_fdatasync);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned flags)
{
	/* Starts or waits for write-back but flushes neither metadata nor
	 * the disk's cache: never a durability point. */
	INIT();
	return real_sync_file_range(fd, off, n, flags);
}

void sync(void)
{
	INIT();
	uint64_t covers = trace_fd >= 0 ? sync_begin() : 0;
	real_sync();
	if (trace_fd >= 0)
		sync_end(PL_SYNCALL, 0, 0, 0, covers);
}

int syncfs(int fd)
{
	INIT();
	uint64_t covers = trace_fd >= 0 ? sync_begin() : 0;
	int r = real_syncfs(fd);
	if (r == 0 && trace_fd >= 0)
		sync_end(PL_SYNCALL, 0, 0, 0, covers);
	return r;
}

int msync(void *addr, size_t len, int flags)
{
	INIT();
	int fid = -1;
	uint64_t off = 0;
	if (trace_fd >= 0) {
		pthread_mutex_lock(&mu);
		for (int i = 0; i < PL_MAX_MAP; i++) {
			pl_map *m = &maps[i];
			char *a = addr;
			if (m->addr && a >= m->addr && a < m->addr + m->len) {
				fid = m->fid;
				off =
				    (uint64_t)m->off + (uint64_t)(a - m->addr);
			}
		}
		pthread_mutex_unlock(&mu);
	}
	if (fid < 0 || !(flags & MS_SYNC))
		return real_msync(addr, len, flags);
	uint64_t covers = sync_begin();
	int r = real_msync(addr, len, flags);
	if (r == 0)
		sync_end(PL_SYNC, fid, off, len, covers);
	return r;
}

static void *do_mmap(void *addr, size_t len, int prot, int flags, int fd,
		     off_t off)
{
	INIT();
	void *p = real_mmap(addr, len, prot, flags, fd, off);
	pl_fd *f = tracked(fd);
	if (p == MAP_FAILED || !f || f->fid < 0 || !(prot & PROT_WRITE) ||
	    !(flags & MAP_SHARED))
		return p;
	pthread_mutex_lock(&mu);
	scan_maps();
	int slot = -1;
	for (int i = 0; i < PL_MAX_MAP && slot < 0; i++)
		if (!maps[i].addr)
			slot = i;
	if (slot < 0)
		die("too many writable mappings");
	pl_map *m = &maps[slot];
	m->image = malloc(len);
	if (!m->image)
		die("out of memory for a mapping's image");
	/* The image starts as the file's contents: what is there now was
	 * recorded by the writes that put it there. */
	memset(m->image, 0, len);
	struct stat st;
	size_t n = 0;
	if (fstat(fd, &st) == 0 && st.st_size > off)
		n = (uint64_t)(st.st_size - off) < len
			? (size_t)(st.st_size - off)
			: len;
	memcpy(m->image, p, n);
	m->addr = p;
	m->len = len;
	m->off = off;
	m->fid = f->fid;
	m->fd = fd;
	pthread_mutex_unlock(&mu);
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return do_mmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return do_mmap(addr, len, prot, flags, fd, off);
}

int munmap(void *addr, size_t len)
{
	INIT();
	if (trace_fd >= 0) {
		pthread_mutex_lock(&mu);
		for (int i = 0; i < PL_MAX_MAP; i++) {
			if (maps[i].addr != addr)
				continue;
			/* Its dirty pages stay in the page cache. */
			scan_maps();
			free(maps[i].image);
			memset(&maps[i], 0, sizeof maps[i]);
		}
		pthread_mutex_unlock(&mu);
	}
	return real_munmap(addr, len);
}

int rename(const char *from, const char *to)
{
	INIT();
	int r = real_rename(from, to);
	if (r == 0 && (under_prefix(from) || under_prefix(to))) {
		pthread_mutex_lock(&mu);
		scan_maps();
		emit_path(PL_RENAME, 0, from, to);
		pthread_mutex_unlock(&mu);
	}
	return r;
}

int unlink(const char *path)
{
	INIT();
	int r = real_unlink(path);
	if (r == 0 && under_prefix(path)) {
		pthread_mutex_lock(&mu);
		scan_maps();
		emit_path(PL_UNLINK, 0, path, NULL);
		pthread_mutex_unlock(&mu);
	}
	return r;
}

int mkdir(const char *path, mode_t mode)
{
	INIT();
	int r = real_mkdir(path, mode);
	if (r == 0 && under_prefix(path)) {
		pthread_mutex_lock(&mu);
		scan_maps();
		emit_path(PL_MKDIR, 0, path, NULL);
		pthread_mutex_unlock(&mu);
	}
	return r;
}

char *mkdtemp(char *tmpl)
{
	INIT();
	char *r = real_mkdtemp(tmpl);
	if (r && under_prefix(r)) {
		pthread_mutex_lock(&mu);
		scan_maps();
		emit_path(PL_MKDIR, 0, r, NULL);
		pthread_mutex_unlock(&mu);
	}
	return r;
}

int rmdir(const char *path)
{
	INIT();
	int r = real_rmdir(path);
	if (r == 0 && under_prefix(path)) {
		pthread_mutex_lock(&mu);
		scan_maps();
		emit_path(PL_RMDIR, 0, path, NULL);
		pthread_mutex_unlock(&mu);
	}
	return r;
}

int link(const char *from, const char *to)
{
	INIT();
	int r = real_link(from, to);
	if (r == 0 && (under_prefix(from) || under_prefix(to))) {
		pthread_mutex_lock(&mu);
		scan_maps();
		emit_path(PL_LINK, 0, from, to);
		pthread_mutex_unlock(&mu);
	}
	return r;
}
