// Strict CBOR decoding (libcbor streaming pre-scan + cbor_load).
#include "common/cbor/cbor.hpp"

#include "common/cbor/cbor_head.hpp"

#include <algorithm>
#include <limits>
#include <string>

namespace fde::cbor {

void ItemDeleter::operator()(cbor_item_t* item) const {
  if (item != nullptr) cbor_decref(&item);
}

namespace {

// What the last streaming callback saw. Leaves count as one item; containers tell us
// how many items follow them.
enum class Event { none, leaf, array, map, tag, refused };

struct ScanState {
  Event event = Event::none;
  std::size_t count = 0;
  const char* refusal = nullptr;
};

ScanState& state_of(void* ctx) { return *static_cast<ScanState*>(ctx); }
void on_leaf(void* ctx) { state_of(ctx).event = Event::leaf; }
void on_u8(void* ctx, std::uint8_t) { on_leaf(ctx); }
void on_u16(void* ctx, std::uint16_t) { on_leaf(ctx); }
void on_u32(void* ctx, std::uint32_t) { on_leaf(ctx); }
void on_u64(void* ctx, std::uint64_t) { on_leaf(ctx); }
void on_string(void* ctx, cbor_data, std::size_t) { on_leaf(ctx); }
void on_bool(void* ctx, bool) { on_leaf(ctx); }
void on_array(void* ctx, std::size_t n) {
  state_of(ctx).event = Event::array;
  state_of(ctx).count = n;
}
void on_map(void* ctx, std::size_t n) {
  state_of(ctx).event = Event::map;
  state_of(ctx).count = n;
}
void on_tag(void* ctx, std::uint64_t) { state_of(ctx).event = Event::tag; }
void refuse(void* ctx, const char* why) {
  state_of(ctx).event = Event::refused;
  state_of(ctx).refusal = why;
}
void on_indefinite(void* ctx) { refuse(ctx, "indefinite-length items are not allowed"); }
void on_float(void* ctx, float) { refuse(ctx, "floating-point values are not allowed"); }
void on_double(void* ctx, double) { refuse(ctx, "floating-point values are not allowed"); }
void on_undefined(void* ctx) { refuse(ctx, "the undefined value is not allowed"); }

cbor_callbacks scan_callbacks() {
  cbor_callbacks cb = cbor_empty_callbacks;
  cb.uint8 = on_u8;
  cb.uint16 = on_u16;
  cb.uint32 = on_u32;
  cb.uint64 = on_u64;
  cb.negint8 = on_u8;
  cb.negint16 = on_u16;
  cb.negint32 = on_u32;
  cb.negint64 = on_u64;
  cb.byte_string = on_string;
  cb.string = on_string;
  cb.byte_string_start = on_indefinite;
  cb.string_start = on_indefinite;
  cb.indef_array_start = on_indefinite;
  cb.indef_map_start = on_indefinite;
  cb.indef_break = on_indefinite;
  cb.array_start = on_array;
  cb.map_start = on_map;
  cb.tag = on_tag;
  cb.float2 = on_float;
  cb.float4 = on_float;
  cb.float8 = on_double;
  cb.undefined = on_undefined;
  cb.null = on_leaf;
  cb.boolean = on_bool;
  return cb;
}

// Walks the encoding without building anything, so that every declared length is
// checked against the bytes that are really there before libcbor allocates for it.
Result<void> prescan(ByteView input, const DecodeLimits& limits) {
  static const cbor_callbacks callbacks = scan_callbacks();
  std::vector<std::uint64_t> pending{1};  // items still expected at each nesting level
  std::size_t offset = 0;
  std::size_t items = 0;
  while (!pending.empty()) {
    if (offset >= input.size()) return fail(Errc::malformed, "CBOR: input ends inside an item");
    ScanState state;
    auto result = cbor_stream_decode(input.data() + offset, input.size() - offset, &callbacks, &state);
    if (result.status == CBOR_DECODER_NEDATA) return fail(Errc::malformed, "CBOR: input ends inside an item");
    if (result.status != CBOR_DECODER_FINISHED || result.read == 0)
      return fail(Errc::malformed, "CBOR: invalid encoding at offset " + std::to_string(offset));
    if (state.event == Event::refused)
      return fail(Errc::malformed, std::string("CBOR: ") + state.refusal + " (offset " + std::to_string(offset) + ")");
    if (state.event == Event::none)
      return fail(Errc::malformed, "CBOR: unsupported item at offset " + std::to_string(offset));
    offset += result.read;
    if (++items > limits.max_items) return fail(Errc::too_large, "CBOR: too many data items");
    --pending.back();
    std::uint64_t children = 0;
    std::size_t remaining = input.size() - offset;
    if (state.event == Event::array) {
      if (state.count > remaining) return fail(Errc::malformed, "CBOR: array length exceeds the input");
      children = state.count;
    } else if (state.event == Event::map) {
      if (state.count > remaining / 2) return fail(Errc::malformed, "CBOR: map length exceeds the input");
      children = 2 * static_cast<std::uint64_t>(state.count);
    } else if (state.event == Event::tag) {
      children = 1;
    }
    if (children > 0) {
      if (pending.size() >= limits.max_depth) return fail(Errc::malformed, "CBOR: nesting too deep");
      pending.push_back(children);
    }
    while (!pending.empty() && pending.back() == 0) pending.pop_back();
  }
  if (offset != input.size())
    return fail(Errc::malformed, "CBOR: " + std::to_string(input.size() - offset) + " trailing bytes after the item");
  return {};
}

bool keys_equal(const cbor_item_t* a, const cbor_item_t* b) {
  if (cbor_typeof(a) != cbor_typeof(b)) return false;
  switch (cbor_typeof(a)) {
    case CBOR_TYPE_UINT:
    case CBOR_TYPE_NEGINT: return cbor_get_int(a) == cbor_get_int(b);
    case CBOR_TYPE_STRING:
      return cbor_string_length(a) == cbor_string_length(b) &&
             std::equal(cbor_string_handle(a), cbor_string_handle(a) + cbor_string_length(a), cbor_string_handle(b));
    default: return false;
  }
}

// After the tree is built: map keys must be integers or text, unique within their map.
Result<void> check_maps(const cbor_item_t* item) {
  switch (cbor_typeof(item)) {
    case CBOR_TYPE_ARRAY: {
      auto* elements = cbor_array_handle(item);
      for (std::size_t i = 0; i < cbor_array_size(item); ++i)
        if (auto ok = check_maps(elements[i]); !ok) return ok;
      return {};
    }
    case CBOR_TYPE_MAP: {
      auto* pairs = cbor_map_handle(item);
      std::size_t n = cbor_map_size(item);
      for (std::size_t i = 0; i < n; ++i) {
        auto key_type = cbor_typeof(pairs[i].key);
        if (key_type != CBOR_TYPE_UINT && key_type != CBOR_TYPE_NEGINT && key_type != CBOR_TYPE_STRING)
          return fail(Errc::malformed, "CBOR: map keys must be integers or text strings");
        for (std::size_t j = 0; j < i; ++j)
          if (keys_equal(pairs[i].key, pairs[j].key)) return fail(Errc::malformed, "CBOR: duplicate map key");
        if (auto ok = check_maps(pairs[i].value); !ok) return ok;
      }
      return {};
    }
    case CBOR_TYPE_TAG: return check_maps(item->metadata.tag_metadata.tagged_item);
    default: return {};
  }
}

}  // namespace

Result<ItemPtr> decode(ByteView input, const DecodeLimits& limits) {
  if (input.size() > limits.max_input_size)
    return fail(Errc::too_large, "CBOR: " + std::to_string(input.size()) + " bytes exceeds the limit of " +
                                     std::to_string(limits.max_input_size));
  if (input.empty()) return fail(Errc::malformed, "CBOR: empty input");
  if (auto ok = prescan(input, limits); !ok) return tl::unexpected(ok.error());
  cbor_load_result result{};
  ItemPtr item(cbor_load(input.data(), input.size(), &result));
  if (!item || result.error.code != CBOR_ERR_NONE)
    return fail(Errc::malformed, "CBOR: decoding failed at offset " + std::to_string(result.error.position));
  if (result.read != input.size()) return fail(Errc::malformed, "CBOR: trailing bytes after the item");
  if (auto ok = check_maps(item.get()); !ok) return tl::unexpected(ok.error());
  return item;
}

Result<Tagged> decode_tagged(ByteView input, const DecodeLimits& limits) {
  if (input.size() > limits.max_input_size)
    return fail(Errc::too_large, "CBOR: " + std::to_string(input.size()) + " bytes exceeds the limit of " +
                                     std::to_string(limits.max_input_size));
  auto head = read_head(input);
  if (!head || head->major_type != major::tag) return fail(Errc::malformed, "CBOR: expected a tagged item");
  const std::size_t head_size = head->size;
  const std::uint64_t tag = head->argument;
  auto item = decode(input.subspan(head_size), limits);
  if (!item) return tl::unexpected(item.error());
  return Tagged{tag, std::move(*item)};
}

std::string_view type_name(const cbor_item_t* item) {
  if (item == nullptr) return "nothing";
  switch (cbor_typeof(item)) {
    case CBOR_TYPE_UINT: return "unsigned integer";
    case CBOR_TYPE_NEGINT: return "negative integer";
    case CBOR_TYPE_BYTESTRING: return "byte string";
    case CBOR_TYPE_STRING: return "text string";
    case CBOR_TYPE_ARRAY: return "array";
    case CBOR_TYPE_MAP: return "map";
    case CBOR_TYPE_TAG: return "tag";
    case CBOR_TYPE_FLOAT_CTRL: return "simple value";
  }
  return "unknown";
}

namespace {
tl::unexpected<Error> wrong_type(const cbor_item_t* item, std::string_view what, std::string_view expected) {
  return fail(Errc::malformed,
              std::string(what) + ": expected " + std::string(expected) + ", found " + std::string(type_name(item)));
}
}  // namespace

Result<ByteView> get_bytes(const cbor_item_t* item, std::string_view what) {
  if (item == nullptr || !cbor_isa_bytestring(item) || !cbor_bytestring_is_definite(item))
    return wrong_type(item, what, "byte string");
  return ByteView(cbor_bytestring_handle(item), cbor_bytestring_length(item));
}

Result<std::string_view> get_text(const cbor_item_t* item, std::string_view what) {
  if (item == nullptr || !cbor_isa_string(item) || !cbor_string_is_definite(item))
    return wrong_type(item, what, "text string");
  return std::string_view(reinterpret_cast<const char*>(cbor_string_handle(item)), cbor_string_length(item));
}

Result<std::int64_t> get_int(const cbor_item_t* item, std::string_view what) {
  if (item == nullptr || !(cbor_isa_uint(item) || cbor_isa_negint(item))) return wrong_type(item, what, "integer");
  std::uint64_t raw = cbor_get_int(item);
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (raw > max) return fail(Errc::malformed, std::string(what) + ": integer out of range");
  // A negative integer n is encoded as -1 - raw.
  return cbor_isa_uint(item) ? static_cast<std::int64_t>(raw) : -1 - static_cast<std::int64_t>(raw);
}

Result<std::pair<std::uint64_t, const cbor_item_t*>> get_tag(const cbor_item_t* item, std::string_view what) {
  if (item == nullptr || !cbor_isa_tag(item)) return wrong_type(item, what, "tag");
  return std::pair<std::uint64_t, const cbor_item_t*>{cbor_tag_value(item), item->metadata.tag_metadata.tagged_item};
}

Result<std::vector<const cbor_item_t*>> get_array(const cbor_item_t* item, std::string_view what) {
  if (item == nullptr || !cbor_isa_array(item) || !cbor_array_is_definite(item)) return wrong_type(item, what, "array");
  auto* elements = cbor_array_handle(item);
  return std::vector<const cbor_item_t*>(elements, elements + cbor_array_size(item));
}

Result<IntMap> get_int_map(const cbor_item_t* item, std::string_view what) {
  if (item == nullptr || !cbor_isa_map(item) || !cbor_map_is_definite(item)) return wrong_type(item, what, "map");
  IntMap out;
  auto* pairs = cbor_map_handle(item);
  for (std::size_t i = 0; i < cbor_map_size(item); ++i) {
    auto key = get_int(pairs[i].key, std::string(what) + " key");
    if (!key) return fail(Errc::malformed, std::string(what) + ": map key must be an integer, found " +
                                               std::string(type_name(pairs[i].key)));
    for (const auto& existing : out)
      if (existing.first == *key) return fail(Errc::malformed, std::string(what) + ": duplicate key " + std::to_string(*key));
    out.emplace_back(*key, pairs[i].value);
  }
  return out;
}

const cbor_item_t* find(const IntMap& map, std::int64_t key) {
  for (const auto& [k, v] : map)
    if (k == key) return v;
  return nullptr;
}

}  // namespace fde::cbor
