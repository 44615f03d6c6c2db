/* W1 child: writes N lines of 64 bytes (63 + '\n') to stdout as fast as it
 * can, in 64 KiB writes, so the child is never the bottleneck. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    enum { LINE = 64, PER = 1024 };
    static char buf[LINE * PER];
    for (int i = 0; i < PER; i++) {
        char *l = buf + i * LINE;
        memset(l, 'x', LINE - 1);
        memcpy(l, "line ", 5);
        l[LINE - 1] = '\n';
    }
    long left = n;
    while (left > 0) {
        long k = left < PER ? left : PER;
        size_t len = (size_t)k * LINE, off = 0;
        while (off < len) {
            ssize_t w = write(1, buf + off, len - off);
            if (w < 0) { if (errno == EINTR) continue; return 1; }
            off += (size_t)w;
        }
        left -= k;
    }
    return 0;
}
