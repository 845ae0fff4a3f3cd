// VideoReader: a demux-only scan builds the presentation-order index from packet
// timestamps (sorted pts = presentation order); reads then seek to a known
// keyframe or decode through by packet cost, map every output frame to its
// index by pts, and check that indices only increase and no wanted frame is
// lost. A run that goes wrong after a seek is retried without frame skipping,
// then from earlier keyframes; only a run from the start proves a truncated
// tail. Streams whose timestamps cannot be trusted (missing or repeated pts)
// decode from the start, indexed as the official loader: dict keyed by pts.
#include "extract/video_reader.h"
#include "extract/ffmpeg_handles.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libswscale/swscale.h>
}

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_map>

#include "common/log.h"

namespace evl {
namespace {

using namespace ffmpeg;  // the RAII deleters of ffmpeg_handles.h

using FormatPtr = std::unique_ptr<AVFormatContext, FormatCloser>;
using CodecPtr = std::unique_ptr<AVCodecContext, CodecCloser>;
using FramePtr = std::unique_ptr<AVFrame, FrameFree>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFree>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFree>;

std::string av_error(int rc) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(rc, buf, sizeof(buf));
  return buf;
}

// Internal signal: timestamps are not trustworthy; switch to sequential mode.
struct NeedSequential {};
// Internal signal: a forward run lost frames (dropped, misordered, early end).
struct RunFailed {
  bool at_end;      // the stream ended before the target came out
  const char* why;  // for the debug log
};

// Cost of a seek in packets (demuxer seek + decoder flush + reorder refill).
constexpr int64_t kSeekCostPackets = 4;

}  // namespace

struct VideoReader::Impl {
  std::string path;
  VideoReaderOptions opt;
  VideoInfo info;
  FormatPtr fmt;
  CodecPtr dec;
  FramePtr frame{av_frame_alloc()};
  PacketPtr pkt{av_packet_alloc()};
  SwsPtr sws;
  int stream = -1;
  int64_t frames_decoded = 0;

  // Packets in decode order (zero-size packets skipped).
  std::vector<int64_t> pkt_pts, pkt_dts;
  std::vector<int64_t> keys;  // decode positions of keyframe packets
  // Presentation index -> pts / decode position; pts -> presentation index.
  std::vector<int64_t> idx_pts, idx_dpos;
  std::unordered_map<int64_t, int64_t> pts_to_idx;
  std::vector<double> times;
  bool sequential = false;
  std::vector<int64_t> seq_out_to_idx;  // output position -> index, -1 if dropped

  // Decoder state in pts mode. After a seek to keyframe K only frames with
  // index >= index(K) are trusted (earlier ones are open-GOP leading pictures),
  // and trusted frames must come out as consecutive indices, else the
  // timestamps are not usable and the reader switches to sequential mode.
  bool positioned = false;  // the decoder continues a forward run
  // Packets of unwanted frames are decoded with AVDISCARD_NONREF: frames no
  // other frame references are skipped (they change no other frame's pixels),
  // so trusted output indices only increase. Any anomaly turns this off for
  // the reader's lifetime and the run is retried decoding every frame.
  bool skip_nonref = true;
  int64_t next_dpos = 0;  // decode position of the next packet to send
  int64_t first_idx = 0;  // index of the keyframe the run started from
  int64_t last_idx = -1;  // last trusted index output in this run

  void open() {
    // Generated pts as PyAV (the official loader) opens files: containers that
    // store only dts (AVI with B-frames) then give every packet a pts.
    // Only regular files: opening a FIFO (or a device) blocks until a writer
    // appears, i.e. forever, and no later signal handler can end the open.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      throw VideoError(path, str("cannot open: ", std::strerror(errno)));
    if (!S_ISREG(st.st_mode))
      throw VideoError(path, S_ISDIR(st.st_mode) ? "is a directory, not a video file"
                                                 : "is not a regular file (a FIFO, socket or "
                                                   "device?); only regular video files are read");
    AVFormatContext* raw = avformat_alloc_context();
    if (!raw) throw VideoError(path, "out of memory");
    raw->flags |= AVFMT_FLAG_GENPTS;
    int rc = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
    if (rc < 0) throw VideoError(path, "cannot open: " + av_error(rc));
    fmt.reset(raw);
    rc = avformat_find_stream_info(fmt.get(), nullptr);
    if (rc < 0) throw VideoError(path, "cannot read stream info: " + av_error(rc));
    std::string demuxer = fmt->iformat->name;
    if (demuxer == "image2" ||
        (demuxer.size() > 5 && demuxer.substr(demuxer.size() - 5) == "_pipe"))
      throw VideoError(path, "is a still image (" + demuxer + "), not a video");
    stream = -1;
    for (unsigned i = 0; i < fmt->nb_streams; ++i) {
      const AVStream* s = fmt->streams[i];
      if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
          !(s->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        stream = static_cast<int>(i);
        break;
      }
    }
    if (stream < 0) throw VideoError(path, "no video stream (audio-only or data file?)");
    for (unsigned i = 0; i < fmt->nb_streams; ++i)
      if (static_cast<int>(i) != stream) fmt->streams[i]->discard = AVDISCARD_ALL;
    const AVCodecParameters* par = fmt->streams[stream]->codecpar;
    const AVCodec* codec = avcodec_find_decoder(par->codec_id);
    if (!codec)
      throw VideoError(path, str("no decoder for codec '", avcodec_get_name(par->codec_id), "'"));
    if (par->width <= 0 || par->height <= 0 || int64_t{par->width} * par->height > opt.max_pixels)
      throw VideoError(path, str("absurd frame dimensions ", par->width, "x", par->height));
    dec.reset(avcodec_alloc_context3(codec));
    avcodec_parameters_to_context(dec.get(), par);
    dec->thread_count = opt.threads;
    dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    rc = avcodec_open2(dec.get(), codec, nullptr);
    if (rc < 0) throw VideoError(path, "cannot open decoder: " + av_error(rc));
    info.codec = codec->name;
  }

  // Reads the next packet of the video stream into pkt; false at end of file.
  bool read_packet() {
    for (;;) {
      av_packet_unref(pkt.get());
      int rc = av_read_frame(fmt.get(), pkt.get());
      if (rc < 0) return false;  // EOF or a read error past which nothing is usable
      if (pkt->stream_index == stream && pkt->size > 0) return true;
    }
  }

  // Sends pkt (or a flush when p == nullptr) and hands every decoded frame to f.
  template <typename F>
  void decode(AVPacket* p, F&& f) {
    int rc = avcodec_send_packet(dec.get(), p);
    if (rc < 0 && rc != AVERROR_EOF)
      log::debug("video '", path, "': skipping a packet: ", av_error(rc));
    for (;;) {
      rc = avcodec_receive_frame(dec.get(), frame.get());
      if (rc < 0) break;  // EAGAIN, EOF, or a decode error on this packet
      ++frames_decoded;
      f(frame.get());
      av_frame_unref(frame.get());
    }
  }

  static int64_t frame_pts(const AVFrame* f) {
    return f->pts != AV_NOPTS_VALUE ? f->pts : f->best_effort_timestamp;
  }

  void scan() {
    const AVStream* st = fmt->streams[stream];
    bool trusted = true;
    while (read_packet()) {
      if (pkt->flags & AV_PKT_FLAG_KEY) keys.push_back(static_cast<int64_t>(pkt_pts.size()));
      if (pkt->pts == AV_NOPTS_VALUE) trusted = false;
      pkt_pts.push_back(pkt->pts);
      pkt_dts.push_back(pkt->dts);
    }
    if (pkt_pts.empty()) throw VideoError(path, "no video packets");
    warn_if_short(static_cast<int64_t>(pkt_pts.size()), "packets are readable");
    std::vector<int64_t> order(pkt_pts.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    if (trusted) {
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return pkt_pts[a] < pkt_pts[b]; });
      for (size_t i = 1; i < order.size(); ++i)
        if (pkt_pts[order[i]] == pkt_pts[order[i - 1]]) trusted = false;
    }
    // Containers without real presentation times (AVI) give pts == dts; with
    // B-frames those pts are not the frames' presentation order.
    bool pts_is_dts = true;
    for (size_t i = 0; i < pkt_pts.size() && pts_is_dts; ++i) pts_is_dts = pkt_pts[i] == pkt_dts[i];
    if (pts_is_dts && st->codecpar->video_delay > 0) trusted = false;
    if (!trusted || keys.empty() || keys.front() != 0) throw NeedSequential{};
    idx_dpos = order;
    for (size_t i = 0; i < order.size(); ++i) {
      idx_pts.push_back(pkt_pts[order[i]]);
      pts_to_idx[pkt_pts[order[i]]] = static_cast<int64_t>(i);
    }
    set_times(st->time_base);
  }

  // A fast-start MP4 cut short keeps its full index (moov) at the front, and
  // demuxing simply ends at the cut: the video reads as a shorter one. Say so,
  // once per reader, when fewer frames than the container declares are there.
  bool warned_short = false;
  void warn_if_short(int64_t have, const char* what) {
    // MP4/MOV only: there nb_frames counts the indexed samples exactly (AVI
    // counts zero-size "dropped frame" chunks too, which are no frames).
    const int64_t declared = fmt->streams[stream]->nb_frames;
    const bool mov = std::strstr(fmt->iformat->name, "mp4") != nullptr;
    if (warned_short || !mov || declared <= 0 || have >= declared) return;
    warned_short = true;
    log::warn("video '", path, "': the container declares ", declared, " frames, only ", have, " ",
              what, " (truncated file?); reading it as a ", have, "-frame video");
  }

  void set_times(AVRational tb) {
    times.clear();
    for (int64_t p : idx_pts)
      times.push_back(static_cast<double>(p - idx_pts.front()) * av_q2d(tb));
    info.num_frames = static_cast<int64_t>(idx_pts.size());
  }

  // Reopens the file so the next packet is the first one (works for every demuxer).
  void rewind() {
    sws.reset();
    dec.reset();
    fmt.reset();
    open();
    positioned = false;
  }

  // Decodes every frame from the start, indexing as the official loader does.
  void build_sequential_index() {
    sequential = true;
    rewind();
    std::vector<int64_t> out_pts;
    auto on = [&](const AVFrame* f) {
      int64_t p = frame_pts(f);
      out_pts.push_back(p == AV_NOPTS_VALUE ? static_cast<int64_t>(out_pts.size()) : p);
    };
    while (read_packet()) decode(pkt.get(), on);
    decode(nullptr, on);
    if (out_pts.empty()) throw VideoError(path, "no decodable video frames");
    warn_if_short(static_cast<int64_t>(out_pts.size()), "decode");
    std::map<int64_t, int64_t> last;  // pts -> last output position (dict semantics)
    for (size_t o = 0; o < out_pts.size(); ++o) last[out_pts[o]] = static_cast<int64_t>(o);
    seq_out_to_idx.assign(out_pts.size(), -1);
    idx_pts.clear();
    for (const auto& [p, o] : last) {
      seq_out_to_idx[o] = static_cast<int64_t>(idx_pts.size());
      idx_pts.push_back(p);
    }
    set_times(fmt->streams[stream]->time_base);
    positioned = false;
  }

  // RGB24 exactly as PyAV's to_ndarray('rgb24') (the official loader): a
  // cached SWS_BILINEAR context with default colour details, into a frame
  // allocated like av_image_alloc(align=16) (swscale's SIMD paths depend on
  // alignment, so the destination layout changes rounding), rows then packed.
  torch::Tensor convert(const AVFrame* f) {
    const AVCodecParameters* par = fmt->streams[stream]->codecpar;
    if (f->width != par->width || f->height != par->height)
      throw VideoError(path, str("frame size changes mid-stream: ", f->width, "x", f->height,
                                 " after ", par->width, "x", par->height));
    sws.reset(sws_getCachedContext(sws.release(), f->width, f->height,
                                   static_cast<AVPixelFormat>(f->format), f->width, f->height,
                                   AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr, nullptr));
    if (!sws) throw VideoError(path, "cannot convert pixel format to RGB24");
    const int64_t row = 3 * int64_t{f->width};
    const int64_t line = FFALIGN(3 * FFALIGN(int64_t{f->width}, 8), 16);
    // Slack after the last line: SIMD stores may run past the end of a line.
    auto buf = torch::empty({f->height * line + 64}, torch::kUInt8);
    EVL_CHECK(reinterpret_cast<uintptr_t>(buf.data_ptr()) % 16 == 0, "unaligned RGB buffer");
    uint8_t* dst[4] = {buf.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {static_cast<int>(line), 0, 0, 0};
    sws_scale(sws.get(), f->data, f->linesize, 0, f->height, dst, dst_stride);
    auto out = buf.narrow(0, 0, f->height * line).view({f->height, line}).narrow(1, 0, row);
    out = out.reshape({f->height, f->width, 3});
    if (info.rotation == 0) return out.contiguous();
    return torch::rot90(out, -info.rotation / 90, {0, 1}).contiguous();
  }

  // Starts a forward run at keyframe position `key` or an earlier keyframe.
  // Leaves the first packet of the run in pkt (not yet sent).
  void seek_to(int64_t key) {
    if (key > 0 && opt.allow_seek) {
      for (int64_t ts : {pkt_pts[key], pkt_dts[key]}) {
        if (ts == AV_NOPTS_VALUE) continue;
        if (av_seek_frame(fmt.get(), stream, ts, AVSEEK_FLAG_BACKWARD) < 0) continue;
        avcodec_flush_buffers(dec.get());
        if (!read_packet()) continue;
        auto it = pts_to_idx.find(pkt->pts);
        if (it == pts_to_idx.end()) continue;
        int64_t landed = idx_dpos[it->second];
        if (landed > key || pkt_pts[landed] > pkt_pts[key] ||
            !std::binary_search(keys.begin(), keys.end(), landed))
          continue;
        start_run(landed, it->second);
        return;
      }
    }
    rewind();
    if (!read_packet()) throw VideoError(path, "cannot read a packet after rewinding");
    start_run(0, pts_to_idx.at(pkt_pts[0]));
  }

  void start_run(int64_t dpos, int64_t idx) {
    positioned = true;
    next_dpos = dpos;
    first_idx = idx;
    last_idx = idx - 1;
  }

  // Handles one decoded frame of a forward run.
  void accept(const AVFrame* f, const std::vector<char>& wanted,
              std::unordered_map<int64_t, torch::Tensor>& got) {
    auto it = pts_to_idx.find(frame_pts(f));
    if (it == pts_to_idx.end()) throw NeedSequential{};
    const int64_t idx = it->second;
    if (idx < first_idx) return;  // a leading picture of an open GOP: not decodable here
    if (idx <= last_idx) throw RunFailed{false, "repeated or misordered frame"};
    if (!skip_nonref && idx != last_idx + 1) throw RunFailed{false, "a frame was dropped"};
    for (int64_t i = last_idx + 1; i < idx; ++i)
      if (wanted[i] && !got.count(i)) throw RunFailed{false, "a wanted frame was lost"};
    last_idx = idx;
    if (wanted[idx] && !got.count(idx)) got.emplace(idx, convert(f));
  }

  // The last keyframe (decode position) from which index t decodes: at or
  // before t in decode order and not after it in presentation order.
  int64_t key_for(int64_t t) const {
    int64_t d = idx_dpos[t];
    auto it = std::upper_bound(keys.begin(), keys.end(), d);
    while (it != keys.begin()) {
      --it;
      if (pkt_pts[*it] <= idx_pts[t]) return *it;
    }
    return 0;
  }

  void truncate_to(int64_t n) {
    int64_t before = info.num_frames;
    idx_pts.resize(n);
    idx_dpos.resize(n);
    pts_to_idx.clear();
    for (int64_t i = 0; i < n; ++i) pts_to_idx[idx_pts[i]] = i;
    set_times(fmt->streams[stream]->time_base);
    log::warn("video '", path, "': only ", n, " of ", before,
              " indexed frames decode (truncated or damaged tail); treating it as shorter");
    throw FrameCountChanged(path, before, n);
  }

  // Sorted unique targets: each is reached by continuing the current forward
  // run or by seeking to its keyframe, whichever feeds fewer packets. A run
  // that started after a seek and then misses frames (a decoder may drop
  // frames after a flush, e.g. past an open-GOP keyframe) is retried from the
  // keyframe before it, and finally from the start; only a run from the start
  // proves a truncated tail or unusable timestamps.
  void read_pts_mode(const std::vector<int64_t>& targets, const std::vector<char>& wanted,
                     std::unordered_map<int64_t, torch::Tensor>& got) {
    auto on = [&](const AVFrame* f) { accept(f, wanted, got); };
    const int64_t call_start = positioned ? next_dpos : 0;
    for (int64_t t : targets) {
      if (got.count(t)) continue;
      const int64_t d = idx_dpos[t];
      int64_t key = opt.allow_seek ? key_for(t) : 0;
      // With skipping on, t's packet must have been sent during this call (as
      // a wanted frame) or not yet: an earlier call may have skipped it.
      const bool can_continue =
          positioned && t > last_idx && t >= first_idx && (!skip_nonref || d >= call_start);
      const int64_t cost_continue = can_continue ? std::max<int64_t>(0, d - next_dpos) : INT64_MAX;
      bool have_packet = false;
      if (!can_continue || d - key + kSeekCostPackets < cost_continue) {
        seek_to(key);
        have_packet = true;
      }
      for (;;) {
        bool failed = false, at_end = false;
        const char* why = "";
        try {
          if (t < first_idx) throw RunFailed{false, "landed after the target"};
          while (!got.count(t)) {
            if (!have_packet && !read_packet()) {
              decode(nullptr, on);  // drain; continuing needs a flush (a seek)
              positioned = false;
              if (got.count(t)) break;
              throw RunFailed{true, "the stream ended"};
            }
            have_packet = false;
            ++next_dpos;
            if (skip_nonref) {
              auto it = pts_to_idx.find(pkt->pts);
              const bool need = it == pts_to_idx.end() || wanted[it->second];
              dec->skip_frame = need ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
            }
            decode(pkt.get(), on);
          }
        } catch (const RunFailed& e) {
          failed = true;
          at_end = e.at_end;
          why = e.why;
        }
        if (failed && skip_nonref) {
          log::debug("video '", path, "': ", why, "; retrying frame ", t,
                     " without skipping frames");
          skip_nonref = false;
          dec->skip_frame = AVDISCARD_DEFAULT;
          seek_to(key);
          have_packet = true;
          continue;
        }
        if (!failed) break;
        const int64_t run_start = idx_dpos[first_idx];
        if (run_start == 0) {
          if (!at_end || last_idx < first_idx) throw NeedSequential{};
          truncate_to(last_idx + 1);  // a full run from the start ended early
        }
        auto it = std::lower_bound(keys.begin(), keys.end(), std::min(run_start, key));
        key = it == keys.begin() ? 0 : *std::prev(it);
        log::debug("video '", path, "': ", why, " after a seek; retrying frame ", t,
                   " from packet ", key);
        seek_to(key);
        have_packet = true;
      }
    }
  }

  std::vector<torch::Tensor> read(const std::vector<int64_t>& indices) {
    for (int64_t i : indices)
      if (i < 0 || i >= info.num_frames)
        throw VideoError(path, str("frame index ", i, " out of range [0, ", info.num_frames, ")"));
    std::vector<int64_t> targets(indices);
    std::sort(targets.begin(), targets.end());
    targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
    std::vector<char> wanted(info.num_frames, 0);
    for (int64_t t : targets) wanted[t] = 1;
    std::unordered_map<int64_t, torch::Tensor> got;
    if (!sequential) {
      try {
        read_pts_mode(targets, wanted, got);
      } catch (const NeedSequential&) {
        int64_t before = info.num_frames;
        log::debug("video '", path, "': timestamps not usable for seeking; decoding sequentially");
        build_sequential_index();
        if (info.num_frames != before) throw FrameCountChanged(path, before, info.num_frames);
        got.clear();
      }
    }
    if (sequential) {
      rewind();
      int64_t out = 0;
      auto on = [&](const AVFrame* f) {
        int64_t idx = out < static_cast<int64_t>(seq_out_to_idx.size()) ? seq_out_to_idx[out] : -1;
        ++out;
        if (idx >= 0 && wanted[idx] && !got.count(idx)) got.emplace(idx, convert(f));
      };
      while (got.size() < targets.size() && read_packet()) decode(pkt.get(), on);
      if (got.size() < targets.size()) decode(nullptr, on);
      if (got.size() < targets.size())
        throw VideoError(path, "decoding is not repeatable: frames missing on a second pass");
    }
    std::vector<torch::Tensor> result;
    result.reserve(indices.size());
    for (int64_t i : indices) result.push_back(got.at(i));
    return result;
  }
};

VideoReader::VideoReader(const std::string& path, const VideoReaderOptions& options)
    : impl_(std::make_unique<Impl>()) {
  namespace fs = std::filesystem;
  Impl& m = *impl_;
  m.path = path;
  m.opt = options;
  // FFmpeg's own lines (damaged macroblocks in common UCF-101 .avi files, ...)
  // would flood the progress display; they show with --verbose (log level debug).
  av_log_set_level(log::enabled(log::Level::kDebug) ? AV_LOG_INFO : AV_LOG_ERROR);
  std::error_code ec;
  if (!fs::exists(path, ec)) throw VideoError(path, "no such file");
  if (fs::is_directory(path, ec)) throw VideoError(path, "is a directory, not a video file");
  if (fs::is_regular_file(path, ec) && fs::file_size(path, ec) == 0)
    throw VideoError(path, "is empty (0 bytes)");
  m.open();
  const AVStream* st = m.fmt->streams[m.stream];
  int32_t* matrix =
      reinterpret_cast<int32_t*>(av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, nullptr));
  if (matrix) {
    double theta = -av_display_rotation_get(matrix);  // clockwise, as the ffmpeg CLI does
    m.info.rotation = ((static_cast<int>(std::lround(theta / 90.0)) % 4 + 4) % 4) * 90;
  }
  bool swap = m.info.rotation == 90 || m.info.rotation == 270;
  m.info.width = swap ? st->codecpar->height : st->codecpar->width;
  m.info.height = swap ? st->codecpar->width : st->codecpar->height;
  try {
    m.scan();
    // Decode the first frame now: proves the stream decodes and positions the decoder.
    std::vector<char> wanted(m.info.num_frames, 0);
    wanted[0] = 1;
    std::unordered_map<int64_t, torch::Tensor> got;
    m.read_pts_mode({0}, wanted, got);
  } catch (const NeedSequential&) {
    m.build_sequential_index();
  } catch (const FrameCountChanged&) {
    // Tail truncation found while checking frame 0: only possible for 1-frame files.
  }
  st = m.fmt->streams[m.stream];  // the context may have been reopened above
  AVRational rate = st->avg_frame_rate.num > 0 ? st->avg_frame_rate : st->r_frame_rate;
  m.info.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
  if (m.info.fps <= 0 && m.times.size() > 1 && m.times.back() > 0)
    m.info.fps = static_cast<double>(m.times.size() - 1) / m.times.back();
}

VideoReader::~VideoReader() = default;
VideoReader::VideoReader(VideoReader&&) noexcept = default;
VideoReader& VideoReader::operator=(VideoReader&&) noexcept = default;

const VideoInfo& VideoReader::info() const { return impl_->info; }
const std::string& VideoReader::path() const { return impl_->path; }
const std::vector<double>& VideoReader::frame_times() const { return impl_->times; }
int64_t VideoReader::frames_decoded() const { return impl_->frames_decoded; }
bool VideoReader::sequential() const { return impl_->sequential; }

std::vector<torch::Tensor> VideoReader::read_frames(const std::vector<int64_t>& indices) {
  return impl_->read(indices);
}

std::vector<torch::Tensor> VideoReader::read_all_frames(const std::vector<int64_t>& keep) {
  // Deliberately the simple path: decode everything, key by pts (last wins), sort.
  Impl& m = *impl_;
  auto pass = [&](const std::set<int64_t>* convert_pts) {
    m.rewind();
    std::map<int64_t, torch::Tensor> by_pts;
    int64_t out = 0;
    auto on = [&](const AVFrame* f) {
      int64_t p = Impl::frame_pts(f);
      p = p == AV_NOPTS_VALUE ? out : p;
      by_pts[p] = !convert_pts || convert_pts->count(p) ? m.convert(f) : torch::Tensor();
      ++out;
    };
    while (m.read_packet()) m.decode(m.pkt.get(), on);
    m.decode(nullptr, on);
    m.positioned = false;
    if (by_pts.empty()) throw VideoError(m.path, "no decodable video frames");
    return by_pts;
  };
  std::vector<torch::Tensor> frames;
  if (keep.empty()) {
    for (auto& [p, t] : pass(nullptr)) frames.push_back(std::move(t));
    return frames;
  }
  std::vector<int64_t> all_pts;
  const std::set<int64_t> none;
  for (auto& [p, t] : pass(&none)) all_pts.push_back(p);
  std::set<int64_t> wanted;
  for (int64_t i : keep) {
    if (i < 0 || i >= static_cast<int64_t>(all_pts.size()))
      throw VideoError(m.path, str("frame index ", i, " out of range [0, ", all_pts.size(), ")"));
    wanted.insert(all_pts[i]);
  }
  auto by_pts = pass(&wanted);
  for (int64_t i : keep) frames.push_back(by_pts.at(all_pts[i]));
  return frames;
}

int64_t count_decodable_frames(const std::string& path) {
  // Independent of VideoReader: plain demux + decode of every packet, frames
  // keyed by pts as the official loader's dict.
  AVFormatContext* raw = avformat_alloc_context();
  raw->flags |= AVFMT_FLAG_GENPTS;  // as PyAV
  if (avformat_open_input(&raw, path.c_str(), nullptr, nullptr) < 0)
    throw VideoError(path, "cannot open");
  FormatPtr fmt(raw);
  if (avformat_find_stream_info(fmt.get(), nullptr) < 0)
    throw VideoError(path, "cannot read stream info");
  const AVCodec* codec = nullptr;
  int stream = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  if (stream < 0 || !codec) throw VideoError(path, "no video stream");
  CodecPtr dec(avcodec_alloc_context3(codec));
  avcodec_parameters_to_context(dec.get(), fmt->streams[stream]->codecpar);
  if (avcodec_open2(dec.get(), codec, nullptr) < 0) throw VideoError(path, "cannot open decoder");
  PacketPtr pkt(av_packet_alloc());
  FramePtr frame(av_frame_alloc());
  std::set<int64_t> pts;
  int64_t out = 0;
  auto drain = [&] {
    while (avcodec_receive_frame(dec.get(), frame.get()) >= 0) {
      pts.insert(frame->pts != AV_NOPTS_VALUE ? frame->pts : INT64_MIN + out);
      ++out;
      av_frame_unref(frame.get());
    }
  };
  while (av_read_frame(fmt.get(), pkt.get()) >= 0) {
    if (pkt->stream_index == stream && pkt->size > 0) {
      avcodec_send_packet(dec.get(), pkt.get());
      drain();
    }
    av_packet_unref(pkt.get());
  }
  avcodec_send_packet(dec.get(), nullptr);
  drain();
  return static_cast<int64_t>(pts.size());
}

}  // namespace evl
