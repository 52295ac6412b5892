/*
 * snapshot.c: one RGB frame as a JPEG image (libavcodec's MJPEG encoder), for the event snapshots
 * of live streams (docs/http.md).
 */
#include "pipeline.h"

#include "common.h"

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <stdlib.h>
#include <string.h>

int vg_jpeg_encode_rgb(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                       size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (!rgb || width < 2 || height < 2 || width > 16384 || height > 16384 || quality < 1 ||
        quality > 31)
        return vg_fail(err, errlen, VG_EINVAL, "bad JPEG encoder arguments");
    int rc = 0;
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    AVCodecContext *enc = codec ? avcodec_alloc_context3(codec) : NULL;
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    struct SwsContext *sws = NULL;
    if (!enc || !fr || !pkt) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "cannot set up the JPEG encoder");
        goto done;
    }
    /* Even sizes for 4:2:0: an odd last row or column is dropped. */
    int w = width & ~1, h = height & ~1;
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
    enc->time_base = (AVRational){1, 25};
    enc->flags |= AV_CODEC_FLAG_QSCALE;
    enc->global_quality = FF_QP2LAMBDA * quality;
    enc->thread_count = 1;
    if (avcodec_open2(enc, codec, NULL) < 0) {
        rc = vg_fail(err, errlen, VG_EMEDIA, "cannot open the MJPEG encoder");
        goto done;
    }
    fr->format = AV_PIX_FMT_YUVJ420P;
    fr->width = w;
    fr->height = h;
    fr->quality = enc->global_quality;
    fr->pts = 0;
    if (av_frame_get_buffer(fr, 0) < 0) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto done;
    }
    sws = sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, AV_PIX_FMT_YUVJ420P, SWS_BILINEAR, NULL,
                         NULL, NULL);
    if (!sws) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "cannot set up the color conversion");
        goto done;
    }
    const uint8_t *src[1] = {rgb};
    int stride[1] = {width * 3};
    sws_scale(sws, src, stride, 0, h, fr->data, fr->linesize);
    if (avcodec_send_frame(enc, fr) < 0 || avcodec_send_frame(enc, NULL) < 0 ||
        avcodec_receive_packet(enc, pkt) < 0) {
        rc = vg_fail(err, errlen, VG_EMEDIA, "the MJPEG encoder failed");
        goto done;
    }
    if (!(*out = malloc((size_t)pkt->size))) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(*out, pkt->data, (size_t)pkt->size);
    *out_len = (size_t)pkt->size;
done:
    sws_freeContext(sws);
    av_packet_free(&pkt);
    av_frame_free(&fr);
    avcodec_free_context(&enc);
    return rc;
}
