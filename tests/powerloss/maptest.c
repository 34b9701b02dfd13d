/*
 * Power-loss test: what the recorder sees of writes through a shared
 * writable mapping (the way LMDB writes with MDB_WRITEMAP), which make no
 * call it could wrap.
 *
 *   pl_maptest FILE ACKFILE
 *
 * FILE (under the recorder's prefix) is created with 4 pages; page 1 and
 * page 3 are written through a mapping and synced with msync(MS_SYNC);
 * page 2 is written after, then an acknowledgement is written, then the
 * mapping is unmapped. maptest.sh checks the trace: the first two pages
 * as writes before the sync, page 2 as a write after it, before the ack.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: pl_maptest FILE ACKFILE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
	int ack = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ack < 0 || ftruncate(fd, 4 * PAGE) != 0) {
		perror("pl_maptest");
		return 1;
	}
	char *m =
	    mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("pl_maptest: mmap");
		return 1;
	}
	memset(m + PAGE, 'a', 100);
	memset(m + 3 * PAGE, 'b', PAGE);
	if (msync(m, 4 * PAGE, MS_SYNC) != 0) {
		perror("pl_maptest: msync");
		return 1;
	}
	m[2 * PAGE + 7] = 'c';
	if (write(ack, "ack 1\n", 6) != 6) {
		perror("pl_maptest: write");
		return 1;
	}
	munmap(m, 4 * PAGE);
	close(fd);
	close(ack);
	return 0;
}
