// Precision rules (precision.h). CPU features come from CPUID through GCC's
// __builtin_cpu_supports, which also checks that the OS saves the AVX-512 state.
#include "common/precision.h"

#if defined(__clang__)
#include <cpuid.h>
#endif

#include "common/check.h"
#include "common/log.h"

namespace evl {

const char* to_string(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
  }
  return "?";
}

Precision parse_precision(const std::string& name, const std::string& flag) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp16") return Precision::kFp16;
  EVL_THROW(UsageError, flag, " '", name, "': expected auto, fp32, bf16 or fp16");
}

// AMX: GCC's __builtin_cpu_supports knows it; clang 14 (the fuzz build,
// tests/fuzz/) does not, so there the CPUID bits (leaf 7, EDX 22 and 24) are read.
#if defined(__clang__)
static bool cpu_has_amx(int edx_bit) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> edx_bit) & 1u);
}
#define EVL_CPU_AMX_BF16 cpu_has_amx(22)
#define EVL_CPU_AMX_TILE cpu_has_amx(24)
#else
#define EVL_CPU_AMX_BF16 __builtin_cpu_supports("amx-bf16")
#define EVL_CPU_AMX_TILE __builtin_cpu_supports("amx-tile")
#endif

CpuBf16 cpu_bf16_support() {
  static const CpuBf16 kind = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16") || EVL_CPU_AMX_BF16) return CpuBf16::kNative;
    // LibTorch 1.13 routes bf16 matmuls to oneDNN when cpuinfo reports these three.
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
      return CpuBf16::kEmulated;
    return CpuBf16::kSlow;
  }();
  return kind;
}

const char* to_string(CpuBf16 kind) {
  switch (kind) {
    case CpuBf16::kNative:
      return "native";
    case CpuBf16::kEmulated:
      return "emulated";
    case CpuBf16::kSlow:
      return "slow";
  }
  return "?";
}

std::string cpu_precision_flags() {
  __builtin_cpu_init();
  std::string out;
  auto add = [&](bool has, const char* name) {
    if (has) out += (out.empty() ? "" : " ") + std::string(name);
  };
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  add(__builtin_cpu_supports("avx512bf16"), "avx512_bf16");
  add(EVL_CPU_AMX_BF16, "amx_bf16");
  add(EVL_CPU_AMX_TILE, "amx_tile");
  return out.empty() ? "none" : out;
}

PrecisionChoice resolve_precision(const std::string& name, PrecisionUse use, bool cuda, CpuBf16 cpu,
                                  const std::string& flag) {
  const bool training = use == PrecisionUse::kTraining;
  PrecisionChoice out;
  if (name == "auto") {
    if (cuda)
      out.precision = Precision::kFp16;
    else
      out.precision = training && cpu == CpuBf16::kNative ? Precision::kBf16 : Precision::kFp32;
    return out;
  }
  out.precision = parse_precision(name, flag);
  if (out.precision == Precision::kFp16)
    EVL_CHECK_USAGE(cuda, flag, " fp16 needs a CUDA device (on CPU use bf16 or fp32)");
  if (out.precision == Precision::kBf16 && cuda)
    EVL_CHECK_USAGE(training, flag,
                    " bf16: the bf16 backbone is for CPUs; on CUDA use fp16 (the official "
                    "frozen-fp16 backbone) or fp32");
  if (out.precision == Precision::kBf16 && !cuda && cpu == CpuBf16::kSlow)
    out.warning = str(flag,
                      " bf16: this CPU has no AVX-512, so LibTorch's bf16 matrix products take a "
                      "scalar fallback, about 100x slower than fp32; use ",
                      flag, " fp32 (or auto)");
  return out;
}

Precision resolve_precision(const std::string& name, PrecisionUse use, bool cuda,
                            const std::string& flag) {
  const PrecisionChoice c = resolve_precision(name, use, cuda, cpu_bf16_support(), flag);
  if (!c.warning.empty()) log::warn(c.warning);
  // The one machine-dependent choice of "auto": say which way it went, and why.
  if (name == "auto" && !cuda && use == PrecisionUse::kTraining)
    log::info(flag, " auto: ", to_string(c.precision), " (this CPU's bf16 is ",
              to_string(cpu_bf16_support()), "; flags: ", cpu_precision_flags(), ")");
  return c.precision;
}

}  // namespace evl
