#include "common/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"

namespace {
size_t dtype_size(const std::string& d) {
    if (d == "F32" || d == "I32") return 4;
    if (d == "BF16" || d == "F16") return 2;
    if (d == "F64" || d == "I64") return 8;
    return 0;
}
float half_to_float(uint16_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {  // subnormal: renormalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) man <<= 1, exp--;
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
}  // namespace

size_t StTensor::numel() const {
    size_t n = 1;
    for (auto d : shape) n *= (size_t)d;
    return n;
}

std::vector<float> StTensor::to_f32() const {
    std::vector<float> out(numel());
    if (dtype == "F32") std::memcpy(out.data(), data.data(), out.size() * 4);
    else if (dtype == "BF16")
        for (size_t i = 0; i < out.size(); i++) {
            uint32_t bits = (uint32_t)(data[2 * i] | (data[2 * i + 1] << 8)) << 16;
            std::memcpy(&out[i], &bits, 4);
        }
    else if (dtype == "F16")
        for (size_t i = 0; i < out.size(); i++) out[i] = half_to_float((uint16_t)(data[2 * i] | (data[2 * i + 1] << 8)));
    else throw UserError("tensor of dtype " + dtype + " where a floating-point tensor (F32, BF16, F16) was expected");
    return out;
}

std::vector<int32_t> StTensor::to_i32() const {
    if (dtype != "I32") throw UserError("tensor of dtype " + dtype + " where I32 was expected");
    std::vector<int32_t> out(numel());
    std::memcpy(out.data(), data.data(), out.size() * 4);
    return out;
}

StTensor StTensor::f32(std::vector<int64_t> shape, const float* values) {
    StTensor t{"F32", std::move(shape), {}};
    t.data.resize(t.numel() * 4);
    std::memcpy(t.data.data(), values, t.data.size());
    return t;
}

StTensor StTensor::i32(std::vector<int64_t> shape, const int32_t* values) {
    StTensor t{"I32", std::move(shape), {}};
    t.data.resize(t.numel() * 4);
    std::memcpy(t.data.data(), values, t.data.size());
    return t;
}

StFile read_safetensors(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_INPUT(f.good(), "%s: cannot open (expected a safetensors file)", path.c_str());
    f.seekg(0, std::ios::end);
    const uint64_t fsize = (uint64_t)f.tellg();
    f.seekg(0);
    uint64_t hlen = 0;
    REQUIRE_INPUT(fsize >= 8 && f.read((char*)&hlen, 8), "%s: too short for a safetensors header", path.c_str());
    REQUIRE_INPUT(hlen <= fsize - 8 && hlen < (100u << 20), "%s: header length %llu does not fit the file (%llu bytes)",
                  path.c_str(), (unsigned long long)hlen, (unsigned long long)fsize);
    std::string header(hlen, '\0');
    f.read(&header[0], (std::streamsize)hlen);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(header);
    } catch (const std::exception& e) {
        throw UserError(path + ": header is not valid JSON: " + e.what());
    }
    const uint64_t data_start = 8 + hlen, data_size = fsize - data_start;
    StFile out;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "__metadata__") continue;
        const auto& e = it.value();
        StTensor t;
        try {
            t.dtype = e.at("dtype").get<std::string>();
            t.shape = e.at("shape").get<std::vector<int64_t>>();
            auto offs = e.at("data_offsets").get<std::vector<uint64_t>>();
            REQUIRE_INPUT(offs.size() == 2 && offs[0] <= offs[1] && offs[1] <= data_size,
                          "%s: tensor %s: data_offsets outside the file", path.c_str(), it.key().c_str());
            REQUIRE_INPUT(dtype_size(t.dtype) > 0, "%s: tensor %s: unsupported dtype %s", path.c_str(),
                          it.key().c_str(), t.dtype.c_str());
            REQUIRE_INPUT(offs[1] - offs[0] == t.numel() * dtype_size(t.dtype),
                          "%s: tensor %s: %llu bytes for shape of %zu elements of %s", path.c_str(),
                          it.key().c_str(), (unsigned long long)(offs[1] - offs[0]), t.numel(), t.dtype.c_str());
            t.data.resize(offs[1] - offs[0]);
            f.seekg((std::streamoff)(data_start + offs[0]));
            f.read((char*)t.data.data(), (std::streamsize)t.data.size());
            REQUIRE_INPUT(f.good(), "%s: tensor %s: read failed", path.c_str(), it.key().c_str());
        } catch (const nlohmann::json::exception& ex) {
            throw UserError(path + ": tensor " + it.key() + ": malformed header entry: " + ex.what());
        }
        out[it.key()] = std::move(t);
    }
    return out;
}

namespace {
// Writes chunks to path.tmp, fsyncs and renames. Each chunk is (pointer, bytes).
// fault_point: where LNS_FAULT=partial-write may strike (tensor files).
void write_chunks_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& chunks,
                         bool fault_point) {
    const std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE_INPUT(fd >= 0, "%s: cannot create: %s", tmp.c_str(), strerror(errno));
    size_t total = 0, done_all = 0;
    for (auto& c : chunks) total += c.second;
    const char* fault = getenv("LNS_FAULT");
    const bool die_halfway = fault_point && fault && std::string(fault) == "partial-write";
    for (auto& c : chunks) {
        size_t done = 0;
        while (done < c.second) {
            size_t n = std::min<size_t>(c.second - done, 64u << 20);
            if (die_halfway && done_all + n > total / 2) n = total / 2 > done_all ? total / 2 - done_all : 0;
            ssize_t w = n ? ::write(fd, (const char*)c.first + done, n) : 0;
            if (die_halfway && done_all + (size_t)w >= total / 2) _exit(9);  // a crash mid-write
            if (w <= 0) {
                ::close(fd);
                ::unlink(tmp.c_str());
                throw UserError(tmp + ": write failed: " + strerror(errno));
            }
            done += (size_t)w, done_all += (size_t)w;
        }
    }
    bool ok = ::fsync(fd) == 0;
    ok = ::close(fd) == 0 && ok;
    REQUIRE_INPUT(ok && ::rename(tmp.c_str(), path.c_str()) == 0, "%s: could not be written: %s", path.c_str(),
                  strerror(errno));
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& contents) {
    write_chunks_atomic(path, {{contents.data(), contents.size()}}, false);
}

void write_safetensors(const std::string& path, const std::vector<StView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    nlohmann::json j = nlohmann::json::object();
    if (!metadata.empty()) j["__metadata__"] = metadata;
    uint64_t off = 0;
    for (auto& t : tensors) {
        j[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes}}};
        off += t.bytes;
    }
    std::string header = j.dump();
    header.append((8 - header.size() % 8) % 8, ' ');  // align the data to 8 bytes
    const uint64_t hlen = header.size();
    // data in the order of `tensors`, matching the offsets above
    std::vector<std::pair<const void*, size_t>> chunks{{&hlen, 8}, {header.data(), header.size()}};
    for (auto& t : tensors) chunks.push_back({t.data, t.bytes});
    write_chunks_atomic(path, chunks, true);
}

void write_safetensors(const std::string& path, const StFile& tensors,
                       const std::map<std::string, std::string>& metadata) {
    std::vector<StView> views;
    for (auto& kv : tensors)
        views.push_back({kv.first, kv.second.dtype, kv.second.shape, kv.second.data.data(), kv.second.data.size()});
    write_safetensors(path, views, metadata);
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_INPUT(f.good(), "%s: cannot open (expected a safetensors file)", path.c_str());
    uint64_t hlen = 0;
    REQUIRE_INPUT(f.read((char*)&hlen, 8) && hlen < (100u << 20), "%s: not a safetensors file", path.c_str());
    std::string header(hlen, '\0');
    REQUIRE_INPUT(f.read(&header[0], (std::streamsize)hlen), "%s: truncated header", path.c_str());
    try {
        auto j = nlohmann::json::parse(header);
        return j.contains("__metadata__") ? j["__metadata__"].get<std::map<std::string, std::string>>()
                                          : std::map<std::string, std::string>{};
    } catch (const std::exception& e) {
        throw UserError(path + ": header is not valid JSON: " + e.what());
    }
}
