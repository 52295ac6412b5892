/*
 * frames.c: a sequence of still images (JPEG) written as one video file, so that a client that
 * sends frames instead of a clip (Frigate, Home Assistant's LLM Vision: a list of image_url parts
 * in one chat message) goes through the same decode, sampling and timestamp path as a clip.
 *
 * The JPEGs are not re-encoded: each becomes one MJPEG packet of a Matroska file, frame i at
 * i / fps seconds. Every image is decoded once first, to refuse data that is not a JPEG and images
 * whose size differs from the first's before anything is written.
 */
#include "pipeline.h"

#include "common.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/mathematics.h>
#include <stdio.h>
#include <string.h>

/* Decodes one JPEG to learn its size; returns 0 or a negative code with a sentence. */
static int probe_jpeg(AVCodecContext *dec, AVPacket *pkt, AVFrame *fr, const vg_image_blob *b,
                      int index, int *w, int *h, char *err, size_t errlen)
{
    if (b->len < 4 || b->len > INT_MAX - AV_INPUT_BUFFER_PADDING_SIZE ||
        ((const uint8_t *)b->data)[0] != 0xFF || ((const uint8_t *)b->data)[1] != 0xD8)
        return vg_fail(err, errlen, VG_EINVAL, "frame %d is not a JPEG image", index);
    av_packet_unref(pkt);
    if (av_new_packet(pkt, (int)b->len) < 0)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    memcpy(pkt->data, b->data, b->len);
    int rc = avcodec_send_packet(dec, pkt);
    if (rc >= 0)
        rc = avcodec_receive_frame(dec, fr);
    if (rc < 0 || fr->width <= 0 || fr->height <= 0)
        return vg_fail(err, errlen, VG_EMEDIA, "frame %d is not a decodable JPEG image", index);
    *w = fr->width;
    *h = fr->height;
    av_frame_unref(fr);
    return 0;
}

int vg_frames_to_video(const vg_image_blob *frames, int n, double fps, const char *path, char *err,
                       size_t errlen)
{
    if (!frames || n < 1 || n > 100000 || !(fps >= 0.001 && fps <= 1000) || !path)
        return vg_fail(err, errlen, VG_EINVAL, "bad frame sequence arguments");
    int rc = 0, w0 = 0, h0 = 0;
    const AVCodec *codec = avcodec_find_decoder(AV_CODEC_ID_MJPEG);
    AVCodecContext *dec = codec ? avcodec_alloc_context3(codec) : NULL;
    AVPacket *pkt = av_packet_alloc();
    AVFrame *fr = av_frame_alloc();
    AVFormatContext *oc = NULL;
    if (!dec || !pkt || !fr || avcodec_open2(dec, codec, NULL) < 0) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "cannot set up the JPEG decoder");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int w = 0, h = 0;
        if ((rc = probe_jpeg(dec, pkt, fr, &frames[i], i, &w, &h, err, errlen)) < 0)
            goto done;
        if (i == 0) {
            w0 = w;
            h0 = h;
        } else if (w != w0 || h != h0) {
            rc = vg_fail(err, errlen, VG_EINVAL, "frame %d is %dx%d; frame 0 is %dx%d", i, w, h, w0,
                         h0);
            goto done;
        }
    }
    if (avformat_alloc_output_context2(&oc, NULL, "matroska", path) < 0 || !oc) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "cannot set up the Matroska writer");
        goto done;
    }
    AVStream *st = avformat_new_stream(oc, NULL);
    if (!st) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto done;
    }
    st->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
    st->codecpar->codec_id = AV_CODEC_ID_MJPEG;
    st->codecpar->width = w0;
    st->codecpar->height = h0;
    st->time_base = (AVRational){1, 1000};
    st->avg_frame_rate = av_d2q(fps, 100000);
    if (avio_open(&oc->pb, path, AVIO_FLAG_WRITE) < 0) {
        rc = vg_fail(err, errlen, VG_EIO, "cannot create %s", path);
        goto done;
    }
    if (avformat_write_header(oc, NULL) < 0) {
        rc = vg_fail(err, errlen, VG_EIO, "cannot write the header of %s", path);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        av_packet_unref(pkt);
        if (av_new_packet(pkt, (int)frames[i].len) < 0) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
            goto done;
        }
        memcpy(pkt->data, frames[i].data, frames[i].len);
        /* Frame i at i / fps seconds, in the stream's millisecond time base. */
        pkt->pts = pkt->dts = llround(i * 1000.0 / fps);
        pkt->duration = llround(1000.0 / fps);
        pkt->stream_index = st->index;
        pkt->flags |= AV_PKT_FLAG_KEY;
        av_packet_rescale_ts(pkt, (AVRational){1, 1000}, st->time_base);
        if (av_interleaved_write_frame(oc, pkt) < 0) {
            rc = vg_fail(err, errlen, VG_EIO, "cannot write frame %d to %s", i, path);
            goto done;
        }
    }
    if (av_write_trailer(oc) < 0)
        rc = vg_fail(err, errlen, VG_EIO, "cannot finish %s", path);
done:
    if (oc) {
        if (oc->pb)
            avio_closep(&oc->pb);
        avformat_free_context(oc);
    }
    av_frame_free(&fr);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    if (rc < 0)
        remove(path);
    return rc;
}
