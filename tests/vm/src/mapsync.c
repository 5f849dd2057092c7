/*
 * mapsync PATH [BYTES]
 *
 * Maps PATH (created or extended to BYTES, default 2 MiB) with MAP_SHARED_VALIDATE | MAP_SYNC,
 * the mapping a DAX persistence log uses, writes a pattern through it, unmaps, and reads the
 * file back with pread to check that the stores reached the file.
 * Exit status: 0 mapped and verified; 1 the kernel refused MAP_SYNC (as it must on a file system
 * without DAX, e.g. tmpfs); 2 any other failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

static unsigned char pattern(size_t i) { return (unsigned char)((i * 131u + 7u) ^ (i >> 12)); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: mapsync PATH [BYTES]\n");
        return 2;
    }
    const char *path = argv[1];
    size_t len = argc > 2 ? strtoull(argv[2], NULL, 0) : (size_t)2 << 20;
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
        fprintf(stderr, "mapsync: %s: %s\n", path, strerror(errno));
        return 2;
    }
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        printf("mapsync: MAP_SYNC mapping of %s refused: %s\n", path, strerror(e));
        return e == EOPNOTSUPP || e == EINVAL ? 1 : 2;
    }
    for (size_t i = 0; i < len; i++) m[i] = pattern(i);
    if (munmap(m, len) != 0) {
        perror("mapsync: munmap");
        return 2;
    }
    unsigned char *back = malloc(len);
    if (back == NULL || pread(fd, back, len, 0) != (ssize_t)len) {
        perror("mapsync: pread");
        return 2;
    }
    for (size_t i = 0; i < len; i++) {
        if (back[i] != pattern(i)) {
            printf("mapsync: %s: byte %zu reads %u, wrote %u\n", path, i, back[i], pattern(i));
            return 2;
        }
    }
    printf("mapsync: MAP_SYNC mapping of %s OK, %zu bytes written through it and read back\n", path, len);
    free(back);
    close(fd);
    return 0;
}
