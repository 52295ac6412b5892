/*
 * arena.c: a bump allocator. Memory comes in blocks from malloc; an allocation that does not fit
 * the current block opens a new one at least as large as the request. Reset keeps the first block.
 * Invariant: blocks form a singly linked list, newest first; `used` counts bytes handed out.
 * One thread at a time.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    size_t cap;
    size_t off;
    _Alignas(16) unsigned char data[];
};

struct vg_arena {
    struct block *head;
    size_t block_size;
    size_t used;
    size_t reserved;
};

vg_arena *vg_arena_create(size_t block_size)
{
    vg_arena *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->block_size = block_size ? block_size : 64 * 1024;
    return a;
}

static void free_blocks(struct block *b)
{
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
}

void vg_arena_destroy(vg_arena *a)
{
    if (!a)
        return;
    free_blocks(a->head);
    free(a);
}

static struct block *new_block(vg_arena *a, size_t need)
{
    size_t cap = a->block_size > need ? a->block_size : need;
    size_t total;
    if (vg_add_size(sizeof(struct block), cap, &total))
        return NULL;
    struct block *b = malloc(total);
    if (!b)
        return NULL;
    b->cap = cap;
    b->off = 0;
    b->next = a->head;
    a->head = b;
    a->reserved += cap;
    return b;
}

void *vg_arena_alloc(vg_arena *a, size_t size, size_t align)
{
    if (!a)
        return NULL;
    if (align == 0)
        align = 16;
    if ((align & (align - 1)) != 0 || align > 4096)
        return NULL;
    if (size == 0)
        size = 1;
    struct block *b = a->head;
    if (b) {
        uintptr_t base = (uintptr_t)b->data;
        uintptr_t p = (base + b->off + align - 1) & ~(uintptr_t)(align - 1);
        size_t off = (size_t)(p - base);
        if (off <= b->cap && size <= b->cap - off) {
            b->off = off + size;
            a->used += size;
            return (void *)p;
        }
    }
    size_t need;
    if (vg_add_size(size, align, &need))
        return NULL;
    b = new_block(a, need);
    if (!b)
        return NULL;
    uintptr_t base = (uintptr_t)b->data;
    uintptr_t p = (base + align - 1) & ~(uintptr_t)(align - 1);
    b->off = (size_t)(p - base) + size;
    a->used += size;
    return (void *)p;
}

void *vg_arena_calloc(vg_arena *a, size_t n, size_t size)
{
    size_t total;
    if (vg_mul_size(n, size, &total))
        return NULL;
    void *p = vg_arena_alloc(a, total, 0);
    if (p)
        memset(p, 0, total);
    return p;
}

char *vg_arena_strndup(vg_arena *a, const char *s, size_t len)
{
    size_t total;
    if (vg_add_size(len, 1, &total))
        return NULL;
    char *p = vg_arena_alloc(a, total, 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *vg_arena_strdup(vg_arena *a, const char *s)
{
    return vg_arena_strndup(a, s, strlen(s));
}

void vg_arena_reset(vg_arena *a)
{
    if (!a || !a->head)
        return;
    /* Keep the oldest block (the last in the list), free the rest. */
    struct block *b = a->head, *keep = NULL;
    while (b) {
        struct block *next = b->next;
        if (!next)
            keep = b;
        else
            free(b);
        b = next;
    }
    keep->off = 0;
    keep->next = NULL;
    a->head = keep;
    a->reserved = keep->cap;
    a->used = 0;
}

size_t vg_arena_used(const vg_arena *a)
{
    return a ? a->used : 0;
}

size_t vg_arena_reserved(const vg_arena *a)
{
    return a ? a->reserved : 0;
}
