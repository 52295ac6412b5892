/*
 * answer.c: the model's answer text -> events [{start, end, label}] in seconds.
 *
 * Two readers, tried in this order:
 *  1. JSON (inside ```json fences or the first [ / { that parses): objects with start/end-like
 * keys, objects with a time/range key, and objects keyed by time ranges ({"00:01-00:03": "a car"});
 *     wrappers such as {"events": [...]} are searched recursively. If JSON yields events, only
 *     those are returned.
 *  2. Free text, sentence by sentence (a sentence ends at a newline or at . ! ? before white
 *     space, so "12.5" stays whole). A small lexer turns a sentence into numbers (12.5, clock times
 *     mm:ss, mm:ss.ff, hh:mm:ss), words and symbols; a range is TIME SEP TIME with SEP one of - – —
 *     ~ to until till through, or "between TIME and TIME"; an instant is a time after at / around /
 *     about / approximately / near / @, a "<12.5 seconds>" tag, or a clock time opening a line.
 *
 * Nothing is invented: a number counts as a time only with evidence (a seconds or minutes unit on
 * either end of the range, a clock form, or a "<t seconds>" tag), so "3-5 people" or "the video is
 * 30 seconds long" give nothing, and a sentence whose negation (no, not, never, none, n't, ...)
 * comes before its first time gives nothing ("There is no red box in the video."). The label is
 * the phrase after a time that opens a line ("00:01-00:03: a car" -> "a car"), otherwise the whole
 * sentence, trimmed; in JSON it is the label-like value. Each event is flagged where the answer
 * undermines it (vg_event.flags): a range stated end first ("from 21 to 12 seconds", kept with its
 * ends swapped and VG_EVENT_REVERSED), and every event of an answer that also has a sentence
 * denying presence with no time in it ("There is no red box.", VG_EVENT_CONTRADICTED); live
 * streams reject such events (daemon/stream_track.c), clip jobs keep them.
 *
 * Untrusted input: bounded recursion and sizes, no allocation proportional to anything but the
 * text. Pure function: any thread may call it.
 */
#include "pipeline.h"

#include "common.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS    4096
#define MAX_TIME      1e7 /* seconds; larger numbers are not times of a video */
#define JSON_MAXDEPTH 32

/* ------------------------------------------------------------------------------------------------
 * Event list.
 */
typedef struct evlist {
    vg_event *v;
    size_t n, cap;
    int oom;
    int denials; /* sentences that deny (a negation and no time at all) */
} evlist;

static void set_label(vg_event *e, const char *s, size_t len)
{
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && (isspace((unsigned char)s[len - 1]) || s[len - 1] == '.' || s[len - 1] == ',' ||
                   s[len - 1] == ';'))
        len--;
    if (len >= sizeof e->label) {
        len = sizeof e->label - 1;
        while (len && ((unsigned char)s[len] & 0xC0) == 0x80) /* keep UTF-8 whole */
            len--;
    }
    memcpy(e->label, s, len);
    e->label[len] = 0;
}

static void add_event(evlist *l, double a, double b, const char *label, size_t len)
{
    if (l->oom || !isfinite(a) || !isfinite(b) || a < 0 || b < 0 || a > MAX_TIME || b > MAX_TIME ||
        l->n >= MAX_EVENTS)
        return;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        vg_event *v = realloc(l->v, nc * sizeof *v);
        if (!v) {
            l->oom = 1;
            return;
        }
        l->v = v;
        l->cap = nc;
    }
    vg_event *e = &l->v[l->n++];
    e->start = a < b ? a : b;
    e->end = a < b ? b : a;
    e->flags = a > b ? VG_EVENT_REVERSED : 0;
    set_label(e, label ? label : "", label ? len : 0);
}

/* ------------------------------------------------------------------------------------------------
 * Lexer.
 */
enum { T_NUM, T_WORD, T_SYM };

typedef struct tok {
    int kind;
    double val;  /* T_NUM: value in seconds for clocks, plain value otherwise */
    int clock;   /* T_NUM written as mm:ss or hh:mm:ss */
    char sym;    /* T_SYM; dashes are '-' */
    char w[24];  /* T_WORD, ASCII-lowercased, truncated */
    size_t b, e; /* byte span in the text */
} tok;

typedef struct toks {
    tok *v;
    size_t n, cap;
} toks;

static int push_tok(toks *t, const tok *x)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 32;
        tok *v = realloc(t->v, nc * sizeof *v);
        if (!v)
            return -1;
        t->v = v;
        t->cap = nc;
    }
    t->v[t->n++] = *x;
    return 0;
}

static int is_letter(unsigned char c)
{
    return isalpha(c) || c == '\'' || c >= 0x80;
}

/* Reads digits at s[*i]; returns the count (0 if none) and the value. */
static int read_digits(const char *s, size_t e, size_t *i, double *v)
{
    int n = 0;
    double x = 0;
    while (*i < e && isdigit((unsigned char)s[*i])) {
        if (n < 12)
            x = x * 10 + (s[*i] - '0');
        n++;
        (*i)++;
    }
    *v = x;
    return n;
}

static double read_fraction(const char *s, size_t e, size_t *i)
{
    /* s[*i] is '.' followed by a digit */
    (*i)++;
    double f = 0, scale = 0.1;
    int n = 0;
    while (*i < e && isdigit((unsigned char)s[*i])) {
        if (n < 12)
            f += (s[*i] - '0') * scale;
        scale /= 10;
        n++;
        (*i)++;
    }
    return f;
}

static int lex(const char *s, size_t b, size_t e, toks *out)
{
    out->n = 0;
    size_t i = b;
    while (i < e) {
        unsigned char c = (unsigned char)s[i];
        tok t;
        memset(&t, 0, sizeof t);
        t.b = i;
        if (isspace(c)) {
            i++;
            continue;
        }
        /* UTF-8 punctuation E2 80 xx (dashes, bullets, quotes): a symbol. */
        if (c == 0xE2 && i + 2 < e && (unsigned char)s[i + 1] == 0x80) {
            unsigned char d = (unsigned char)s[i + 2];
            if (d == 0x99) { /* right single quote inside a word: isn’t */
                goto word;
            }
            t.kind = T_SYM;
            t.sym = (d == 0x93 || d == 0x94 || d == 0x90 || d == 0x91 || d == 0x92) ? '-' : '*';
            i += 3;
            t.e = i;
            if (push_tok(out, &t))
                return -1;
            continue;
        }
        if (isdigit(c)) {
            /* Digits glued to a preceding letter belong to a word (mp4, x264). */
            if (i > b && (isalpha((unsigned char)s[i - 1]) || s[i - 1] == '_'))
                goto word;
            double parts[3] = {0, 0, 0};
            int np = 0, ok = 1;
            int nd = read_digits(s, e, &i, &parts[np++]);
            int digits_after[3] = {nd, 0, 0};
            while (np < 3 && i + 1 < e && s[i] == ':' && isdigit((unsigned char)s[i + 1])) {
                i++;
                digits_after[np] = read_digits(s, e, &i, &parts[np]);
                if (digits_after[np] != 2)
                    ok = 0;
                np++;
            }
            double frac = 0;
            if (i + 1 < e && s[i] == '.' && isdigit((unsigned char)s[i + 1]))
                frac = read_fraction(s, e, &i);
            t.kind = T_NUM;
            if (np == 1) {
                t.val = parts[0] + frac;
            } else {
                for (int k = 1; k < np; k++)
                    if (parts[k] >= 60)
                        ok = 0;
                t.clock = ok;
                t.val = (np == 2 ? parts[0] * 60 + parts[1]
                                 : parts[0] * 3600 + parts[1] * 60 + parts[2]) +
                        frac;
                if (!ok) /* 12:345 is not a time: keep it as a plain, unitless number */
                    t.val = NAN;
            }
            t.e = i;
            if (push_tok(out, &t))
                return -1;
            continue;
        }
        if (is_letter(c) && c != '\'') {
        word:
            t.kind = T_WORD;
            size_t k = 0;
            while (i < e) {
                unsigned char d = (unsigned char)s[i];
                if (d == 0xE2 && i + 2 < e && (unsigned char)s[i + 1] == 0x80 &&
                    (unsigned char)s[i + 2] != 0x99)
                    break;
                if (!(is_letter(d) || isdigit(d) || d == '_'))
                    break;
                if (k + 1 < sizeof t.w)
                    t.w[k++] = (char)tolower(d);
                i++;
            }
            t.w[k] = 0;
            t.e = i;
            if (push_tok(out, &t))
                return -1;
            continue;
        }
        t.kind = T_SYM;
        t.sym = (char)c;
        i++;
        t.e = i;
        if (push_tok(out, &t))
            return -1;
    }
    return 0;
}

static int word_is(const tok *t, const char *const *list)
{
    if (t->kind != T_WORD)
        return 0;
    for (; *list; list++)
        if (!strcmp(t->w, *list))
            return 1;
    return 0;
}

static const char *const k_sec_units[] = {"s",       "sec",      "secs", "second",
                                          "seconds", "seconds'", "segs", NULL};
static const char *const k_min_units[] = {"m", "min", "mins", "minute", "minutes", NULL};
static const char *const k_hour_units[] = {"h", "hr", "hrs", "hour", "hours", NULL};
static const char *const k_adj_units[] = {"second", "minute", "hour", NULL};
static const char *const k_to[] = {"to", "until", "till", "til", "through", "thru", NULL};
static const char *const k_instant[] = {
    "at", "around", "about", "approximately", "approx", "near", "roughly", "circa", "by", NULL};
static const char *const k_duration[] = {"for",   "lasts",  "lasting", "last",  "lasted",
                                         "takes", "took",   "every",   "each",  "duration",
                                         "long",  "length", "within",  "after", NULL};

static int is_negation(const tok *t)
{
    static const char *const neg[] = {"no",      "not", "never",  "none",    "nobody",  "nothing",
                                      "neither", "nor", "cannot", "nowhere", "without", NULL};
    if (t->kind != T_WORD)
        return 0;
    if (word_is(t, neg))
        return 1;
    size_t n = strlen(t->w);
    if (n >= 3 && !strcmp(t->w + n - 3, "n't"))
        return 1;
    if (n >= 5 && !memcmp(t->w + n - 5, "n\xe2\x80\x99t", 5))
        return 1;
    return 0;
}

/* Seconds per unit for a unit word, 0 for any other token. */
static double unit_scale(const tok *t)
{
    if (word_is(t, k_sec_units))
        return 1;
    if (word_is(t, k_min_units))
        return 60;
    if (word_is(t, k_hour_units))
        return 3600;
    return 0;
}

typedef struct tval {
    double v;
    double scale; /* 0 = no unit */
    int evidence; /* unit, clock or tag */
    int tagged;
    size_t end; /* token index after the time */
} tval;

/* A time at token i: ['<'] NUM [unit] ['>']. */
static int read_time(const toks *t, size_t i, tval *out)
{
    memset(out, 0, sizeof *out);
    size_t j = i;
    if (j < t->n && t->v[j].kind == T_SYM && t->v[j].sym == '<') {
        out->tagged = 1;
        j++;
    }
    if (j >= t->n || t->v[j].kind != T_NUM || isnan(t->v[j].val))
        return 0;
    const tok *n = &t->v[j++];
    out->v = n->val;
    out->evidence = n->clock;
    if (j < t->n) {
        double u = unit_scale(&t->v[j]);
        if (u == 1 || (u > 1 && !n->clock)) {
            out->scale = u;
            j++;
        } else if (j + 1 < t->n && t->v[j].kind == T_SYM && t->v[j].sym == '-' &&
                   word_is(&t->v[j + 1], k_adj_units)) {
            /* "the 5-second mark" */
            out->scale = unit_scale(&t->v[j + 1]);
            j += 2;
        }
        /* "1 minute 30 seconds", "1 hour and 2 minutes": one time, in seconds. */
        while (out->scale > 1) {
            size_t k = j;
            if (k < t->n && t->v[k].kind == T_WORD && !strcmp(t->v[k].w, "and"))
                k++;
            double u2 =
                k + 1 < t->n && t->v[k].kind == T_NUM && !t->v[k].clock && !isnan(t->v[k].val)
                    ? unit_scale(&t->v[k + 1])
                    : 0;
            if (!(u2 > 0 && u2 < out->scale))
                break;
            out->v = out->v * out->scale + t->v[k].val * u2;
            out->scale = 1;
            if (u2 > 1) { /* hours then minutes: seconds may follow */
                out->v /= u2;
                out->scale = u2;
            }
            j = k + 2;
        }
    }
    if (out->scale > 0) {
        out->evidence = 1;
        static const char *const mark[] = {"mark", "point", "timestamp", NULL};
        if (j < t->n && word_is(&t->v[j], mark))
            j++;
    }
    if (out->tagged) {
        if (j < t->n && t->v[j].kind == T_SYM && t->v[j].sym == '>')
            j++;
        else
            out->tagged = 0; /* "< 5 s" is a comparison, not a tag */
    }
    if (out->tagged && out->scale > 0)
        out->evidence = 1;
    else if (out->tagged && !n->clock)
        out->tagged = 0;
    out->end = j;
    return 1;
}

/* between: "between" came before the first time ("and" separates); bracket: an opening [ or (
 * did ("[1.0, 3.0] seconds": the comma separates). */
static int is_sep(const toks *t, size_t j, int between, int bracket)
{
    if (j >= t->n)
        return 0;
    const tok *s = &t->v[j];
    if (s->kind == T_SYM && (s->sym == '-' || s->sym == '~'))
        return 1;
    if (bracket && s->kind == T_SYM && s->sym == ',')
        return 1;
    if (word_is(s, k_to))
        return 1;
    if (between && s->kind == T_WORD && !strcmp(s->w, "and"))
        return 1;
    return 0;
}

/* Text of sentence [sb, se) with the events found in it. */
static void scan_sentence(const char *s, size_t sb, size_t se, toks *t, evlist *l)
{
    if (lex(s, sb, se, t)) {
        l->oom = 1;
        return;
    }
    int negated = 0, n_ranges = 0, n_inst = 0, had_neg = 0, had_time = 0;
    size_t inst_tok[2] = {0, 0}, inst_ev = 0;
    size_t i = 0;
    /* Index of the first token that is not a bullet or list marker. */
    size_t first = 0;
    while (first < t->n && t->v[first].kind == T_SYM && t->v[first].sym != '<')
        first++;
    while (i < t->n) {
        if (is_negation(&t->v[i]))
            negated = had_neg = 1;
        /* A negation holds for its clause: "The box, with no border, is visible from 1 to 3 s"
         * states an interval. */
        if (t->v[i].kind == T_SYM && strchr(",;:()", t->v[i].sym))
            negated = 0;
        tval a;
        if (!read_time(t, i, &a)) {
            i++;
            continue;
        }
        had_time = 1;
        size_t start_tok = i;
        int between = i > 0 && t->v[i - 1].kind == T_WORD && !strcmp(t->v[i - 1].w, "between");
        int is_range = 0;
        tval b;
        size_t j = a.end;
        int bracket = i > 0 && t->v[i - 1].kind == T_SYM &&
                      (t->v[i - 1].sym == '[' || t->v[i - 1].sym == '(');
        size_t j2 = j + 1; /* "from the 1 second mark to the 3 second mark" */
        if (j2 < t->n && t->v[j2].kind == T_WORD && !strcmp(t->v[j2].w, "the"))
            j2++;
        if (is_sep(t, j, between, bracket) && read_time(t, j2, &b)) {
            is_range = 1;
            /* "[1.0, 3.0] seconds": the unit follows the closing bracket. */
            if (bracket && b.scale == 0 && b.end + 1 < t->n && t->v[b.end].kind == T_SYM &&
                (t->v[b.end].sym == ']' || t->v[b.end].sym == ')') &&
                unit_scale(&t->v[b.end + 1]) > 0) {
                b.scale = unit_scale(&t->v[b.end + 1]);
                b.evidence = 1;
                b.end += 2;
            }
        }
        const tok *prev = i > 0 ? &t->v[i - 1] : NULL;
        int after_duration_word = prev && word_is(prev, k_duration);
        if (is_range) {
            if (a.scale == 0 && b.scale > 0)
                a.scale = b.scale;
            if (b.scale == 0 && a.scale > 0)
                b.scale = a.scale;
            int evidence = a.evidence || b.evidence;
            size_t end = b.end;
            /* "2 to 3 seconds long/later/apart" is a duration. */
            static const char *const after_dur[] = {"long",    "later", "apart", "each",
                                                    "earlier", "ago",   NULL};
            int dur_after = end < t->n && word_is(&t->v[end], after_dur);
            if (evidence && !after_duration_word && !dur_after && !negated) {
                double va = a.v * (a.scale > 0 ? a.scale : 1);
                double vb = b.v * (b.scale > 0 ? b.scale : 1);
                size_t lb = sb, le = se;
                if (start_tok <= first && end < t->n) {
                    lb = t->v[end].b; /* "00:01-00:03: a car" -> "a car" */
                    while (lb < le &&
                           (s[lb] == ':' || s[lb] == '-' || s[lb] == ',' || s[lb] == ')' ||
                            s[lb] == ']' || isspace((unsigned char)s[lb])))
                        lb++;
                    if (lb >= le)
                        lb = sb;
                }
                add_event(l, va, vb, s + lb, le - lb);
                n_ranges++;
            }
            i = end;
            continue;
        }
        /* An instant. */
        int prep = prev && word_is(prev, k_instant);
        if (!prep && prev && prev->kind == T_SYM && prev->sym == '@')
            prep = 1;
        if (!prep && i >= 2 && prev->kind == T_WORD && !strcmp(prev->w, "the") &&
            word_is(&t->v[i - 2], k_instant))
            prep = 1;
        int opens_line = start_tok <= first && t->v[a.tagged ? i + 1 : i].clock;
        if (a.tagged)
            prep = 1;
        if (a.evidence && (prep || opens_line) && !negated && !after_duration_word) {
            double v = a.v * (a.scale > 0 ? a.scale : 1);
            size_t lb = sb, le = se;
            if (start_tok <= first && a.end < t->n) {
                lb = t->v[a.end].b;
                while (lb < le && (s[lb] == ':' || s[lb] == '-' || s[lb] == ',' ||
                                   isspace((unsigned char)s[lb])))
                    lb++;
                if (lb >= le)
                    lb = sb;
            }
            size_t before = l->n;
            add_event(l, v, v, s + lb, le - lb);
            if (l->n > before) {
                if (n_inst == 0)
                    inst_ev = before;
                if (n_inst < 2)
                    inst_tok[n_inst] = start_tok;
                n_inst++;
            }
        }
        i = a.end > i ? a.end : i + 1;
    }
    /* "appears at 0:07 and disappears at 0:12" states one interval. */
    if (n_ranges == 0 && n_inst == 2 && inst_ev + 2 == l->n &&
        l->v[inst_ev].start <= l->v[inst_ev + 1].start) {
        static const char *const on[] = {"appears", "appear", "starts", "start",   "begins",
                                         "begin",   "enters", "enter",  "emerges", "arrives",
                                         "shows",   "comes",  NULL};
        static const char *const off[] = {"disappears", "disappear", "ends", "end",      "leaves",
                                          "leave",      "exits",     "exit", "stops",    "stop",
                                          "vanishes",   "goes",      "gone", "finishes", NULL};
        int has_on = 0, has_off = 0;
        for (size_t k = 0; k < inst_tok[0]; k++)
            has_on |= word_is(&t->v[k], on);
        for (size_t k = inst_tok[0]; k < inst_tok[1]; k++)
            has_off |= word_is(&t->v[k], off);
        if (has_on && has_off) {
            l->v[inst_ev].end = l->v[inst_ev + 1].start;
            memcpy(l->v[inst_ev].label, l->v[inst_ev + 1].label, sizeof l->v[inst_ev].label);
            l->n--;
        }
    }
    if (had_neg && !had_time)
        l->denials++;
}

static void parse_text(const char *s, size_t len, evlist *l)
{
    toks t = {0};
    size_t sb = 0;
    for (size_t i = 0; i <= len; i++) {
        int end = i == len || s[i] == '\n';
        if (!end && (s[i] == '.' || s[i] == '!' || s[i] == '?') &&
            (i + 1 == len || isspace((unsigned char)s[i + 1])))
            end = 1;
        if (!end)
            continue;
        size_t se = i < len && s[i] != '\n' ? i + 1 : i;
        if (se > sb)
            scan_sentence(s, sb, se, &t, l);
        sb = i + 1;
    }
    free(t.v);
}

/* ------------------------------------------------------------------------------------------------
 * A small JSON reader (RFC 8259 values; bounded depth).
 */
enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
    int type;
    double num;
    char *str; /* J_STR: UTF-8, NUL-terminated; J_OBJ members keep their key here */
    size_t slen;
    struct jv *kids; /* J_ARR / J_OBJ */
    size_t n;
} jv;

typedef struct jp {
    const char *s;
    size_t i, n;
    int depth;
} jp;

/* Frees what v owns: its children, and its string (a J_STR value or an object member's key). */
static void jv_free(jv *v)
{
    if (!v)
        return;
    for (size_t k = 0; k < v->n; k++)
        jv_free(&v->kids[k]);
    free(v->kids);
    free(v->str);
    v->kids = NULL;
    v->str = NULL;
    v->n = 0;
}

static void jws(jp *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int put_utf8(char *o, size_t *k, unsigned cp)
{
    if (cp < 0x80) {
        o[(*k)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*k)++] = (char)(0xC0 | cp >> 6);
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*k)++] = (char)(0xE0 | cp >> 12);
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*k)++] = (char)(0xF0 | cp >> 18);
        o[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    }
    return 0;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int jstring(jp *p, char **out, size_t *olen)
{
    if (p->i >= p->n || p->s[p->i] != '"')
        return -1;
    p->i++;
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] != '"') {
        if (p->s[p->i] == '\\')
            p->i++;
        p->i++;
    }
    if (p->i >= p->n)
        return -1;
    size_t raw = p->i - start;
    char *o = malloc(raw + 1);
    if (!o)
        return -1;
    size_t k = 0;
    for (size_t i = start; i < p->i; i++) {
        char c = p->s[i];
        if (c != '\\') {
            o[k++] = c;
            continue;
        }
        char d = p->s[++i];
        switch (d) {
        case 'n':
            o[k++] = '\n';
            break;
        case 't':
            o[k++] = '\t';
            break;
        case 'r':
            o[k++] = '\r';
            break;
        case 'b':
            o[k++] = '\b';
            break;
        case 'f':
            o[k++] = '\f';
            break;
        case 'u': {
            unsigned cp;
            if (i + 4 >= p->i || hex4(p->s + i + 1, &cp)) {
                free(o);
                return -1;
            }
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < p->i && p->s[i + 1] == '\\' &&
                p->s[i + 2] == 'u') {
                unsigned lo;
                if (!hex4(p->s + i + 3, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000)
                cp = 0xFFFD;
            if (cp == 0)
                cp = 0xFFFD;
            /* \uXXXX is 6 input bytes and at most 4 output bytes: o never overflows. */
            put_utf8(o, &k, cp);
            break;
        }
        default:
            o[k++] = d;
        }
    }
    o[k] = 0;
    p->i++;
    *out = o;
    *olen = k;
    return 0;
}

static int jvalue(jp *p, jv *v);

static int jpush(jv *v, size_t *cap, jv *item)
{
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        jv *k = realloc(v->kids, nc * sizeof *k);
        if (!k)
            return -1;
        v->kids = k;
        *cap = nc;
    }
    v->kids[v->n++] = *item;
    return 0;
}

static int jvalue(jp *p, jv *v)
{
    memset(v, 0, sizeof *v);
    jws(p);
    if (p->i >= p->n)
        return -1;
    char c = p->s[p->i];
    if (c == '{' || c == '[') {
        if (++p->depth > JSON_MAXDEPTH)
            return -1;
        char close = c == '{' ? '}' : ']';
        v->type = c == '{' ? J_OBJ : J_ARR;
        size_t cap = 0;
        p->i++;
        jws(p);
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            p->depth--;
            return 0;
        }
        for (;;) {
            jv item;
            char *key = NULL;
            size_t klen = 0;
            if (v->type == J_OBJ) {
                jws(p);
                if (jstring(p, &key, &klen))
                    return -1;
                jws(p);
                if (p->i >= p->n || p->s[p->i] != ':') {
                    free(key);
                    return -1;
                }
                p->i++;
            }
            if (jvalue(p, &item)) {
                free(key);
                jv_free(&item);
                return -1;
            }
            if (v->type == J_OBJ) {
                /* A member is a holder whose str is the key and whose only child is the
                 * value (jkey / jval). */
                jv wrap;
                memset(&wrap, 0, sizeof wrap);
                wrap.type = J_OBJ; /* a single-member holder: kids[0] is the value */
                wrap.str = key;
                wrap.slen = klen;
                wrap.kids = malloc(sizeof(jv));
                if (!wrap.kids) {
                    free(key);
                    jv_free(&item);
                    return -1;
                }
                wrap.kids[0] = item;
                wrap.n = 1;
                if (jpush(v, &cap, &wrap)) {
                    jv_free(&wrap);
                    return -1;
                }
            } else if (jpush(v, &cap, &item)) {
                jv_free(&item);
                return -1;
            }
            jws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == close) {
                p->i++;
                p->depth--;
                return 0;
            }
            return -1;
        }
    }
    if (c == '"') {
        v->type = J_STR;
        return jstring(p, &v->str, &v->slen);
    }
    if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "true", 4)) {
        v->type = J_BOOL;
        v->num = 1;
        p->i += 4;
        return 0;
    }
    if (p->n - p->i >= 5 && !strncmp(p->s + p->i, "false", 5)) {
        v->type = J_BOOL;
        p->i += 5;
        return 0;
    }
    if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "null", 4)) {
        v->type = J_NULL;
        p->i += 4;
        return 0;
    }
    if (c == '-' || isdigit((unsigned char)c)) {
        char buf[64];
        size_t k = 0;
        while (p->i < p->n && k + 1 < sizeof buf &&
               (isdigit((unsigned char)p->s[p->i]) || strchr("+-.eE", p->s[p->i])))
            buf[k++] = p->s[p->i++];
        buf[k] = 0;
        char *end;
        v->type = J_NUM;
        v->num = strtod(buf, &end);
        return *end ? -1 : 0;
    }
    return -1;
}

/* Object member k: key and value. */
static const char *jkey(const jv *o, size_t k)
{
    return o->kids[k].str;
}
static const jv *jval(const jv *o, size_t k)
{
    return &o->kids[k].kids[0];
}

static int key_in(const char *key, const char *const *list)
{
    char low[32];
    size_t n = strlen(key);
    if (n >= sizeof low)
        return 0;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)key[i]);
    for (; *list; list++)
        if (!strcmp(low, *list))
            return 1;
    return 0;
}

static const char *const k_start_keys[] = {"start", "start_time", "starttime", "begin",
                                           "from",  "start_sec",  "start_s",   "start_seconds",
                                           "onset", "t0",         "startsec",  NULL};
static const char *const k_end_keys[] = {"end",  "end_time", "endtime", "finish", "to",
                                         "stop", "end_sec",  "end_s",   "offset", "end_seconds",
                                         "t1",   "endsec",   NULL};
static const char *const k_time_keys[] = {
    "time",    "timestamp", "timestamps", "time_range", "timerange", "range", "interval",
    "segment", "span",      "period",     "when",       "times",     "at",    NULL};
static const char *const k_label_keys[] = {
    "label", "event",   "description", "desc",    "caption", "text",  "action", "activity",
    "name",  "content", "what",        "summary", "object",  "title", "class",  NULL};

/* A time range or instant written in a string ("00:01-00:03", "1.5 s", "<2 seconds>", "3 to 5").
 * The string must hold nothing else but connecting words. Where the context says it is a time (a
 * "start" or "time" member) a bare number is accepted; with strict (an object key) a lone number
 * needs a unit or a clock form, since {"1": ...} is more likely an index. */
static int parse_time_string(const char *s, size_t len, int strict, double *a, double *b)
{
    toks t = {0};
    int ok = 0;
    if (lex(s, 0, len, &t) == 0) {
        size_t i = 0;
        static const char *const filler[] = {"from", "between", "at", "around", "about", NULL};
        while (i < t.n && (word_is(&t.v[i], filler) || (t.v[i].kind == T_SYM && t.v[i].sym != '<')))
            i++;
        tval x, y;
        if (read_time(&t, i, &x)) {
            size_t j = x.end;
            int between = i > 0 && t.v[i - 1].kind == T_WORD && !strcmp(t.v[i - 1].w, "between");
            if (is_sep(&t, j, between, 0) && read_time(&t, j + 1, &y)) {
                if (x.scale == 0)
                    x.scale = y.scale > 0 ? y.scale : 1;
                if (y.scale == 0)
                    y.scale = x.scale;
                *a = x.v * x.scale;
                *b = y.v * y.scale;
                j = y.end;
                ok = 1;
            } else {
                *a = *b = x.v * (x.scale > 0 ? x.scale : 1);
                ok = !strict || x.evidence;
            }
            /* Only closing symbols may follow. */
            for (; j < t.n; j++)
                if (t.v[j].kind != T_SYM)
                    ok = 0;
        }
    }
    free(t.v);
    return ok;
}

static int jtime(const jv *v, double *a, double *b)
{
    if (v->type == J_NUM) {
        *a = *b = v->num;
        return 1;
    }
    if (v->type == J_STR)
        return parse_time_string(v->str, v->slen, 0, a, b);
    if (v->type == J_ARR && v->n == 2) {
        double a0, a1, b0, b1;
        if (jtime(&v->kids[0], &a0, &a1) && jtime(&v->kids[1], &b0, &b1)) {
            *a = a0;
            *b = b1;
            return 1;
        }
    }
    return 0;
}

/* The label of an event object: a label-like key, else the first string that is not a time. */
static void jlabel(const jv *o, const char **s, size_t *len)
{
    *s = "";
    *len = 0;
    if (o->type == J_STR) {
        *s = o->str;
        *len = o->slen;
        return;
    }
    if (o->type != J_OBJ)
        return;
    for (size_t k = 0; k < o->n; k++)
        if (key_in(jkey(o, k), k_label_keys) && jval(o, k)->type == J_STR) {
            *s = jval(o, k)->str;
            *len = jval(o, k)->slen;
            return;
        }
    for (size_t k = 0; k < o->n; k++) {
        double a, b;
        const jv *v = jval(o, k);
        if (v->type == J_STR && !key_in(jkey(o, k), k_start_keys) &&
            !key_in(jkey(o, k), k_end_keys) && !key_in(jkey(o, k), k_time_keys) &&
            !parse_time_string(v->str, v->slen, 0, &a, &b)) {
            *s = v->str;
            *len = v->slen;
            return;
        }
    }
}

static void jwalk(const jv *v, evlist *l, int depth)
{
    if (depth > JSON_MAXDEPTH)
        return;
    if (v->type == J_ARR) {
        for (size_t k = 0; k < v->n; k++)
            jwalk(&v->kids[k], l, depth + 1);
        return;
    }
    if (v->type != J_OBJ)
        return;
    /* {start, end, label} */
    const jv *vs = NULL, *ve = NULL, *vt = NULL;
    for (size_t k = 0; k < v->n; k++) {
        if (!vs && key_in(jkey(v, k), k_start_keys))
            vs = jval(v, k);
        else if (!ve && key_in(jkey(v, k), k_end_keys))
            ve = jval(v, k);
        else if (!vt && key_in(jkey(v, k), k_time_keys))
            vt = jval(v, k);
    }
    const char *lab;
    size_t llen;
    double a0, a1, b0, b1;
    if (vs && ve && jtime(vs, &a0, &a1) && jtime(ve, &b0, &b1)) {
        jlabel(v, &lab, &llen);
        add_event(l, a0, b1, lab, llen);
        return;
    }
    if (vt && jtime(vt, &a0, &a1)) {
        jlabel(v, &lab, &llen);
        add_event(l, a0, a1, lab, llen);
        return;
    }
    if (vs && !ve && jtime(vs, &a0, &a1)) {
        jlabel(v, &lab, &llen);
        add_event(l, a0, a1, lab, llen);
        return;
    }
    /* Keys that are times: {"00:01-00:03": "a car"}; otherwise search deeper. */
    for (size_t k = 0; k < v->n; k++) {
        const char *key = jkey(v, k);
        if (parse_time_string(key, strlen(key), 1, &a0, &a1)) {
            jlabel(jval(v, k), &lab, &llen);
            add_event(l, a0, a1, lab, llen);
        } else {
            jwalk(jval(v, k), l, depth + 1);
        }
    }
}

static int try_json(const char *s, size_t len, evlist *l)
{
    jp p = {s, 0, len, 0};
    jv root;
    if (jvalue(&p, &root)) {
        jv_free(&root);
        return 0;
    }
    size_t before = l->n;
    jwalk(&root, l, 0);
    jv_free(&root);
    return l->n > before;
}

static int parse_json(const char *s, size_t len, evlist *l)
{
    /* Fenced blocks first. */
    const char *f = s, *end = s + len;
    int found = 0;
    while ((f = strstr(f, "```")) != NULL && f < end) {
        const char *body = f + 3;
        while (body < end && *body != '\n' && *body != '{' && *body != '[')
            body++; /* language tag */
        const char *close = strstr(body, "```");
        if (!close)
            close = end;
        found |= try_json(body, (size_t)(close - body), l);
        if (close >= end)
            break;
        f = close + 3;
    }
    if (found)
        return 1;
    /* Else the first few [ or { that parse. */
    int tries = 0;
    for (size_t i = 0; i < len && tries < 16; i++) {
        if (s[i] != '[' && s[i] != '{')
            continue;
        tries++;
        if (try_json(s + i, len - i, l))
            return 1;
    }
    return 0;
}

int vg_answer_parse(const char *text, vg_event **events, size_t *n)
{
    if (!events || !n)
        return VG_EINVAL;
    *events = NULL;
    *n = 0;
    if (!text)
        return 0;
    size_t len = strlen(text);
    evlist l = {0};
    if (!parse_json(text, len, &l) && !l.oom)
        parse_text(text, len, &l);
    if (l.oom) {
        free(l.v);
        return VG_ENOMEM;
    }
    if (l.n == 0) {
        free(l.v);
        return 0;
    }
    /* A denial ("There is no red box in the video.") beside stated times contradicts them. */
    if (l.denials > 0)
        for (size_t i = 0; i < l.n; i++)
            l.v[i].flags |= VG_EVENT_CONTRADICTED;
    *events = l.v;
    *n = l.n;
    return 0;
}
