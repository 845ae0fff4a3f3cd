// PNG dumps of views through libavcodec's PNG encoder (frame_dump.h).
#include "extract/frame_dump.h"
#include "extract/ffmpeg_handles.h"

extern "C" {
#include <libavcodec/avcodec.h>
}

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "common/check.h"

namespace evl {

using namespace ffmpeg;  // the RAII deleters of ffmpeg_handles.h

void write_png(const torch::Tensor& rgb_in, const std::string& path) {
  TORCH_CHECK(rgb_in.dim() == 3 && rgb_in.size(2) == 3 && rgb_in.scalar_type() == torch::kUInt8,
              "write_png: expected (H,W,3) uint8, got ", rgb_in.sizes());
  auto rgb = rgb_in.contiguous();
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
  EVL_CHECK(codec, "png '", path, "': FFmpeg has no PNG encoder");
  std::unique_ptr<AVCodecContext, CodecCloser> ctx(avcodec_alloc_context3(codec));
  ctx->width = static_cast<int>(rgb.size(1));
  ctx->height = static_cast<int>(rgb.size(0));
  ctx->pix_fmt = AV_PIX_FMT_RGB24;
  ctx->time_base = AVRational{1, 1};
  EVL_CHECK(avcodec_open2(ctx.get(), codec, nullptr) >= 0, "png '", path, "': cannot open encoder");
  std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
  frame->width = ctx->width;
  frame->height = ctx->height;
  frame->format = AV_PIX_FMT_RGB24;
  EVL_CHECK(av_frame_get_buffer(frame.get(), 0) >= 0, "png '", path, "': out of memory");
  const uint8_t* src = rgb.data_ptr<uint8_t>();
  for (int y = 0; y < ctx->height; ++y)
    std::copy(src + y * 3 * ctx->width, src + (y + 1) * 3 * ctx->width,
              frame->data[0] + y * frame->linesize[0]);
  std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
  EVL_CHECK(avcodec_send_frame(ctx.get(), frame.get()) >= 0 &&
                avcodec_send_frame(ctx.get(), nullptr) >= 0 &&
                avcodec_receive_packet(ctx.get(), pkt.get()) >= 0,
            "png '", path, "': encoding failed");
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(pkt->data), pkt->size);
  EVL_CHECK(out.good(), "png '", path, "': cannot write");
}

void dump_view_png(const ClipView& view, const SamplingConfig& cfg, const std::string& dir,
                   const std::string& prefix) {
  TORCH_CHECK(view.pixels.dim() == 4 && view.pixels.size(1) == 3,
              "dump_view_png: expected (T,3,S,S), got ", view.pixels.sizes());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EVL_CHECK(!ec, "frame dump dir '", dir, "': ", ec.message());
  auto mean =
      torch::tensor({cfg.mean[0], cfg.mean[1], cfg.mean[2]}, torch::kFloat32).view({1, 3, 1, 1});
  auto std =
      torch::tensor({cfg.std[0], cfg.std[1], cfg.std[2]}, torch::kFloat32).view({1, 3, 1, 1});
  auto rgb = ((view.pixels * std + mean) * 255)
                 .round()
                 .clamp(0, 255)
                 .to(torch::kUInt8)
                 .permute({0, 2, 3, 1});
  for (int64_t t = 0; t < rgb.size(0); ++t) {
    char name[64];
    std::snprintf(name, sizeof(name), "_v%02d_f%02lld.png", view.view_index,
                  static_cast<long long>(t));
    write_png(rgb[t], (std::filesystem::path(dir) / (prefix + name)).string());
  }
}

}  // namespace evl
