/*
 * tokenizer.c: Qwen2/Qwen3 byte-level BPE read from a Hugging Face tokenizer.json.
 *
 * What it does (the order of Hugging Face tokenizers' own pipeline):
 *  1. added tokens (special or not) are found first in the raw text by leftmost-longest match; they
 *     are never normalized or split (lstrip/rstrip are honoured, single_word is not supported);
 *  2. every other span is NFC-normalized (utf8proc) when the file's normalizer says so (only the
 *     runs of characters from U+0300 up, with the character before each: see encode_span);
 *  3. the span is cut into pre-tokens by the Split regex of the file's pre_tokenizer (the Qwen2
 *     pattern when the file has none; GPT-2's for a lone ByteLevel with use_regex), run by PCRE2 in
 *     UTF+UCP mode, JIT-compiled when the platform allows; text between matches is a piece too
 *     ("Isolated" behaviour);
 *  4. each pre-token's bytes become initial symbols through the GPT-2 byte-to-unicode table (a
 *     byte's symbol is the vocabulary id of its one-character string, looked up once at load);
 *  5. BPE merges the adjacent pair of lowest rank first (leftmost among equals) with a binary heap
 *     over a linked list of symbols, exactly like tokenizers' `Word::merge_all`: O(n log n). A long
 *     text keeps a per-call cache of pre-token -> ids (no shared mutable state, no locks).
 * Decoding reverses the byte map per token (precomputed at load); vg_detok streams whole UTF-8
 * characters only and replaces each maximal invalid subpart by U+FFFD (like from_utf8_lossy).
 *
 * Tables: a string pool holds every token string; the vocabulary and the merges are open-addressing
 * hash tables (strings -> id, (left id, right id) -> (rank, merged id)); per id, the decoded bytes.
 * Ids may be sparse: the id space is the largest id + 1 and holes decode to an error.
 *
 * Invariants: after vg_tokenizer_load() the tokenizer is immutable; every offset in a table lies in
 * the pool; every id in a table is < n_ids. Threads: load/free on one thread; encode, lookups and
 * token_bytes from any number of threads at once (each encode owns its scratch and PCRE2 match
 * data). A vg_detok belongs to one thread at a time.
 */
#include "model.h"

#include "common.h"
#include "internal.h"

#include <cjson/cJSON.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_FILE  ((size_t)512 << 20) /* tokenizer.json larger than this is refused */
#define TOK_MAX_ID    (1 << 22)           /* ids above this are refused (Qwen: 151668) */
#define TOK_MAX_TOKEN (1u << 16)          /* bytes in one token string */

/* Qwen2's pre-tokenizer (transformers models/qwen2/tokenization_qwen2.py) and GPT-2's. */
static const char QWEN2_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                                    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                                    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum { F_PRESENT = 1, F_ADDED = 2, F_SPECIAL = 4 };

typedef struct vocab_slot {
    uint32_t off, len; /* the token string in the pool */
    int32_t id;        /* -1: empty slot */
} vocab_slot;

typedef struct merge_slot {
    uint64_t key; /* (left << 32) | right; UINT64_MAX: empty */
    uint32_t rank;
    int32_t id;
} merge_slot;

typedef struct added_tok {
    uint32_t off, len;
    int32_t id;
    bool special, lstrip, rstrip;
} added_tok;

struct vg_tokenizer {
    char *pool;
    size_t pool_len, pool_cap;

    size_t n_ids;      /* largest id + 1 */
    size_t ids_cap;    /* allocated entries of raw_off, raw_len, flags */
    uint32_t *raw_off; /* [n_ids] decoded bytes of each id, in the pool */
    uint32_t *raw_len;
    uint8_t *flags; /* [n_ids] F_* */
    size_t max_token_bytes;

    vocab_slot *vocab; /* [vocab_cap], power of two */
    size_t vocab_cap, n_vocab;

    merge_slot *merges; /* [merge_cap], power of two */
    size_t merge_cap, n_merges;

    added_tok *added; /* [n_added] */
    size_t n_added;
    uint32_t *by_first; /* added-token indexes grouped by first byte, longest first */
    uint32_t first_start[257];

    int32_t byte_id[256];         /* vocabulary id of each byte's one-character symbol, or -1 */
    uint8_t byte_utf8[256][2];    /* the byte-to-unicode map, as UTF-8 */
    uint8_t byte_utf8_len[256];   /* 1 or 2 */
    int16_t unicode_to_byte[512]; /* inverse of the map for code points < 512, or -1 */

    int nfc; /* 0 none, 1 NFC, 2 NFKC */
    pcre2_code *re;
    int re_jit;
};

/* ---------------------------------------------------------------------------------------------------
 * Byte map and small helpers.
 */
static void build_byte_map(vg_tokenizer *t)
{
    int n = 0;
    for (int i = 0; i < 512; i++)
        t->unicode_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int cp;
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
            cp = b;
        else
            cp = 256 + n++;
        t->unicode_to_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->byte_utf8[b][0] = (uint8_t)cp;
            t->byte_utf8_len[b] = 1;
        } else {
            t->byte_utf8[b][0] = (uint8_t)(0xC0 | (cp >> 6));
            t->byte_utf8[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
            t->byte_utf8_len[b] = 2;
        }
    }
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

/* Length of the valid UTF-8 prefix of s[0..n) (RFC 3629: no overlongs, surrogates or > U+10FFFF).
 * Returns n when the whole string is valid. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (n - i - 1 < need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += need + 1;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------------
 * Pool and tables (load time only).
 */
static int pool_add(vg_tokenizer *t, const char *s, size_t n, uint32_t *off)
{
    if (n > TOK_MAX_TOKEN)
        return VG_ELIMIT;
    if (t->pool_len + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
        while (cap < t->pool_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return VG_ELIMIT;
        char *p = realloc(t->pool, cap);
        if (!p)
            return VG_ENOMEM;
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = 0;
    *off = (uint32_t)t->pool_len;
    t->pool_len += n + 1;
    return 0;
}

static vocab_slot *vocab_find_slot(const vg_tokenizer *t, const char *s, size_t n)
{
    size_t mask = t->vocab_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        vocab_slot *v = &t->vocab[i];
        if (v->id < 0 || (v->len == n && memcmp(t->pool + v->off, s, n) == 0))
            return v;
    }
}

static int32_t vocab_get(const vg_tokenizer *t, const char *s, size_t n)
{
    if (!t->vocab_cap)
        return -1;
    return vocab_find_slot(t, s, n)->id;
}

static const merge_slot *merge_get(const vg_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->merge_cap)
        return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        const merge_slot *m = &t->merges[i];
        if (m->key == key)
            return m;
        if (m->key == UINT64_MAX)
            return NULL;
    }
}

/* Decodes a byte-level token string into raw bytes in out (capacity >= n). A string holding a
 * character outside the byte map decodes to its own UTF-8 bytes, as tokenizers' ByteLevel decoder
 * does. Returns the byte count. */
static size_t byte_level_decode(const vg_tokenizer *t, const char *s, size_t n, char *out)
{
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int cp = -1;
        if (c < 0x80) {
            cp = c;
            i += 1;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < n) {
            cp = ((c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F);
            i += 2;
        } else
            goto raw;
        if (cp >= 512 || t->unicode_to_byte[cp] < 0)
            goto raw;
        out[o++] = (char)t->unicode_to_byte[cp];
    }
    return o;
raw:
    memcpy(out, s, n);
    return n;
}

/* ---------------------------------------------------------------------------------------------------
 * Loading.
 */
static const char *json_type_name(const cJSON *j)
{
    if (!j)
        return "missing";
    if (cJSON_IsNull(j))
        return "null";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsObject(j))
        return "an object";
    return "a boolean";
}

static int json_id(const cJSON *j, int32_t *id)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    if (!(d >= 0 && d < TOK_MAX_ID) || floor(d) != d)
        return -1;
    *id = (int32_t)d;
    return 0;
}

static int load_normalizer(vg_tokenizer *t, const cJSON *root, const char *path, char *err,
                           size_t errlen)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (!n) {
        t->nfc = 1; /* Qwen's slow tokenizer normalizes to NFC; keep that for files without one */
        return 0;
    }
    if (cJSON_IsNull(n))
        return 0;
    const cJSON *list = n;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    int single = 1;
    if (cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0) {
        list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return vg_fail(err, errlen, VG_EFORMAT, "%s: normalizer Sequence without a list", path);
        single = 0;
    }
    const cJSON *it = single ? n : list->child;
    for (; it; it = single ? NULL : it->next) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type");
        if (!cJSON_IsString(ty))
            return vg_fail(err, errlen, VG_EFORMAT, "%s: normalizer without a type", path);
        if (strcmp(ty->valuestring, "NFC") == 0)
            t->nfc = 1;
        else if (strcmp(ty->valuestring, "NFKC") == 0)
            t->nfc = 2;
        else
            return vg_fail(err, errlen, VG_ENOTSUP,
                           "%s: normalizer '%s' is not supported (NFC and NFKC are)", path,
                           ty->valuestring);
    }
    return 0;
}

static int compile_regex(vg_tokenizer *t, const char *pattern, uint32_t extra, const char *path,
                         char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | extra,
                          &ec, &eo, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: pre-tokenizer pattern does not compile at offset %zu: %s", path,
                       (size_t)eo, (const char *)msg);
    }
    t->re_jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

static int load_pre_tokenizer(vg_tokenizer *t, const cJSON *root, const char *path, char *err,
                              size_t errlen)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!p || cJSON_IsNull(p))
        return compile_regex(t, QWEN2_PATTERN, 0, path, err, errlen);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    const cJSON *list = NULL;
    int single = 1;
    if (cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0) {
        list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return vg_fail(err, errlen, VG_EFORMAT, "%s: pre_tokenizer Sequence without a list",
                           path);
        single = 0;
    }
    const char *pattern = NULL;
    uint32_t extra = 0;
    int byte_level_regex = 0;
    for (const cJSON *it = single ? p : list->child; it; it = single ? NULL : it->next) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type");
        if (!cJSON_IsString(ty))
            return vg_fail(err, errlen, VG_EFORMAT, "%s: pre_tokenizer without a type", path);
        if (strcmp(ty->valuestring, "Split") == 0) {
            if (pattern)
                return vg_fail(err, errlen, VG_ENOTSUP,
                               "%s: more than one Split pre-tokenizer is not supported", path);
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(it, "pattern");
            const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
            const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
            if (cJSON_IsString(re))
                pattern = re->valuestring;
            else if (cJSON_IsString(lit)) {
                pattern = lit->valuestring;
                extra = PCRE2_LITERAL;
            } else
                return vg_fail(err, errlen, VG_EFORMAT,
                               "%s: Split pre-tokenizer without a Regex or String pattern", path);
            const cJSON *beh = cJSON_GetObjectItemCaseSensitive(it, "behavior");
            const cJSON *inv = cJSON_GetObjectItemCaseSensitive(it, "invert");
            if ((beh && !(cJSON_IsString(beh) && strcmp(beh->valuestring, "Isolated") == 0)) ||
                cJSON_IsTrue(inv))
                return vg_fail(err, errlen, VG_ENOTSUP,
                               "%s: only the Isolated, non-inverted Split pre-tokenizer is "
                               "supported",
                               path);
        } else if (strcmp(ty->valuestring, "ByteLevel") == 0) {
            const cJSON *ur = cJSON_GetObjectItemCaseSensitive(it, "use_regex");
            const cJSON *aps = cJSON_GetObjectItemCaseSensitive(it, "add_prefix_space");
            if (cJSON_IsTrue(aps))
                return vg_fail(err, errlen, VG_ENOTSUP,
                               "%s: ByteLevel add_prefix_space is not supported", path);
            if (!ur || cJSON_IsTrue(ur))
                byte_level_regex = 1;
        } else
            return vg_fail(err, errlen, VG_ENOTSUP, "%s: pre-tokenizer '%s' is not supported", path,
                           ty->valuestring);
    }
    if (pattern && byte_level_regex)
        return vg_fail(err, errlen, VG_ENOTSUP,
                       "%s: a Split pre-tokenizer followed by a regex ByteLevel is not supported",
                       path);
    if (!pattern)
        pattern = byte_level_regex ? GPT2_PATTERN : QWEN2_PATTERN;
    return compile_regex(t, pattern, extra, path, err, errlen);
}

static int grow_ids(vg_tokenizer *t, int32_t id)
{
    if ((size_t)id < t->n_ids)
        return 0;
    size_t n = (size_t)id + 1, cap = pow2_at_least(n);
    if (n <= t->ids_cap) {
        t->n_ids = n;
        return 0;
    }
    uint32_t *ro = realloc(t->raw_off, cap * sizeof *ro);
    if (!ro)
        return VG_ENOMEM;
    t->raw_off = ro;
    uint32_t *rl = realloc(t->raw_len, cap * sizeof *rl);
    if (!rl)
        return VG_ENOMEM;
    t->raw_len = rl;
    uint8_t *fl = realloc(t->flags, cap);
    if (!fl)
        return VG_ENOMEM;
    t->flags = fl;
    memset(t->flags + t->ids_cap, 0, cap - t->ids_cap);
    t->ids_cap = cap;
    t->n_ids = n; /* the largest id + 1; the arrays may be larger */
    return 0;
}

/* Records the decoded bytes of id (raw or byte-level decoded) in the pool. */
static int set_id_bytes(vg_tokenizer *t, int32_t id, const char *s, size_t n, int byte_level,
                        char *scratch)
{
    size_t m = n;
    if (byte_level) {
        m = byte_level_decode(t, s, n, scratch);
        s = scratch;
    }
    uint32_t off;
    int rc = pool_add(t, s, m, &off);
    if (rc)
        return rc;
    t->raw_off[id] = off;
    t->raw_len[id] = (uint32_t)m;
    if (m > t->max_token_bytes)
        t->max_token_bytes = m;
    return 0;
}

static int load_vocab(vg_tokenizer *t, const cJSON *vocab, const char *path, char *err,
                      size_t errlen)
{
    size_t n = (size_t)cJSON_GetArraySize(vocab);
    t->vocab_cap = pow2_at_least(n * 2 + 1);
    t->vocab = malloc(t->vocab_cap * sizeof *t->vocab);
    char *scratch = malloc(TOK_MAX_TOKEN);
    if (!t->vocab || !scratch) {
        free(scratch);
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory for the vocabulary", path);
    }
    for (size_t i = 0; i < t->vocab_cap; i++)
        t->vocab[i].id = -1;
    int rc = 0;
    for (const cJSON *it = vocab->child; it; it = it->next) {
        int32_t id;
        if (!it->string || json_id(it, &id) != 0) {
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: model.vocab entry '%.40s' is not an id in 0..%d", path,
                         it->string ? it->string : "?", TOK_MAX_ID - 1);
            break;
        }
        size_t len = strlen(it->string);
        if (len > TOK_MAX_TOKEN) {
            rc = vg_fail(err, errlen, VG_ELIMIT, "%s: model.vocab token %d is longer than %u bytes",
                         path, (int)id, TOK_MAX_TOKEN);
            break;
        }
        vocab_slot *s = vocab_find_slot(t, it->string, len);
        if (s->id >= 0) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: model.vocab lists '%.40s' twice", path,
                         it->string);
            break;
        }
        if ((rc = grow_ids(t, id)) != 0)
            break;
        if (t->flags[id] & F_PRESENT) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: model.vocab gives id %d to two tokens", path,
                         (int)id);
            break;
        }
        if ((rc = pool_add(t, it->string, len, &s->off)) != 0 ||
            (rc = set_id_bytes(t, id, it->string, len, 1, scratch)) != 0)
            break;
        s->len = (uint32_t)len;
        s->id = id;
        t->flags[id] |= F_PRESENT;
        t->n_vocab++;
    }
    free(scratch);
    if (rc == VG_ENOMEM || rc == VG_ELIMIT)
        return vg_fail(err, errlen, rc, "%s: model.vocab: %s", path, vg_strerror(rc));
    return rc;
}

static int add_merge(vg_tokenizer *t, const char *a, size_t na, const char *b, size_t nb,
                     size_t rank, char *buf, const char *path, char *err, size_t errlen)
{
    int32_t ia = vocab_get(t, a, na), ib = vocab_get(t, b, nb);
    if (ia < 0 || ib < 0)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: merge %zu ('%.40s' '%.40s') uses a token missing from model.vocab",
                       path, rank, a, b);
    if (na + nb > TOK_MAX_TOKEN)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: merge %zu is too long", path, rank);
    memcpy(buf, a, na);
    memcpy(buf + na, b, nb);
    int32_t im = vocab_get(t, buf, na + nb);
    if (im < 0)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: merge %zu ('%.40s' '%.40s'): the merged token is not in model.vocab",
                       path, rank, a, b);
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    size_t mask = t->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        merge_slot *m = &t->merges[i];
        if (m->key == key)
            return 0; /* a repeated pair keeps its first (lowest) rank */
        if (m->key == UINT64_MAX) {
            m->key = key;
            m->rank = (uint32_t)rank;
            m->id = im;
            t->n_merges++;
            return 0;
        }
    }
}

static int load_merges(vg_tokenizer *t, const cJSON *merges, const char *path, char *err,
                       size_t errlen)
{
    size_t n = (size_t)cJSON_GetArraySize(merges);
    if (n >= UINT32_MAX / 4)
        return vg_fail(err, errlen, VG_ELIMIT, "%s: too many merges", path);
    t->merge_cap = pow2_at_least(n * 2 + 1);
    t->merges = malloc(t->merge_cap * sizeof *t->merges);
    char *buf = malloc(2 * (size_t)TOK_MAX_TOKEN + 2);
    if (!t->merges || !buf) {
        free(buf);
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory for the merges", path);
    }
    for (size_t i = 0; i < t->merge_cap; i++)
        t->merges[i].key = UINT64_MAX;
    int rc = 0;
    size_t rank = 0;
    for (const cJSON *it = merges->child; it && rc == 0; it = it->next, rank++) {
        if (cJSON_IsString(it)) {
            /* "a b": exactly one space, as tokenizers' legacy format requires. */
            const char *s = it->valuestring, *sp = strchr(s, ' ');
            if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
                rc = vg_fail(err, errlen, VG_EFORMAT,
                             "%s: merge %zu ('%.60s') is not two tokens separated by one space",
                             path, rank, s);
            else
                rc = add_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank, buf, path, err,
                               errlen);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            const char *a = it->child->valuestring, *b = it->child->next->valuestring;
            rc = add_merge(t, a, strlen(a), b, strlen(b), rank, buf, path, err, errlen);
        } else
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: merge %zu is %s, not \"a b\" or [\"a\", \"b\"]", path, rank,
                         json_type_name(it));
    }
    free(buf);
    return rc;
}

static int load_added(vg_tokenizer *t, const cJSON *root, const char *path, char *err,
                      size_t errlen)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        return vg_fail(err, errlen, VG_EFORMAT, "%s: added_tokens is %s, not an array", path,
                       json_type_name(arr));
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        int32_t v;
        if (json_id(id, &v) != 0 || !cJSON_IsString(content) || !content->valuestring[0])
            return vg_fail(err, errlen, VG_EFORMAT,
                           "%s: added_tokens[%zu] needs an id in 0..%d and a non-empty content",
                           path, i, TOK_MAX_ID - 1);
        size_t len = strlen(content->valuestring);
        added_tok *a = &t->added[t->n_added];
        int rc;
        if ((rc = grow_ids(t, v)) != 0 ||
            (rc = pool_add(t, content->valuestring, len, &a->off)) != 0 ||
            (rc = set_id_bytes(t, v, content->valuestring, len, 0, NULL)) != 0)
            return vg_fail(err, errlen, rc, "%s: added_tokens[%zu]: %s", path, i, vg_strerror(rc));
        a->len = (uint32_t)len;
        a->id = v;
        a->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "rstrip"));
        t->flags[v] |= F_PRESENT | F_ADDED | (a->special ? F_SPECIAL : 0);
        t->n_added++;
    }
    /* Group by first byte, longest first, so a scan tries the longest candidate first. */
    t->by_first = malloc((t->n_added ? t->n_added : 1) * sizeof *t->by_first);
    if (!t->by_first)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    uint32_t count[257] = {0};
    for (size_t k = 0; k < t->n_added; k++)
        count[(unsigned char)t->pool[t->added[k].off] + 1]++;
    for (int b = 0; b < 256; b++)
        count[b + 1] += count[b];
    memcpy(t->first_start, count, sizeof count);
    uint32_t fill[256];
    memcpy(fill, count, sizeof fill);
    for (size_t k = 0; k < t->n_added; k++)
        t->by_first[fill[(unsigned char)t->pool[t->added[k].off]]++] = (uint32_t)k;
    for (int b = 0; b < 256; b++) {
        /* insertion sort: groups are tiny */
        for (uint32_t x = t->first_start[b] + 1; x < t->first_start[b + 1]; x++) {
            uint32_t v = t->by_first[x], y = x;
            while (y > t->first_start[b] && t->added[t->by_first[y - 1]].len < t->added[v].len) {
                t->by_first[y] = t->by_first[y - 1];
                y--;
            }
            t->by_first[y] = v;
        }
    }
    return 0;
}

/* Builds a tokenizer from a parsed tokenizer.json document; path names it in errors. */
static int from_root(const cJSON *root, const char *path, vg_tokenizer **out, char *err,
                     size_t errlen)
{
    int rc = 0;
    vg_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    build_byte_map(t);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(root)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: the top level is not a JSON object", path);
    } else if (!cJSON_IsObject(model)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: \"model\" is %s, not an object", path,
                     json_type_name(model));
    } else if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0)) {
        rc = vg_fail(err, errlen, VG_ENOTSUP, "%s: model type %s%s%s is not BPE", path,
                     cJSON_IsString(type) ? "'" : "",
                     cJSON_IsString(type) ? type->valuestring : json_type_name(type),
                     cJSON_IsString(type) ? "'" : "");
    } else if (!cJSON_IsObject(vocab)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: model.vocab is %s, not an object", path,
                     json_type_name(vocab));
    } else if (!cJSON_IsArray(merges)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: model.merges is %s, not an array", path,
                     json_type_name(merges));
    } else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"))) {
        rc = vg_fail(err, errlen, VG_ENOTSUP, "%s: BPE byte_fallback is not supported", path);
    }
    if (!rc)
        rc = load_vocab(t, vocab, path, err, errlen);
    if (!rc)
        rc = load_merges(t, merges, path, err, errlen);
    if (!rc)
        rc = load_added(t, root, path, err, errlen);
    if (!rc)
        rc = load_normalizer(t, root, path, err, errlen);
    if (!rc)
        rc = load_pre_tokenizer(t, root, path, err, errlen);
    if (!rc && t->n_ids == 0)
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: the vocabulary is empty", path);
    if (rc) {
        vg_tokenizer_free(t);
        return rc;
    }
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = vocab_get(t, (const char *)t->byte_utf8[b], t->byte_utf8_len[b]);
    *out = t;
    return 0;
}

int vg_tokenizer_from_cjson(const cJSON *root, const char *name, vg_tokenizer **out, char *err,
                            size_t errlen)
{
    if (!root || !name || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_tokenizer_from_cjson: NULL argument");
    return from_root(root, name, out, err, errlen);
}

int vg_tokenizer_load(const char *path, vg_tokenizer **out, char *err, size_t errlen)
{
    if (!path || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_tokenizer_load: NULL argument");
    char *data = NULL;
    size_t len = 0;
    int rc = vg_read_file(path, TOK_MAX_FILE, &data, &len, err, errlen);
    if (rc)
        return rc;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
        free(data);
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not valid JSON (error near byte %zu of %zu)",
                       path, at, len);
    }
    free(data);
    rc = from_root(root, path, out, err, errlen);
    cJSON_Delete(root);
    return rc;
}

void vg_tokenizer_free(vg_tokenizer *t)
{
    if (!t)
        return;
    if (t->re)
        pcre2_code_free(t->re);
    free(t->pool);
    free(t->raw_off);
    free(t->raw_len);
    free(t->flags);
    free(t->vocab);
    free(t->merges);
    free(t->added);
    free(t->by_first);
    free(t);
}

/* ---------------------------------------------------------------------------------------------------
 * Lookups.
 */
int32_t vg_tokenizer_token_id(const vg_tokenizer *t, const char *token)
{
    if (!t || !token)
        return -1;
    size_t n = strlen(token);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->pool + t->added[i].off, token, n) == 0)
            return t->added[i].id;
    return vocab_get(t, token, n);
}

size_t vg_tokenizer_vocab_size(const vg_tokenizer *t)
{
    return t ? t->n_ids : 0;
}

size_t vg_tokenizer_max_token_bytes(const vg_tokenizer *t)
{
    return t ? t->max_token_bytes : 0;
}

int vg_tokenizer_token_bytes(const vg_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (!t || id < 0 || (size_t)id >= t->n_ids || !(t->flags[id] & F_PRESENT))
        return VG_EINVAL;
    size_t n = t->raw_len[id];
    if (n > cap || n > INT32_MAX)
        return VG_ERANGE;
    if (n)
        memcpy(buf, t->pool + t->raw_off[id], n);
    return (int)n;
}

int vg_tokenizer_is_special(const vg_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || (size_t)id >= t->n_ids)
        return 0;
    return (t->flags[id] & F_SPECIAL) != 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Encoding. Scratch of one encode call.
 */
typedef struct heap_ent {
    uint32_t rank;
    uint32_t pos;
    int32_t id; /* the merged id this entry would produce */
} heap_ent;

/* A long text repeats its words: one encode call keeps the ids of the pre-tokens it has seen (up to
 * CACHE_MAX_KEY bytes, CACHE_SLOTS / 2 of them) when the text is at least CACHE_MIN_TEXT bytes.
 * The cache is per call, so encode stays thread-safe without locks. */
#define CACHE_SLOTS    8192
#define CACHE_MAX_KEY  32
#define CACHE_MIN_TEXT 2048

typedef struct cache_ent {
    uint64_t hash;
    uint32_t key_off, ids_off;
    uint16_t key_len, n_ids; /* n_ids <= key_len <= CACHE_MAX_KEY; key_len 0: empty */
} cache_ent;

typedef struct enc {
    const vg_tokenizer *t;
    int32_t *ids; /* output */
    size_t n, cap;
    int32_t *sym; /* BPE symbols of one piece */
    int32_t *prev, *next;
    size_t sym_cap;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    pcre2_match_data *md;
    /* Pre-token cache of this call (long inputs only): key bytes and ids live in kbuf/cbuf. */
    cache_ent *cache; /* [CACHE_SLOTS] */
    size_t cache_n;
    unsigned char *kbuf;
    size_t kbuf_n;
    int32_t *cbuf;
    size_t cbuf_n;
} enc;

static int push_id(enc *e, int32_t id)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 256;
        int32_t *p = realloc(e->ids, cap * sizeof *p);
        if (!p)
            return VG_ENOMEM;
        e->ids = p;
        e->cap = cap;
    }
    e->ids[e->n++] = id;
    return 0;
}

static bool heap_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(enc *e, uint32_t rank, uint32_t pos, int32_t id)
{
    if (e->heap_n == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 64;
        heap_ent *h = realloc(e->heap, cap * sizeof *h);
        if (!h)
            return VG_ENOMEM;
        e->heap = h;
        e->heap_cap = cap;
    }
    size_t i = e->heap_n++;
    heap_ent v = {rank, pos, id};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&v, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = v;
    return 0;
}

static heap_ent heap_pop(enc *e)
{
    heap_ent top = e->heap[0], v = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!heap_less(&e->heap[c], &v))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = v;
    return top;
}

static int try_pair(enc *e, int32_t pos)
{
    int32_t r = e->next[pos];
    if (r < 0)
        return 0;
    const merge_slot *m = merge_get(e->t, e->sym[pos], e->sym[r]);
    return m ? heap_push(e, m->rank, (uint32_t)pos, m->id) : 0;
}

/* BPE over one pre-token's bytes. */
static int bpe_merge(enc *e, const unsigned char *s, size_t n)
{
    const vg_tokenizer *t = e->t;
    if (n == 1) {
        int32_t id = t->byte_id[s[0]];
        return id >= 0 ? push_id(e, id) : 0;
    }
    if (n > INT32_MAX)
        return VG_ELIMIT;
    if (n > e->sym_cap) {
        size_t cap = pow2_at_least(n);
        int32_t *a = realloc(e->sym, cap * sizeof *a);
        if (!a)
            return VG_ENOMEM;
        e->sym = a;
        a = realloc(e->prev, cap * sizeof *a);
        if (!a)
            return VG_ENOMEM;
        e->prev = a;
        a = realloc(e->next, cap * sizeof *a);
        if (!a)
            return VG_ENOMEM;
        e->next = a;
        e->sym_cap = cap;
    }
    /* Symbols whose byte has no vocabulary entry are dropped (tokenizers does the same when the
     * model has no unk_token). */
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id < 0)
            continue;
        e->sym[m] = id;
        e->prev[m] = m - 1;
        e->next[m] = m + 1;
        m++;
    }
    if (m == 0)
        return 0;
    e->next[m - 1] = -1;
    e->heap_n = 0;
    int rc;
    for (int32_t i = 0; i + 1 < m; i++)
        if ((rc = try_pair(e, i)) != 0)
            return rc;
    while (e->heap_n) {
        heap_ent top = heap_pop(e);
        int32_t pos = (int32_t)top.pos;
        if (e->sym[pos] < 0)
            continue; /* merged into its left neighbour */
        int32_t r = e->next[pos];
        if (r < 0)
            continue;
        const merge_slot *mg = merge_get(t, e->sym[pos], e->sym[r]);
        if (!mg || mg->id != top.id)
            continue; /* stale: a neighbour changed since the entry was pushed */
        e->sym[pos] = mg->id;
        e->sym[r] = -1;
        e->next[pos] = e->next[r];
        if (e->next[r] >= 0)
            e->prev[e->next[r]] = pos;
        if (e->prev[pos] >= 0 && (rc = try_pair(e, e->prev[pos])) != 0)
            return rc;
        if ((rc = try_pair(e, pos)) != 0)
            return rc;
    }
    for (int32_t i = 0; i >= 0; i = e->next[i])
        if ((rc = push_id(e, e->sym[i])) != 0)
            return rc;
    return 0;
}

/* BPE through the call's cache. */
static int bpe(enc *e, const unsigned char *s, size_t n)
{
    if (!e->cache || n < 2 || n > CACHE_MAX_KEY)
        return bpe_merge(e, s, n);
    uint64_t h = hash_bytes((const char *)s, n);
    size_t mask = CACHE_SLOTS - 1, i = h & mask;
    for (; e->cache[i].key_len; i = (i + 1) & mask) {
        const cache_ent *c = &e->cache[i];
        if (c->hash == h && c->key_len == n && memcmp(e->kbuf + c->key_off, s, n) == 0) {
            for (size_t k = 0; k < c->n_ids; k++) {
                int rc = push_id(e, e->cbuf[c->ids_off + k]);
                if (rc)
                    return rc;
            }
            return 0;
        }
    }
    size_t first = e->n;
    int rc = bpe_merge(e, s, n);
    if (rc || e->cache_n >= CACHE_SLOTS / 2)
        return rc;
    /* Key and ids buffers hold at most CACHE_SLOTS / 2 entries of CACHE_MAX_KEY each. */
    size_t m = e->n - first;
    cache_ent *c = &e->cache[i];
    c->hash = h;
    c->key_off = (uint32_t)e->kbuf_n;
    c->key_len = (uint16_t)n;
    c->ids_off = (uint32_t)e->cbuf_n;
    c->n_ids = (uint16_t)m;
    memcpy(e->kbuf + e->kbuf_n, s, n);
    e->kbuf_n += n;
    if (m)
        memcpy(e->cbuf + e->cbuf_n, e->ids + first, m * sizeof *e->cbuf);
    e->cbuf_n += m;
    e->cache_n++;
    return 0;
}

/* Pre-tokenizes an already normalized span and runs BPE on each piece. */
static int encode_normalized(enc *e, const char *s, size_t n)
{
    const vg_tokenizer *t = e->t;
    size_t pos = 0, gap = 0;
    int rc;
    while (pos < n) {
        int r = t->re_jit
                    ? pcre2_jit_match(t->re, (PCRE2_SPTR)s, n, pos, 0, e->md, NULL)
                    : pcre2_match(t->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH)
            break;
        if (r < 0)
            return r == PCRE2_ERROR_NOMEMORY ? VG_ENOMEM : VG_ELIMIT;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > n || me > n || me < ms || ms < pos)
            return VG_ELIMIT;
        if (me == ms) {
            /* An empty match cuts nothing: step over one character. */
            pos = ms + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        if (ms > gap && (rc = bpe(e, (const unsigned char *)s + gap, ms - gap)) != 0)
            return rc;
        if ((rc = bpe(e, (const unsigned char *)s + ms, me - ms)) != 0)
            return rc;
        pos = gap = me;
    }
    if (n > gap && (rc = bpe(e, (const unsigned char *)s + gap, n - gap)) != 0)
        return rc;
    return 0;
}

static int buf_append(char **buf, size_t *n, size_t *cap, const void *src, size_t len)
{
    if (len == 0)
        return 0;
    if (*n + len > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *n + len)
            c *= 2;
        char *p = realloc(*buf, c);
        if (!p)
            return VG_ENOMEM;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *n, src, len);
    *n += len;
    return 0;
}

static int normalize_into(const unsigned char *s, size_t n, int nfkc, char **buf, size_t *bn,
                          size_t *bcap)
{
    utf8proc_uint8_t *norm = NULL;
    int opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (nfkc ? UTF8PROC_COMPAT : 0);
    utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &norm, (utf8proc_option_t)opts);
    if (m < 0)
        return m == UTF8PROC_ERROR_NOMEM ? VG_ENOMEM : VG_EINVAL;
    int rc = buf_append(buf, bn, bcap, norm, (size_t)m);
    free(norm);
    return rc;
}

/* Normalizes one span (no added tokens inside) and encodes it.
 *
 * NFC leaves text below U+0300 alone: nothing there decomposes or has a non-zero combining class,
 * and nothing there composes with the character before it (every second character of a canonical
 * composition is U+0300 or above; U+0300 is CC 80 in UTF-8). So only the runs of characters from
 * U+0300 up, each with the character before it (a starter they may compose with), go through
 * utf8proc; the rest is copied. NFKC changes some of that range (U+00A0, U+00BD, ...), so there
 * only pure ASCII is skipped. */
static int encode_span(enc *e, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    int mode = e->t->nfc;
    unsigned char limit = mode == 1 ? 0xCC : 0x80;
    size_t i = 0;
    while (i < n && u[i] < limit)
        i++;
    if (n == 0 || mode == 0 || i == n)
        return encode_normalized(e, s, n);
    char *buf = NULL;
    size_t bn = 0, bcap = 0, copied = 0;
    int rc = 0;
    if (mode == 2) {
        rc = normalize_into(u, n, 1, &buf, &bn, &bcap);
        copied = n;
    }
    while (rc == 0 && i < n) {
        if (u[i] < 0xCC) {
            i++;
            continue;
        }
        size_t rs = i, re = i;
        if (rs > copied) {
            rs--;
            while (rs > copied && (u[rs] & 0xC0) == 0x80)
                rs--;
        }
        while (re < n && u[re] >= 0xCC) {
            re++;
            while (re < n && (u[re] & 0xC0) == 0x80)
                re++;
        }
        rc = buf_append(&buf, &bn, &bcap, s + copied, rs - copied);
        if (rc == 0)
            rc = normalize_into(u + rs, re - rs, 0, &buf, &bn, &bcap);
        copied = i = re;
    }
    if (rc == 0 && copied < n)
        rc = buf_append(&buf, &bn, &bcap, s + copied, n - copied);
    if (rc == 0)
        rc = encode_normalized(e, buf, bn);
    free(buf);
    return rc;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int vg_tokenizer_encode(const vg_tokenizer *t, const char *text, size_t len, int parse_special,
                        int32_t **ids, size_t *n_ids)
{
    if (!t || (!text && len) || !ids || !n_ids)
        return VG_EINVAL;
    if (utf8_valid_prefix((const unsigned char *)text, len) != len)
        return VG_EINVAL;
    enc e = {.t = t};
    e.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!e.md)
        return VG_ENOMEM;
    if (len >= CACHE_MIN_TEXT) {
        /* Without memory for it the call just runs uncached. */
        e.cache = calloc(CACHE_SLOTS, sizeof *e.cache);
        e.kbuf = malloc(CACHE_SLOTS / 2 * CACHE_MAX_KEY);
        e.cbuf = malloc(CACHE_SLOTS / 2 * CACHE_MAX_KEY * sizeof *e.cbuf);
        if (!e.cache || !e.kbuf || !e.cbuf) {
            free(e.cache);
            e.cache = NULL;
        }
    }
    int rc = 0;
    size_t seg = 0, pos = 0;
    while (pos < len && rc == 0) {
        unsigned char c = (unsigned char)text[pos];
        const added_tok *hit = NULL;
        if (parse_special) {
            for (uint32_t k = t->first_start[c]; k < t->first_start[c + 1]; k++) {
                const added_tok *a = &t->added[t->by_first[k]];
                if (a->len <= len - pos && memcmp(t->pool + a->off, text + pos, a->len) == 0) {
                    hit = a;
                    break;
                }
            }
        }
        if (!hit) {
            pos++;
            continue;
        }
        size_t start = pos, end = pos + hit->len;
        if (hit->lstrip)
            while (start > seg && is_ws((unsigned char)text[start - 1]))
                start--;
        if (hit->rstrip)
            while (end < len && is_ws((unsigned char)text[end]))
                end++;
        rc = encode_span(&e, text + seg, start - seg);
        if (rc == 0)
            rc = push_id(&e, hit->id);
        pos = seg = end;
    }
    if (rc == 0)
        rc = encode_span(&e, text + seg, len - seg);
    pcre2_match_data_free(e.md);
    free(e.cache);
    free(e.kbuf);
    free(e.cbuf);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    if (rc) {
        free(e.ids);
        return rc;
    }
    if (!e.ids && !(e.ids = malloc(sizeof *e.ids))) /* a valid pointer even for no ids */
        return VG_ENOMEM;
    *ids = e.ids;
    *n_ids = e.n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Streaming detokenizer.
 */
struct vg_detok {
    const vg_tokenizer *tok;
    int skip_special;
    unsigned char *pend; /* bytes not yet emitted */
    size_t n, cap;
};

int vg_detok_create(const vg_tokenizer *tok, int skip_special, vg_detok **out)
{
    if (!tok || !out)
        return VG_EINVAL;
    vg_detok *d = calloc(1, sizeof *d);
    if (!d)
        return VG_ENOMEM;
    d->tok = tok;
    d->skip_special = skip_special;
    *out = d;
    return 0;
}

void vg_detok_free(vg_detok *d)
{
    if (!d)
        return;
    free(d->pend);
    free(d);
}

/* Emits complete characters (and U+FFFD for each maximal invalid subpart) from the pending bytes
 * into out while they fit. At the end of a stream (final) an incomplete tail is invalid too.
 * Returns 1 when everything pending was emitted, 0 when something stays. */
static int detok_emit(vg_detok *d, char *out, size_t cap, size_t *len, int final)
{
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *s = d->pend;
    size_t n = d->n, i = 0, o = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need = 0, have = 0;
        unsigned lo = 0x80, hi = 0xBF;
        int invalid = 0;
        if (c < 0x80)
            need = 0;
        else if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else
            invalid = 1;
        if (!invalid) {
            while (have < need && i + 1 + have < n) {
                unsigned b = s[i + 1 + have];
                if (have == 0 ? (b < lo || b > hi) : ((b & 0xC0) != 0x80))
                    break;
                have++;
            }
            if (have < need) {
                if (i + 1 + have == n && !final)
                    break; /* may still complete with the next token */
                invalid = 1;
            }
        }
        size_t in = invalid ? (need ? 1 + have : 1) : 1 + need;
        size_t w = invalid ? 3 : in;
        if (o + w + 1 > cap)
            break;
        memcpy(out + o, invalid ? repl : (const char *)s + i, w);
        o += w;
        i += in;
    }
    if (i > 0 && i < n)
        memmove(d->pend, d->pend + i, n - i);
    d->n = n - i;
    out[o] = 0;
    *len = o;
    return d->n == 0;
}

int vg_detok_push(vg_detok *d, int32_t id, char *out, size_t cap, size_t *len)
{
    if (!d || !out || cap == 0 || !len)
        return VG_EINVAL;
    const vg_tokenizer *t = d->tok;
    if (id < 0)
        return VG_EINVAL;
    /* Ids the vocabulary does not define (the padding rows of a model's embedding, which a model
     * can still sample) decode to no text, as in Hugging Face's decoder. */
    if ((size_t)id >= t->n_ids || !(t->flags[id] & F_PRESENT)) {
        out[0] = '\0';
        *len = 0;
        return 0;
    }
    if (!(d->skip_special && (t->flags[id] & F_SPECIAL))) {
        size_t m = t->raw_len[id];
        if (d->n + m > d->cap) {
            size_t nc = pow2_at_least(d->n + m);
            unsigned char *p = realloc(d->pend, nc);
            if (!p)
                return VG_ENOMEM;
            d->pend = p;
            d->cap = nc;
        }
        if (m)
            memcpy(d->pend + d->n, t->pool + t->raw_off[id], m);
        d->n += m;
    }
    detok_emit(d, out, cap, len, 0);
    return 0;
}

int vg_detok_flush(vg_detok *d, char *out, size_t cap, size_t *len)
{
    if (!d || !out || cap == 0 || !len)
        return VG_EINVAL;
    return detok_emit(d, out, cap, len, 1) ? 0 : VG_EMSGSIZE;
}
