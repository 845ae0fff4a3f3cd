// Compute precisions: one enum, one parser, and what "auto" means, for the
// frozen backbone (evl_extract --precision, evl_train_head --backbone-precision,
// evl_predict --precision) and for head training (evl_train_head --precision).
// docs/ARCHITECTURE.md §7 explains the choices and the CPU kinds.
//
// auto, per use and device:
//   backbone, CUDA: fp16 (the official frozen-fp16 backbone)
//   backbone, CPU:  fp32 (features are made once and cached: accuracy first)
//   training, CUDA: fp16 autocast + dynamic loss scaling (the official recipe)
//   training, CPU:  bf16 autocast where the CPU has native bf16 instructions
//                   (avx512_bf16 or amx_bf16), fp32 everywhere else
// Explicit choices: fp16 needs CUDA; a bf16 backbone needs the CPU. An explicit
// bf16 on a CPU without AVX-512 is allowed but warned about: LibTorch 1.13's
// bf16 GEMMs then take a scalar fallback, ~100x slower than fp32.
// No LibTorch here: the device is passed as "is it CUDA".
#pragma once

#include <string>

namespace evl {

enum class Precision { kFp32, kBf16, kFp16 };
const char* to_string(Precision p);  // "fp32" | "bf16" | "fp16"
// "fp32" | "bf16" | "fp16" (not "auto"). Throws UsageError naming `flag`.
Precision parse_precision(const std::string& name, const std::string& flag = "--precision");

// How this CPU runs LibTorch 1.13's bf16 GEMMs (measured in docs/PERFORMANCE.md).
enum class CpuBf16 {
  kNative,    // avx512_bf16 or amx_bf16: oneDNN's bf16 kernels, faster than fp32
  kEmulated,  // AVX-512 (bw/vl/dq) without bf16 instructions: oneDNN converts to fp32
  kSlow,      // no AVX-512: LibTorch's scalar fallback, ~100x slower than fp32
};
// From CPUID (what the code actually runs on, also under an emulator), once.
CpuBf16 cpu_bf16_support();
const char* to_string(CpuBf16 kind);  // "native" | "emulated" | "slow"
// The CPU's flags that decide the figures above, e.g. "avx2 avx512f avx512_bf16 amx_bf16"
// (those present among avx2, avx512f, avx512bw, avx512_bf16, amx_bf16, amx_tile).
std::string cpu_precision_flags();

enum class PrecisionUse { kBackbone, kTraining };

struct PrecisionChoice {
  Precision precision = Precision::kFp32;
  std::string warning;  // non-empty: tell the user (the caller logs it)
};

// Resolves `name` ("auto" | "fp32" | "bf16" | "fp16") for `use` on a CUDA or
// CPU device whose bf16 support is `cpu` (ignored on CUDA), by the rules at the
// top of this file. Throws UsageError naming `flag` for an unknown name or a
// precision the device cannot run.
PrecisionChoice resolve_precision(const std::string& name, PrecisionUse use, bool cuda, CpuBf16 cpu,
                                  const std::string& flag);
// The same on this machine's CPU, logging the warning (if any) with log::warn,
// and, for training's "auto" on a CPU, which precision it picked and why.
Precision resolve_precision(const std::string& name, PrecisionUse use, bool cuda,
                            const std::string& flag);

}  // namespace evl
