// evl_predict: top-k classes of video files in one process (decode, CLIP ViT,
// EVL head; no cache). Views and preprocessing are those of evl_extract.
// Exit status 1 when any video failed (the others are still reported).
#include <cstdio>
#include <iostream>

#include "common/check.h"
#include "common/cli.h"
#include "common/log.h"
#include "evaluate/predictor.h"
#include "extract/view_settings.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  const evl::cli::Tool tool{
      "evl_predict", "classify video files with a CLIP backbone and an EVL head (no cache)",
      "evl_predict --backbone FILE --checkpoint FILE --video FILE... [--labels names.txt]"};
  evl::PredictConfig c;
  po::options_description o("options");
  o.add_options()("backbone", po::value(&c.backbone), "CLIP weights (.pt or .safetensors)")(
      "checkpoint", po::value(&c.checkpoint), "evl checkpoint or official EVL .pth")(
      "video", po::value(&c.videos)->multitoken(), "video files")(
      "labels", po::value(&c.labels), "class names, one per line (K lines)")(
      "topk", po::value(&c.topk)->default_value(c.topk), "classes to print per video")(
      "json", po::bool_switch(&c.json), "print one JSON document instead of text");
  po::options_description v(
      "views (default: the checkpoint's recorded cache, else 8 frames x 16, 1x1 views)");
  evl::add_view_flags(v, v, c.views, evl::ViewTool::kPredict);
  po::options_description e("execution");
  e.add_options()("device", po::value(&c.device)->default_value(c.device), "cpu | cuda | cuda:N")(
      "batch-size", po::value(&c.batch_size)->default_value(c.batch_size),
      "views per backbone forward")("threads", po::value(&c.threads)->default_value(c.threads),
                                    "torch threads (0: default)");
  o.add(v).add(e);
  po::positional_options_description pos;
  pos.add("video", -1);
  return evl::cli::run(tool, [&] {
    po::variables_map vm;
    if (!evl::cli::parse(tool, argc, argv, o, vm, &pos)) return evl::cli::kExitOk;
    EVL_CHECK_USAGE(!c.videos.empty(), "give at least one --video FILE");
    c.given = evl::given_view_flags(vm, evl::ViewTool::kPredict);
    evl::Predictor predictor(c);
    evl::log::info("evl_predict: ", predictor.describe());
    nlohmann::json out = {{"checkpoint", c.checkpoint}, {"backbone", c.backbone}};
    out["videos"] = nlohmann::json::array();
    std::vector<std::string> failed;
    for (const auto& video : c.videos) {
      try {
        const auto p = predictor.predict(video);
        const auto j = evl::prediction_to_json(p, c.topk, predictor.class_names());
        out["videos"].push_back(j);
        if (c.json) continue;
        std::printf("%s (%lld views)\n", video.c_str(), static_cast<long long>(p.views));
        int rank = 1;
        for (const auto& t : j["top"])
          std::printf("  %d. %-24s %.4f\n", rank++,
                      t.contains("name") ? t["name"].get<std::string>().c_str()
                                         : std::to_string(t["class"].get<int64_t>()).c_str(),
                      t["probability"].get<double>());
      } catch (const evl::Error& err) {  // report, go on with the other videos
        std::fprintf(stderr, "error: %s\n", err.what());
        out["videos"].push_back({{"video", video}, {"error", err.what()}});
        failed.push_back(video);
      }
    }
    if (c.json) std::cout << out.dump(2) << "\n";
    EVL_CHECK(failed.empty(), failed.size(), " of ", c.videos.size(),
              " videos could not be classified, first '", failed.front(), "'");
    return evl::cli::kExitOk;
  });
}
