// Token shards in the llm.c format, and glob expansion of shard patterns.
//
// File layout (all little-endian):
//   int32 header[256]   header[0] = magic, header[1] = version, header[2] = token count N
//   token[N]            uint16 (magic 20240520, version 1)  or
//                       uint32 (magic 20240801, version 7; vocabularies over 65535)
// so a valid file is exactly 1024 + N * width bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

constexpr int SHARD_HEADER_INTS = 256;
constexpr size_t SHARD_HEADER_BYTES = SHARD_HEADER_INTS * sizeof(int32_t);  // 1024
constexpr int32_t SHARD_MAGIC_U16 = 20240520, SHARD_VERSION_U16 = 1;
constexpr int32_t SHARD_MAGIC_U32 = 20240801, SHARD_VERSION_U32 = 7;

// Writes tokens[0..n) to `path` (uint32 tokens if `wide`, else uint16). Goes through
// path + ".tmp", fsync and rename, so a crash never leaves a half-written file under
// the final name. Throws UserError naming the path on any failure, for n == 0, and
// for a token that does not fit uint16 when !wide.
void write_shard(const std::string& path, const uint32_t* tokens, size_t n, bool wide);

// A validated, read-only memory map of one shard. Construction checks the header,
// the exact file size and that every token is < vocab_size; each failure is a
// UserError whose message starts with the path.
class Shard {
public:
    Shard(const std::string& path, int vocab_size);
    ~Shard();
    Shard(const Shard&) = delete;
    Shard& operator=(const Shard&) = delete;
    // noexcept so std::vector<Shard> moves rather than copies when it grows
    Shard(Shard&& other) noexcept;
    Shard& operator=(Shard&& other) noexcept;

    size_t size() const { return n_; }  // number of tokens
    uint32_t operator[](size_t i) const {
        return wide_ ? reinterpret_cast<const uint32_t*>(tokens_)[i]
                     : reinterpret_cast<const uint16_t*>(tokens_)[i];
    }
    bool wide() const { return wide_; }  // true: uint32 tokens
    const std::string& path() const { return path_; }

private:
    void release();
    std::string path_;
    void* map_ = nullptr;             // whole file, from mmap
    size_t map_bytes_ = 0;
    const uint8_t* tokens_ = nullptr;  // map_ + 1024; page alignment keeps tokens aligned
    size_t n_ = 0;
    bool wide_ = false;
};

// Files matching a glob(3) pattern, sorted bytewise so every rank and every run sees
// the same order. A path that exists is returned as is (even if it contains glob
// metacharacters). No match -> UserError "PATTERN: no file matches".
std::vector<std::string> expand_glob(const std::string& pattern);
