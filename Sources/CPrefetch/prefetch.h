#ifndef TESSERA_PREFETCH_H
#define TESSERA_PREFETCH_H

/* Asks for the cache line holding `address` to be brought into L2 ahead of its use. A hint:
   it never faults, whatever the address. (Swift cannot call the builtin itself.) */
static inline __attribute__((always_inline)) void tessera_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 2);
}

#endif
