// llm.c token shards: atomic writing, validated mmap reading, glob expansion.
#include "dataloader/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "common/check.h"

// Shards are little-endian on disk and we read them by plain loads from the map.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard I/O assumes a little-endian host"
#endif

namespace {

// write(2) until everything is out; short writes are legal (e.g. signals, pipes).
bool write_all(int fd, const void* buf, size_t bytes) {
    const char* p = static_cast<const char*>(buf);
    while (bytes > 0) {
        ssize_t w = write(fd, p, bytes);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        bytes -= (size_t)w;
    }
    return true;
}

// Closes the descriptor on every path out of Shard::Shard, throws included.
struct FdGuard {
    int fd;
    ~FdGuard() {
        if (fd >= 0) close(fd);
    }
};

}  // namespace

void write_shard(const std::string& path, const uint32_t* tokens, size_t n, bool wide) {
    const char* p = path.c_str();
    REQUIRE_INPUT(n > 0, "%s: refusing to write a shard with no tokens", p);
    REQUIRE_INPUT(n <= (size_t)INT32_MAX,
                  "%s: %zu tokens do not fit the header's int32 count (max %d); split into "
                  "more shards", p, n, INT32_MAX);
    if (!wide) {
        for (size_t i = 0; i < n; i++)
            REQUIRE_INPUT(tokens[i] <= 0xFFFF,
                          "%s: token %zu is %u, which does not fit uint16; write wide "
                          "(uint32) tokens", p, i, tokens[i]);
    }

    int32_t header[SHARD_HEADER_INTS] = {0};
    header[0] = wide ? SHARD_MAGIC_U32 : SHARD_MAGIC_U16;
    header[1] = wide ? SHARD_VERSION_U32 : SHARD_VERSION_U16;
    header[2] = (int32_t)n;

    const std::string tmp = path + ".tmp";
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE_INPUT(fd >= 0, "%s: cannot open %s for writing (%s)", p, tmp.c_str(),
                  strerror(errno));

    bool ok = write_all(fd, header, sizeof(header));
    if (wide) {
        ok = ok && write_all(fd, tokens, n * sizeof(uint32_t));
    } else {
        // narrow through a bounded buffer rather than a second copy of the whole shard
        std::vector<uint16_t> buf(std::min(n, (size_t)1 << 20));
        for (size_t i = 0; ok && i < n; i += buf.size()) {
            size_t m = std::min(buf.size(), n - i);
            for (size_t j = 0; j < m; j++) buf[j] = (uint16_t)tokens[i + j];
            ok = write_all(fd, buf.data(), m * sizeof(uint16_t));
        }
    }
    int err = ok ? 0 : errno;
    // fsync before rename: otherwise a crash can leave the new name pointing at an
    // empty or partial file
    if (ok && fsync(fd) != 0) ok = false, err = errno;
    if (close(fd) != 0 && ok) ok = false, err = errno;
    if (ok && rename(tmp.c_str(), p) != 0) ok = false, err = errno;
    if (!ok) {
        unlink(tmp.c_str());
        throw UserError(strfmt("%s: writing the shard failed (%s)", p, strerror(err)));
    }
}

Shard::Shard(const std::string& path, int vocab_size) : path_(path) {
    const char* p = path.c_str();
    REQUIRE_INPUT(vocab_size > 0, "%s: vocab_size must be positive, got %d", p, vocab_size);

    FdGuard g{open(p, O_RDONLY | O_CLOEXEC)};
    REQUIRE_INPUT(g.fd >= 0, "%s: cannot open token shard (%s)", p, strerror(errno));
    struct stat st;
    REQUIRE_INPUT(fstat(g.fd, &st) == 0, "%s: cannot stat (%s)", p, strerror(errno));
    REQUIRE_INPUT(S_ISREG(st.st_mode), "%s: expected a regular file (a token shard)", p);
    const size_t file_bytes = (size_t)st.st_size;
    REQUIRE_INPUT(file_bytes >= SHARD_HEADER_BYTES,
                  "%s: file is %zu bytes, expected at least the %zu-byte shard header", p,
                  file_bytes, SHARD_HEADER_BYTES);

    int32_t header[SHARD_HEADER_INTS];
    REQUIRE_INPUT(pread(g.fd, header, sizeof(header), 0) == (ssize_t)sizeof(header),
                  "%s: cannot read the %zu-byte header (%s)", p, SHARD_HEADER_BYTES,
                  strerror(errno));
    const int32_t magic = header[0], version = header[1], count = header[2];
    REQUIRE_INPUT(magic == SHARD_MAGIC_U16 || magic == SHARD_MAGIC_U32,
                  "%s: bad magic %d, expected %d (uint16 tokens) or %d (uint32 tokens); "
                  "is this an llm.c token shard?", p, magic, SHARD_MAGIC_U16, SHARD_MAGIC_U32);
    wide_ = magic == SHARD_MAGIC_U32;
    const int32_t want_version = wide_ ? SHARD_VERSION_U32 : SHARD_VERSION_U16;
    REQUIRE_INPUT(version == want_version, "%s: version %d does not match magic %d, expected %d",
                  p, version, magic, want_version);
    REQUIRE_INPUT(count >= 0, "%s: header declares %d tokens, expected a count >= 0", p, count);
    const size_t width = wide_ ? 4 : 2;
    const size_t want_bytes = SHARD_HEADER_BYTES + (size_t)count * width;
    REQUIRE_INPUT(file_bytes == want_bytes,
                  "%s: header declares %d tokens of %zu bytes, so the file should be %zu "
                  "bytes, but it is %zu (truncated or corrupt?)", p, count, width, want_bytes,
                  file_bytes);
    REQUIRE_INPUT(count > 0, "%s: no tokens (the header declares 0), expected at least 1", p);

    void* m = mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, g.fd, 0);
    REQUIRE_INPUT(m != MAP_FAILED, "%s: cannot mmap (%s)", p, strerror(errno));
    map_ = m;
    map_bytes_ = file_bytes;
    tokens_ = static_cast<const uint8_t*>(m) + SHARD_HEADER_BYTES;
    n_ = (size_t)count;

    // One bad token id would index past the embedding table, so scan them all now.
    // (Skipped when the width cannot hold an out-of-range id.)
    if (wide_ || vocab_size <= 0xFFFF) {
        const uint32_t V = (uint32_t)vocab_size;
        size_t bad = n_;  // index of the first token >= V, n_ if none
#pragma omp parallel for reduction(min : bad)
        for (size_t i = 0; i < n_; i++)
            if ((*this)[i] >= V && i < bad) bad = i;
        if (bad < n_) {
            uint32_t value = (*this)[bad];
            release();
            throw UserError(strfmt("%s: token %zu (byte offset %zu) is %u, expected < "
                                   "vocab_size %d", p, bad, SHARD_HEADER_BYTES + bad * width,
                                   value, vocab_size));
        }
    }
}

void Shard::release() {
    if (map_) munmap(map_, map_bytes_);
    map_ = nullptr;
    map_bytes_ = 0;
    tokens_ = nullptr;
    n_ = 0;
}

Shard::~Shard() { release(); }

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), map_bytes_(o.map_bytes_), tokens_(o.tokens_),
      n_(o.n_), wide_(o.wide_) {
    o.map_ = nullptr;
    o.release();
}

Shard& Shard::operator=(Shard&& o) noexcept {
    if (this != &o) {
        release();
        path_ = std::move(o.path_);
        map_ = o.map_;
        map_bytes_ = o.map_bytes_;
        tokens_ = o.tokens_;
        n_ = o.n_;
        wide_ = o.wide_;
        o.map_ = nullptr;
        o.release();
    }
    return *this;
}

std::vector<std::string> expand_glob(const std::string& pattern) {
    // an existing path is taken literally, so names containing '[' or '*' still work
    struct stat st;
    if (stat(pattern.c_str(), &st) == 0) return {pattern};
    glob_t g;
    memset(&g, 0, sizeof(g));
    int rc = glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> out;
    if (rc == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    REQUIRE_INPUT(rc != GLOB_NOSPACE, "%s: out of memory while expanding the pattern",
                  pattern.c_str());
    REQUIRE_INPUT(!out.empty(), "%s: no file matches", pattern.c_str());
    // glob sorts by the locale's collation; bytewise order is the same on every machine
    std::sort(out.begin(), out.end());
    return out;
}
