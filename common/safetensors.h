// The safetensors file format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}}, then raw little-endian data.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

struct StTensor {
    std::string dtype;             // "F32", "I32", "BF16", "F16"
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
    size_t numel() const;
    std::vector<float> to_f32() const;    // F32, BF16, F16 -> float (UserError otherwise)
    std::vector<int32_t> to_i32() const;  // I32 only
    static StTensor f32(std::vector<int64_t> shape, const float* values);
    static StTensor i32(std::vector<int64_t> shape, const int32_t* values);
};
using StFile = std::map<std::string, StTensor>;

// Errors name the file and what was expected (UserError).
StFile read_safetensors(const std::string& path);
// A tensor to write, by reference: large buffers are streamed, never copied.
struct StView {
    std::string name, dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t bytes;
};
// Written to path.tmp, fsynced and renamed: a crash never leaves a torn file under
// `path`. (For tests: LNS_FAULT=partial-write makes the process die halfway through
// a tensor file's temporary file, as a kill during a checkpoint would.)
void write_safetensors(const std::string& path, const std::vector<StView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
void write_safetensors(const std::string& path, const StFile& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Metadata only (the "__metadata__" object), without reading the tensors.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);
// Writes text the same way (temporary file, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& contents);
