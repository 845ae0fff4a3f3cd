// The precision rules of common/precision.h, for every kind of CPU (the rules
// are a pure function of the CPU kind, so both kinds are tested on any machine)
// and on this machine's CPUID.
#include "common/precision.h"

#include <gtest/gtest.h>

#include "common/check.h"

namespace evl {
namespace {

Precision pick(const std::string& name, PrecisionUse use, bool cuda, CpuBf16 cpu) {
  return resolve_precision(name, use, cuda, cpu, "--precision").precision;
}

TEST(Precision, AutoPerUseDeviceAndCpuKind) {
  for (CpuBf16 cpu : {CpuBf16::kNative, CpuBf16::kEmulated, CpuBf16::kSlow}) {
    SCOPED_TRACE(to_string(cpu));
    // The backbone: fp16 on CUDA (the official frozen fp16), fp32 on any CPU.
    EXPECT_EQ(pick("auto", PrecisionUse::kBackbone, true, cpu), Precision::kFp16);
    EXPECT_EQ(pick("auto", PrecisionUse::kBackbone, false, cpu), Precision::kFp32);
    // Training: fp16 + loss scaling on CUDA; on CPU bf16 only with native bf16.
    EXPECT_EQ(pick("auto", PrecisionUse::kTraining, true, cpu), Precision::kFp16);
    EXPECT_EQ(pick("auto", PrecisionUse::kTraining, false, cpu),
              cpu == CpuBf16::kNative ? Precision::kBf16 : Precision::kFp32);
    // auto never warns.
    EXPECT_TRUE(resolve_precision("auto", PrecisionUse::kTraining, false, cpu, "--precision")
                    .warning.empty());
  }
}

TEST(Precision, ExplicitChoicesDeviceRulesAndWarnings) {
  for (PrecisionUse use : {PrecisionUse::kBackbone, PrecisionUse::kTraining}) {
    EXPECT_EQ(pick("fp32", use, false, CpuBf16::kSlow), Precision::kFp32);
    EXPECT_EQ(pick("fp32", use, true, CpuBf16::kSlow), Precision::kFp32);
    EXPECT_EQ(pick("bf16", use, false, CpuBf16::kNative), Precision::kBf16);
    EXPECT_EQ(pick("fp16", use, true, CpuBf16::kNative), Precision::kFp16);
    EXPECT_THROW(pick("fp16", use, false, CpuBf16::kNative), UsageError);  // fp16 needs CUDA
    EXPECT_THROW(pick("half", use, false, CpuBf16::kNative), UsageError);
    EXPECT_THROW(pick("", use, false, CpuBf16::kNative), UsageError);
  }
  EXPECT_THROW(pick("bf16", PrecisionUse::kBackbone, true, CpuBf16::kNative), UsageError);
  EXPECT_EQ(pick("bf16", PrecisionUse::kTraining, true, CpuBf16::kNative), Precision::kBf16);
  // An explicit bf16 on a CPU without AVX-512 runs, with a warning naming the flag and the fix.
  const auto slow =
      resolve_precision("bf16", PrecisionUse::kTraining, false, CpuBf16::kSlow, "--precision");
  EXPECT_EQ(slow.precision, Precision::kBf16);
  EXPECT_NE(slow.warning.find("--precision"), std::string::npos) << slow.warning;
  EXPECT_NE(slow.warning.find("100x slower"), std::string::npos) << slow.warning;
  for (CpuBf16 cpu : {CpuBf16::kNative, CpuBf16::kEmulated})
    EXPECT_TRUE(
        resolve_precision("bf16", PrecisionUse::kBackbone, false, cpu, "--backbone-precision")
            .warning.empty());
  // The flag named in errors is the caller's.
  try {
    resolve_precision("fp64", PrecisionUse::kBackbone, false, CpuBf16::kNative,
                      "--backbone-precision");
    FAIL() << "fp64 accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--backbone-precision 'fp64'"), std::string::npos)
        << e.what();
  }
}

TEST(Precision, NamesRoundTrip) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16})
    EXPECT_EQ(parse_precision(to_string(p)), p);
  EXPECT_STREQ(to_string(CpuBf16::kNative), "native");
  EXPECT_STREQ(to_string(CpuBf16::kSlow), "slow");
}

TEST(Precision, ThisCpuIsClassifiedFromItsFlags) {
  const std::string flags = " " + cpu_precision_flags() + " ";
  auto has = [&](const char* f) {
    return flags.find(std::string(" ") + f + " ") != std::string::npos;
  };
  const CpuBf16 kind = cpu_bf16_support();
  EXPECT_EQ(kind == CpuBf16::kNative, has("avx512_bf16") || has("amx_bf16")) << flags;
  if (kind == CpuBf16::kSlow) {
    EXPECT_FALSE(has("avx512bw")) << flags;
  } else {
    EXPECT_TRUE(has("avx512f")) << flags;
  }
}

}  // namespace
}  // namespace evl
