// A small protocol-2 unpickler for torch.save archives (see the header). The
// archive is read with LibTorch's own PyTorchStreamReader; storages are the
// archive's data/<key> records, shared between the tensors that view them.
#include "train/pickle_reader.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "common/check.h"

namespace evl {

namespace {

const std::string kGlobalPrefix = "\x01global:";  // marks a GLOBAL on the stack

c10::ScalarType storage_dtype(const std::string& name, const std::string& path) {
  static const std::map<std::string, c10::ScalarType> kTypes = {
      {"torch.FloatStorage", torch::kFloat}, {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},   {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort}, {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},   {"torch.BoolStorage", torch::kBool}};
  auto it = kTypes.find(name);
  EVL_CHECK(it != kTypes.end(), "'", path, "': unsupported storage type '", name, "'");
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const std::string& path, caffe2::serialize::PyTorchStreamReader& archive,
            const uint8_t* data, size_t size)
      : path_(path), archive_(archive), p_(data), end_(data + size) {}

  c10::IValue run() {
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80:
          u8();
          break;  // PROTO
        case 0x95:
          read(8);
          break;  // FRAME
        case '}':
          push(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
          break;
        case ']':
          push(c10::impl::GenericList(c10::AnyType::get()));
          break;
        case ')':
          push(c10::ivalue::Tuple::create(std::vector<c10::IValue>{}));
          break;
        case '(':
          marks_.push_back(stack_.size());
          break;
        case 'X':
          push(str(le(4)));
          break;  // BINUNICODE
        case 0x8c:
          push(str(u8()));
          break;  // SHORT_BINUNICODE
        case 'T':
          push(str(le(4)));
          break;  // BINSTRING
        case 'U':
          push(str(u8()));
          break;  // SHORT_BINSTRING
        case 'J':
          push(static_cast<int64_t>(static_cast<int32_t>(le(4))));
          break;
        case 'K':
          push(static_cast<int64_t>(u8()));
          break;
        case 'M':
          push(static_cast<int64_t>(le(2)));
          break;
        case 0x8a:
          push(long1(u8()));
          break;
        case 'G':
          push(binfloat());
          break;
        case 0x88:
          push(true);
          break;
        case 0x89:
          push(false);
          break;
        case 'N':
          push(c10::IValue());
          break;
        case 'c': {
          const std::string module = line(), name = line();
          push(kGlobalPrefix + module + "." + name);
          break;
        }
        case 't':
          push(make_tuple(pop_mark()));
          break;
        case 0x85:
          push(tuple_of(1));
          break;
        case 0x86:
          push(tuple_of(2));
          break;
        case 0x87:
          push(tuple_of(3));
          break;
        case 'q':
          memo_[u8()] = top();
          break;
        case 'r':
          memo_[le(4)] = top();
          break;
        case 0x94:
          memo_[memo_.size()] = top();
          break;
        case 'h':
          push(memo(u8()));
          break;
        case 'j':
          push(memo(le(4)));
          break;
        case 'Q':
          push(persistent_load(pop()));
          break;
        case 'R': {
          auto args = pop();
          auto fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b':
          pop();
          break;  // BUILD: only OrderedDict's _metadata reaches here
        case 's': {
          auto value = pop();
          auto key = pop();
          check_key(key);
          auto dict = dict_at_top("SETITEM");
          insert_into(top(), value);
          dict.insert_or_assign(std::move(key), std::move(value));
          break;
        }
        case 'u': {
          auto items = pop_mark();
          EVL_CHECK(items.size() % 2 == 0, where(), "SETITEMS with an odd number of items");
          auto dict = dict_at_top("SETITEMS");
          for (size_t i = 0; i < items.size(); i += 2) {
            check_key(items[i]);
            insert_into(top(), items[i + 1]);
            dict.insert_or_assign(items[i], items[i + 1]);
          }
          break;
        }
        case 'a': {
          auto value = pop();
          auto list = list_at_top("APPEND");
          insert_into(top(), value);
          list.push_back(std::move(value));
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto list = list_at_top("APPENDS");
          for (auto& v : items) {
            insert_into(top(), v);
            list.push_back(std::move(v));
          }
          break;
        }
        case '.':
          EVL_CHECK(stack_.size() == 1, where(), "pickle ended with ", stack_.size(),
                    " values on the stack");
          return stack_.back();
        default:
          EVL_THROW(Error, where(), "unsupported pickle opcode 0x", std::hex, int(op),
                    " (only what torch.save writes with protocol 2 is read)");
      }
    }
  }

 private:
  std::string where() const {
    return ::evl::str("'", path_, "': data.pkl, ", end_ - p_, " bytes before its end: ");
  }
  const uint8_t* read(size_t n) {
    EVL_CHECK(static_cast<size_t>(end_ - p_) >= n, "'", path_, "': data.pkl is truncated");
    const uint8_t* at = p_;
    p_ += n;
    return at;
  }
  uint8_t u8() { return *read(1); }
  uint32_t le(size_t n) {
    const uint8_t* b = read(n);
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint32_t>(b[i]) << (8 * i);
    return v;
  }
  int64_t long1(size_t n) {
    EVL_CHECK(n <= 8, "'", path_, "': integer of ", n, " bytes is too large");
    const uint8_t* b = read(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(b[i]) << (8 * i);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }
  double binfloat() {
    const uint8_t* b = read(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];  // big-endian
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  std::string str(size_t n) {
    const uint8_t* b = read(n);
    return std::string(reinterpret_cast<const char*>(b), n);
  }
  std::string line() {
    std::string s;
    for (char ch; (ch = static_cast<char>(u8())) != '\n';) s += ch;
    return s;
  }
  void push(c10::IValue v) { stack_.push_back(std::move(v)); }
  c10::IValue& top() {
    EVL_CHECK(!stack_.empty(), "'", path_, "': malformed pickle (empty stack)");
    return stack_.back();
  }
  c10::IValue pop() {
    auto v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<c10::IValue> pop_mark() {
    EVL_CHECK(!marks_.empty() && marks_.back() <= stack_.size(), "'", path_,
              "': malformed pickle (no MARK)");
    std::vector<c10::IValue> items(stack_.begin() + static_cast<long>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  c10::IValue tuple_of(size_t n) {
    EVL_CHECK(stack_.size() >= n, "'", path_, "': malformed pickle (short TUPLE)");
    std::vector<c10::IValue> items(stack_.end() - static_cast<long>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return make_tuple(std::move(items));
  }
  static bool is_container(const c10::IValue& v) {
    return v.isGenericDict() || v.isList() || v.isTuple();
  }
  int depth_of(const c10::IValue& v) const {
    if (!is_container(v)) return 0;
    auto it = depth_.find(v.internalToPointer());
    return it == depth_.end() ? 1 : it->second;
  }
  // Containers form a tree (or a DAG, through the memo), never a cycle, and
  // nest at most kMaxDepth deep: a container is frozen once it is placed in
  // another (torch.save's pickles fill a dict or list before that), so its
  // depth is known when it is placed. A cycle would leak and send any walk
  // over the checkpoint round forever; a deep chain overflows the stack in
  // LibTorch's recursive destructors.
  static constexpr int kMaxDepth = 100;
  void insert_into(const c10::IValue& target, const c10::IValue& value) {
    const void* t = target.internalToPointer();
    EVL_CHECK(!owned_.count(t), where(),
              "a dict or list is filled after it was placed in another (a recursive pickle?)");
    if (!is_container(value)) return;
    const void* v = value.internalToPointer();
    EVL_CHECK(v != t, where(), "a dict or list contains itself");
    own(value);
    const int d = depth_of(value) + 1;
    EVL_CHECK(d <= kMaxDepth, where(), "containers nested deeper than ", kMaxDepth);
    depth_[t] = std::max(depth_of(target), d);
    keep_.push_back(target);
  }
  void own(const c10::IValue& value) {
    owned_.insert(value.internalToPointer());
    keep_.push_back(value);  // so that no address in owned_/depth_ is reused
  }
  c10::IValue make_tuple(std::vector<c10::IValue> items) {
    int d = 1;
    for (const auto& item : items)
      if (is_container(item)) {
        own(item);
        d = std::max(d, depth_of(item) + 1);
      }
    EVL_CHECK(d <= kMaxDepth, where(), "containers nested deeper than ", kMaxDepth);
    c10::IValue tuple = c10::ivalue::Tuple::create(std::move(items));
    depth_[tuple.internalToPointer()] = d;
    keep_.push_back(tuple);
    return tuple;
  }
  c10::IValue memo(uint32_t i) {
    auto it = memo_.find(i);
    EVL_CHECK(it != memo_.end(), "'", path_, "': pickle refers to missing memo entry ", i);
    return it->second;
  }
  c10::impl::GenericDict dict_at_top(const char* op) {
    EVL_CHECK(top().isGenericDict(), "'", path_, "': ", op, " on a value that is not a dict");
    return top().toGenericDict();
  }
  c10::impl::GenericList list_at_top(const char* op) {
    EVL_CHECK(top().isList(), "'", path_, "': ", op, " on a value that is not a list");
    return top().toList();
  }
  // Dict keys: what a state dict or a config uses. LibTorch's dict hashes a
  // key and throws std::runtime_error for a tuple, list or tensor one.
  void check_key(const c10::IValue& key) const {
    EVL_CHECK(key.isString() || key.isInt() || key.isDouble() || key.isBool() || key.isNone(),
              where(), "a dict key of type ", key.tagKind(),
              " (only strings, numbers, bools and None are read)");
  }
  static bool is_global(const c10::IValue& v, const std::string& name) {
    return v.isString() && v.toStringRef() == kGlobalPrefix + name;
  }

  // ('storage', torch.<Type>Storage, key, location, numel) -> 1-d CPU tensor.
  c10::IValue persistent_load(const c10::IValue& pid) {
    EVL_CHECK(pid.isTuple(), "'", path_, "': persistent id is not a tuple");
    const auto& e = pid.toTupleRef().elements();
    EVL_CHECK(e.size() == 5 && e[0].isString() && e[0].toStringRef() == "storage" &&
                  e[1].isString() && e[2].isString() && e[4].isInt(),
              "'", path_, "': unsupported persistent id (not a torch.save storage)");
    const std::string& type = e[1].toStringRef();
    EVL_CHECK(type.rfind(kGlobalPrefix, 0) == 0, "'", path_, "': storage type is not a global");
    const auto dtype = storage_dtype(type.substr(kGlobalPrefix.size()), path_);
    const std::string key = e[2].toStringRef();
    auto cached = storages_.find(key);
    if (cached != storages_.end()) return cached->second;
    const std::string record = "data/" + key;
    EVL_CHECK(archive_.hasRecord(record), "'", path_, "': storage record '", record,
              "' is missing");
    auto [ptr, size] = archive_.getRecord(record);
    const int64_t numel = e[4].toInt();
    EVL_CHECK(numel >= 0 && numel < (int64_t(1) << 40), "'", path_, "': storage '", record,
              "' claims ", numel, " elements");
    const size_t want = static_cast<size_t>(numel) * c10::elementSize(dtype);
    EVL_CHECK(size == want, "'", path_, "': storage '", record, "' has ", size, " bytes, expected ",
              want);
    auto t = torch::empty({numel}, dtype);
    if (want > 0) std::memcpy(t.data_ptr(), ptr.get(), want);
    storages_[key] = t;
    return t;
  }

  c10::IValue reduce(const c10::IValue& fn, const c10::IValue& args) {
    EVL_CHECK(args.isTuple(), "'", path_, "': REDUCE arguments are not a tuple");
    const auto& a = args.toTupleRef().elements();
    if (is_global(fn, "collections.OrderedDict")) {
      EVL_CHECK(a.empty(), "'", path_, "': OrderedDict built from arguments is not supported");
      return c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get());
    }
    if (is_global(fn, "torch._utils._rebuild_tensor_v2")) {
      EVL_CHECK(
          a.size() >= 4 && a[0].isTensor() && a[1].isInt() && a[2].isTuple() && a[3].isTuple(), "'",
          path_, "': malformed _rebuild_tensor_v2 arguments");
      auto ints = [&](const c10::IValue& t) {
        std::vector<int64_t> out;
        for (const auto& v : t.toTupleRef().elements()) {
          EVL_CHECK(v.isInt() && v.toInt() >= 0, "'", path_,
                    "': malformed _rebuild_tensor_v2 arguments (a size or stride that is not a "
                    "non-negative int)");
          out.push_back(v.toInt());
        }
        return out;
      };
      const auto storage = a[0].toTensor();
      const auto size = ints(a[2]), stride = ints(a[3]);
      EVL_CHECK(size.size() == stride.size() && a[1].toInt() >= 0, "'", path_,
                "': malformed _rebuild_tensor_v2 arguments (sizes, strides and offset disagree)");
      for (const int64_t d : size)
        EVL_CHECK(d < (int64_t(1) << 40), "'", path_, "': tensor dimension ", d, " is absurd");
      // The last element the view reaches, in overflow-checked arithmetic: a
      // stride or offset near 2^63 must be refused, not wrap to a small extent.
      const bool empty = std::find(size.begin(), size.end(), 0) != size.end();
      int64_t extent = 0;
      bool overflow = __builtin_add_overflow(a[1].toInt(), int64_t{1}, &extent);
      for (size_t i = 0; i < size.size() && !empty; ++i) {
        int64_t step = 0;
        overflow |= __builtin_mul_overflow(size[i] - 1, stride[i], &step) ||
                    __builtin_add_overflow(extent, step, &extent);
      }
      EVL_CHECK(empty || (!overflow && extent <= storage.numel()), "'", path_,
                "': tensor view exceeds its storage");
      return storage.as_strided(size, stride, a[1].toInt());
    }
    // LibTorch's pickle_save tags typed containers; the value is the first argument.
    if (is_global(fn, "torch.jit._pickle.restore_type_tag") ||
        is_global(fn, "torch.jit._pickle.build_intlist") ||
        is_global(fn, "torch.jit._pickle.build_doublelist") ||
        is_global(fn, "torch.jit._pickle.build_boollist") ||
        is_global(fn, "torch.jit._pickle.build_tensorlist")) {
      EVL_CHECK(!a.empty(), "'", path_, "': malformed typed-container tag");
      return a[0];
    }
    if (is_global(fn, "torch._utils._rebuild_parameter")) {
      EVL_CHECK(!a.empty() && a[0].isTensor(), "'", path_,
                "': malformed _rebuild_parameter arguments");
      return a[0];
    }
    EVL_THROW(
        Error, "'", path_, "': unsupported pickle global '",
        fn.isString() ? fn.toStringRef().substr(fn.toStringRef().rfind(':') + 1) : std::string("?"),
        "' (only tensors, dicts and plain values are read)");
  }

  std::string path_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  const uint8_t* p_;
  const uint8_t* end_;
  std::vector<c10::IValue> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, c10::IValue> memo_;
  std::map<std::string, torch::Tensor> storages_;
  std::unordered_set<const void*> owned_;       // containers placed in another
  std::unordered_map<const void*, int> depth_;  // nesting depth of containers
  std::vector<c10::IValue> keep_;               // keeps those addresses alive
};

}  // namespace

c10::IValue read_torch_file(const std::string& path) {
  EVL_CHECK(std::filesystem::is_regular_file(path), "checkpoint '", path,
            "' does not exist or is not a file");
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    EVL_THROW(Error, "'", path, "' is not a torch.save zip archive (",
              std::string(e.what_without_backtrace()).substr(0, 200), ")");
  }
  EVL_CHECK(archive->hasRecord("data.pkl"), "'", path, "': the archive has no data.pkl");
  auto [ptr, size] = archive->getRecord("data.pkl");
  return read_torch_pickle(ptr.get(), size, *archive, path);
}

c10::IValue read_torch_pickle(const void* pickle, size_t size,
                              caffe2::serialize::PyTorchStreamReader& archive,
                              const std::string& where) {
  Unpickler unpickler(where, archive, static_cast<const uint8_t*>(pickle), size);
  try {
    return unpickler.run();
  } catch (const c10::Error& e) {
    EVL_THROW(Error, "'", where, "': ", std::string(e.what_without_backtrace()).substr(0, 300));
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {  // LibTorch's plain runtime_errors (containers, hashing)
    EVL_THROW(Error, "'", where, "': malformed pickle: ", std::string(e.what()).substr(0, 300));
  }
}

}  // namespace evl
