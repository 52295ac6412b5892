/*
 * gguf_model.h: Qwen3-VL from a GGUF pair (gguf_model.c) -- model/'s private interface.
 */
#ifndef VG_MODEL_GGUF_MODEL_H
#define VG_MODEL_GGUF_MODEL_H

#include "internal.h"

#include <stddef.h>

/* Decides whether path names a GGUF model: a .gguf file (the text model; text = path), or a
 * directory without config.json holding .gguf files (each opened to read its architecture: one
 * qwen3vl text model and at most one clip mmproj). Returns 1 with the paths filled (mmproj empty
 * when none), 0 when path is something else (a Hugging Face checkpoint), or a negative VG_E* code
 * (a broken GGUF, two text models, an unknown architecture) with a sentence in err. */
int vg_gguf_model_find(const char *path, char *text, size_t text_cap, char *mmproj, size_t mm_cap,
                       char *err, size_t errlen);

/* Opens the pair (mmproj_path may be NULL: text only) and gives the engine what a Hugging Face
 * directory gives it: *info and *gen (from the metadata, checked by config.c; dir, when not NULL,
 * may hold generation_config.json / video_preprocessor_config.json, which then decide), *tok (from
 * tokenizer.ggml.*), and *st (the tensors under their Hugging Face names; it keeps both files
 * mapped until vg_st_close()). The caller owns *st and *tok. */
int vg_gguf_model_open(const char *text_path, const char *mmproj_path, const char *dir,
                       vg_model_info *info, vg_gen_params *gen, vg_st **st, vg_tokenizer **tok,
                       char *err, size_t errlen);

#endif
