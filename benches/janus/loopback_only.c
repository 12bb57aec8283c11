/*
 * LD_PRELOAD shim for the Janus side of benches/janus/compare.sh.
 *
 * Janus (libnice) leaves out interfaces flagged IFF_LOOPBACK when it gathers
 * ICE candidates, so on a machine where everything must stay on 127.0.0.1 it
 * would offer no usable candidate. This getifaddrs() wrapper
 *   - clears IFF_LOOPBACK on `lo`, so 127.0.0.1 is gathered like any address;
 *   - hides every other interface (address removed, IFF_UP cleared), so the
 *     preloaded process can never gather, announce or bind a non-loopback
 *     address, whatever its configuration says.
 * The list is edited in place: glibc's freeifaddrs() frees one block, which
 * stays valid. Build: cc -shared -fPIC -O2 -o loopback_only.so loopback_only.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>
#include <string.h>

typedef int (*getifaddrs_fn)(struct ifaddrs **);

int getifaddrs(struct ifaddrs **ifap)
{
    getifaddrs_fn real = (getifaddrs_fn)dlsym(RTLD_NEXT, "getifaddrs");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int rc = real(ifap);
    if (rc != 0 || ifap == NULL)
        return rc;
    for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next) {
        if (ifa->ifa_name != NULL && strcmp(ifa->ifa_name, "lo") == 0) {
            ifa->ifa_flags &= ~(unsigned int)IFF_LOOPBACK;
        } else {
            ifa->ifa_flags &= ~(unsigned int)(IFF_UP | IFF_RUNNING);
            ifa->ifa_addr = NULL;
            ifa->ifa_netmask = NULL;
            ifa->ifa_broadaddr = NULL; /* also ifa_dstaddr (a union) */
        }
    }
    return rc;
}
