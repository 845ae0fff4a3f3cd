// Reads files written by Python's torch.save (zip archive, pickle protocol 2,
// the default) into a c10::IValue, for the subset torch.save emits: dicts
// (plain and collections.OrderedDict, any number of keys), lists, tuples,
// ints, floats, strings, bools, None and tensors (_rebuild_tensor_v2,
// _rebuild_parameter). It exists because LibTorch 1.13's pickle_load rejects
// OrderedDicts and one-key dicts (docs/OFFICIAL_EVL.md §5.3), i.e. every official
// EVL checkpoint. It does not run arbitrary pickle code: any other global is
// an error.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <string>

namespace caffe2::serialize {
class PyTorchStreamReader;
}

namespace evl {

// Dicts come back as GenericDict (insertion order kept), lists as GenericList,
// tuples as Tuple, tensors as CPU tensors. Throws evl::Error naming `path`
// and the problem (not a zip, no data.pkl, unsupported opcode or global,
// truncated pickle, missing storage record).
c10::IValue read_torch_file(const std::string& path);

// The unpickler alone: `pickle` (size bytes, the archive's data.pkl) read with
// storages taken from `archive`'s data/<key> records; `where` names the file
// in errors. Throws evl::Error as read_torch_file does, for any bytes (the
// fuzz target tests/fuzz/pickle_fuzz.cpp feeds it arbitrary ones).
c10::IValue read_torch_pickle(const void* pickle, size_t size,
                              caffe2::serialize::PyTorchStreamReader& archive,
                              const std::string& where);

}  // namespace evl
