// RAII deleters for the FFmpeg handles evl_extract_video uses, shared by the
// reader and the PNG writer (like ggml-cpp.h): std::unique_ptr<AVFrame, FrameFree>.
// Only ownership here; error handling stays at each call site (av_strerror).
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}

namespace evl::ffmpeg {

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecCloser {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFree {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

}  // namespace evl::ffmpeg
