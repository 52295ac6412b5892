/*
 * cpu.c: which kernel level (instruction set) the engine's own kernels use, decided at run time.
 *
 * The level comes from cpuid and XGETBV, never from a CPU model or core type (these machines are
 * sometimes Intel Sapphire Rapids, sometimes AMD Zen 4 or Zen 5):
 *  - VG_ISA_AVX512: AVX-512 F, BW, VL, DQ with BF16 and VNNI, and the OS saving the opmask and
 *    ZMM state (XCR0 bits 1, 2, 5, 6, 7);
 *  - VG_ISA_AVX2: AVX2, FMA and F16C with the OS saving YMM state (XCR0 bits 1, 2);
 *  - VG_ISA_SCALAR: portable C, always available.
 * Beside the levels, vg_amx_ok says whether AMX tiles can run the blocked bf16 products (amx.c);
 * VG_AMX=0 in the environment says no.
 * The environment variable VG_ISA (scalar, avx2, avx512) forces a lower level, which is how the
 * tests run every vectorized kernel against the scalar one; asking for a level the CPU lacks gives
 * the best supported level below it (with a warning). The choice is made once, on first use, and
 * is process-wide; vg_isa_force() (tests only) changes it.
 *
 * Threads: vg_isa_level() is safe from any thread (an atomic, set once); vg_isa_force() must not
 * race with running kernels.
 */
#define _GNU_SOURCE /* syscall */
#include "kernels.h"

#include "common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned long long xgetbv0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

int vg_isa_detect(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return VG_ISA_SCALAR;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    const int f16c = (c >> 29) & 1;
    if (!osxsave || !avx)
        return VG_ISA_SCALAR;
    unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* SSE and AVX state */
        return VG_ISA_SCALAR;
    if (__get_cpuid_max(0, NULL) < 7)
        return VG_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1;
    const int avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    unsigned int a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    const int bf16 = (a1 >> 5) & 1;
    (void)b1;
    (void)c1;
    (void)d1;
    int level = VG_ISA_SCALAR;
    if (avx2 && fma && f16c)
        level = VG_ISA_AVX2;
    if (level == VG_ISA_AVX2 && avx512f && avx512dq && avx512bw && avx512vl && vnni && bf16 &&
        (xcr0 & 0xe6) == 0xe6)
        level = VG_ISA_AVX512;
    return level;
}

/* AMX-BF16 and AMX-TILE, the OS saving the tile state (XCR0 bits 17 and 18), and this process
 * granted the tile data: Linux gives it only after arch_prctl(ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA), which oneDNN also asks for its own kernels. */
static int amx_detect(void)
{
    unsigned int a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    (void)a;
    (void)b;
    (void)c;
    if (!((d >> 22) & 1) || !((d >> 24) & 1))
        return 0;
    if ((xgetbv0() & (3ull << 17)) != (3ull << 17))
        return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) ==
           0;
}
#else
int vg_isa_detect(void)
{
    return VG_ISA_SCALAR;
}

static int amx_detect(void)
{
    return 0;
}
#endif

static atomic_int g_amx = -1;

int vg_amx_ok(void)
{
    int v = atomic_load(&g_amx);
    if (v < 0) {
        const char *e = getenv("VG_AMX");
        v = (e && strcmp(e, "0") == 0) ? 0 : amx_detect();
        atomic_store(&g_amx, v);
    }
    return v && vg_isa_level() >= VG_ISA_AVX512;
}

static atomic_int g_level = -1;

static int from_env(int hw)
{
    const char *e = getenv("VG_ISA");
    if (!e || !e[0])
        return hw;
    int want = vg_isa_parse(e);
    if (want < 0) {
        vg_log(VG_LOG_WARNING, "model", "VG_ISA=%s is not scalar, avx2 or avx512; using %s", e,
               vg_isa_name(hw));
        return hw;
    }
    if (want > hw) {
        vg_log(VG_LOG_WARNING, "model", "VG_ISA=%s: this CPU supports only %s", e, vg_isa_name(hw));
        return hw;
    }
    return want;
}

int vg_isa_level(void)
{
    int l = atomic_load_explicit(&g_level, memory_order_acquire);
    if (l >= 0)
        return l;
    l = from_env(vg_isa_detect());
    int expect = -1;
    if (!atomic_compare_exchange_strong(&g_level, &expect, l))
        l = expect;
    return l;
}

int vg_isa_force(int level)
{
    int hw = vg_isa_detect();
    if (level < VG_ISA_SCALAR || level > hw)
        return VG_ENOTSUP;
    atomic_store(&g_level, level);
    return 0;
}

int vg_isa_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcasecmp(name, "scalar") == 0 || strcasecmp(name, "c") == 0)
        return VG_ISA_SCALAR;
    if (strcasecmp(name, "avx2") == 0)
        return VG_ISA_AVX2;
    if (strcasecmp(name, "avx512") == 0)
        return VG_ISA_AVX512;
    return -1;
}

const char *vg_isa_name(int level)
{
    switch (level) {
    case VG_ISA_SCALAR:
        return "scalar";
    case VG_ISA_AVX2:
        return "avx2";
    case VG_ISA_AVX512:
        return "avx512";
    default:
        return "?";
    }
}
