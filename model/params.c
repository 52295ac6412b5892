/*
 * params.c: default parameter structs of the engine. Pure functions, any thread.
 */
#include "model.h"

#include <unistd.h>

vg_model_params vg_model_default_params(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    vg_model_params p = {
        .n_threads = n > 0 ? (int)n : 1,
        .use_mmap = 0,
        .load_vision = 1,
        .weight_type = VG_WEIGHTS_AUTO,
    };
    return p;
}
