// GPT-2 byte-level BPE: PCRE2 pre-tokenisation, tiktoken's merge rule, per-thread caches.
#include "tokenizer/gpt2.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "common/check.h"

namespace {

// GPT-2's pattern (tiktoken's spelling of it, same alternatives and order). \s is written
// \p{White_Space}, the set tiktoken's regex engine means by \s; PCRE2's own \s adds
// U+180E. Anchored: every position starts a match, since each character is whitespace, a
// letter, a number or something else, and anchoring spares PCRE2 the search.
const char* kPattern =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+"
    "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

const char* kEndOfText = "<|endoftext|>";

uint64_t hash_bytes(const char* p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * 0x94D049BB133111EBull;
    }
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    return h ^ (h >> 32);
}

// Open-addressing hash table from byte strings to a uint64; keys live in one arena.
// Faster than std::unordered_map<std::string, ...> and needs no std::string per lookup.
class ByteTable {
public:
    const uint64_t* find(std::string_view key) const {
        if (slots_.empty()) return nullptr;
        const uint64_t h = hash_bytes(key.data(), key.size());
        for (size_t i = h & mask_;; i = (i + 1) & mask_) {
            const Slot& s = slots_[i];
            if (s.off == kEmpty) return nullptr;
            if (s.hash == h && s.len == key.size() &&
                memcmp(&arena_[s.off], key.data(), s.len) == 0)
                return &s.value;
        }
    }
    void insert(std::string_view key, uint64_t value) {  // key must not be present
        if ((count_ + 1) * 2 > slots_.size()) grow();
        put(hash_bytes(key.data(), key.size()), (uint32_t)arena_.size(), (uint32_t)key.size(),
            value);
        arena_.append(key.data(), key.size());
        count_++;
    }
    void clear() {
        slots_.clear();
        arena_.clear();
        count_ = 0;
        mask_ = 0;
    }
    size_t arena_bytes() const { return arena_.size(); }

private:
    static constexpr uint32_t kEmpty = UINT32_MAX;
    struct Slot {
        uint64_t hash;
        uint32_t off = kEmpty, len;
        uint64_t value;
    };
    void put(uint64_t h, uint32_t off, uint32_t len, uint64_t value) {
        size_t i = h & mask_;
        while (slots_[i].off != kEmpty) i = (i + 1) & mask_;
        slots_[i] = Slot{h, off, len, value};
    }
    void grow() {
        std::vector<Slot> old;
        old.swap(slots_);
        slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
        mask_ = slots_.size() - 1;
        for (const Slot& s : old)
            if (s.off != kEmpty) put(s.hash, s.off, s.len, s.value);
    }
    std::vector<Slot> slots_;
    std::string arena_;
    size_t count_ = 0, mask_ = 0;
};

// Each thread's scratch: PCRE2 match state and a cache of piece -> ids for pieces that
// needed merging (words repeat, so most lookups hit). Cleared when another tokenizer uses
// the thread or when it grows past kCacheBytes.
struct Scratch {
    uint64_t owner = 0;
    pcre2_match_data* md = nullptr;
    pcre2_match_context* mc = nullptr;
    pcre2_jit_stack* js = nullptr;
    ByteTable cache;  // piece -> (offset << 32 | count) into ids
    std::vector<int> ids;
    static constexpr size_t kCacheBytes = 32u << 20;
    Scratch() {
        md = pcre2_match_data_create(1, nullptr);
        mc = pcre2_match_context_create(nullptr);
        // Long whitespace runs backtrack through (?!\S); give the JIT room (grows to 8 MB).
        js = pcre2_jit_stack_create(64 << 10, 8 << 20, nullptr);
        LNS_CHECK(md && mc && js, "PCRE2: out of memory creating match data");
        pcre2_jit_stack_assign(mc, nullptr, js);
    }
    ~Scratch() {
        pcre2_jit_stack_free(js);
        pcre2_match_context_free(mc);
        pcre2_match_data_free(md);
    }
    void reset(uint64_t who) {
        cache.clear();
        ids.clear();
        owner = who;
    }
};
thread_local Scratch tl_scratch;

std::atomic<uint64_t> g_serial{1};

// GPT-2's bytes_to_unicode(): the printable bytes map to themselves, the other 68 to
// U+0100 onwards, so that every byte has a visible character in the vocabulary files.
// Returns code point -> byte (-1 where no byte maps there).
std::vector<int> unicode_to_byte() {
    std::vector<int> u2b(512, -1);
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        u2b[printable ? b : 256 + n++] = b;
    }
    return u2b;
}

// Decodes a vocabulary-file string (UTF-8 over the bytes_to_unicode alphabet) to bytes.
bool decode_gpt2_string(const std::string& s, const std::vector<int>& u2b, std::string* out) {
    out->clear();
    for (size_t i = 0; i < s.size();) {
        unsigned c = (unsigned char)s[i];
        uint32_t cp;
        if (c < 0x80) {
            cp = c, i += 1;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
            cp = ((c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F), i += 2;
        } else {
            return false;  // the alphabet lies below U+0200: one or two bytes each
        }
        if (cp >= u2b.size() || u2b[cp] < 0) return false;
        *out += (char)u2b[cp];
    }
    return true;
}

std::string read_file(const std::string& path, const std::string& spec) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_INPUT(f.good(), "--tokenizer %s: cannot open %s (%s); run scripts/get_gpt2_vocab.sh "
                  "to fetch the GPT-2 files, or give their folder as gpt2:DIR or in LNS_GPT2_DIR",
                  spec.c_str(), path.c_str(), strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

struct Gpt2Tokenizer::Table : ByteTable {};

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir, const std::string& spec)
    : spec_(spec), vocab_(new Table), serial_(g_serial++) {
    const char* sp = spec.c_str();
    const std::string enc_path = dir + "/encoder.json", bpe_path = dir + "/vocab.bpe";
    const std::vector<int> u2b = unicode_to_byte();

    // encoder.json: {"<token in the bytes_to_unicode alphabet>": id, ...}
    nlohmann::json enc;
    try {
        enc = nlohmann::json::parse(read_file(enc_path, spec));
    } catch (const nlohmann::json::exception& e) {
        throw UserError(strfmt("--tokenizer %s: %s: not valid JSON (%s)", sp, enc_path.c_str(),
                               e.what()));
    }
    REQUIRE_INPUT(enc.is_object() && !enc.empty(), "--tokenizer %s: %s: expected a JSON object "
                  "from tokens to ids", sp, enc_path.c_str());
    tokens_.assign(enc.size(), std::string());
    std::vector<bool> seen(enc.size(), false);
    std::string bytes;
    for (auto it = enc.begin(); it != enc.end(); ++it) {
        REQUIRE_INPUT(it.value().is_number_integer(), "--tokenizer %s: %s: token \"%s\" has a "
                      "non-integer id", sp, enc_path.c_str(), it.key().c_str());
        const int64_t id = it.value().get<int64_t>();
        REQUIRE_INPUT(id >= 0 && id < (int64_t)enc.size() && !seen[(size_t)id],
                      "--tokenizer %s: %s: token \"%s\" has id %lld, expected distinct ids "
                      "0..%zu", sp, enc_path.c_str(), it.key().c_str(), (long long)id,
                      enc.size() - 1);
        REQUIRE_INPUT(decode_gpt2_string(it.key(), u2b, &bytes), "--tokenizer %s: %s: token "
                      "\"%s\" uses a character outside GPT-2's byte alphabet", sp,
                      enc_path.c_str(), it.key().c_str());
        seen[(size_t)id] = true;
        tokens_[(size_t)id] = bytes;
        if (bytes == kEndOfText) eot_ = (int)id;
        else if (bytes != "<|startoftext|>") vocab_->insert(bytes, (uint64_t)id);
    }
    REQUIRE_INPUT(eot_ >= 0, "--tokenizer %s: %s: no \"%s\" token", sp, enc_path.c_str(),
                  kEndOfText);
    for (int b = 0; b < 256; b++) {
        const char c = (char)b;
        byte_token_[b] = token_of(std::string_view(&c, 1));
        REQUIRE_INPUT(byte_token_[b] >= 0, "--tokenizer %s: %s: no token for byte %d", sp,
                      enc_path.c_str(), b);
    }

    // vocab.bpe lists the merges in priority order. tiktoken ranks the 256 byte tokens
    // first and merge i as 256 + i, and requires those ranks to be the ids of
    // encoder.json; we encode with ids as ranks, so check the same thing.
    {
        std::istringstream in(read_file(bpe_path, spec));
        std::string line, a, b, ab;
        std::getline(in, line);
        REQUIRE_INPUT(line.rfind("#version", 0) == 0, "--tokenizer %s: %s: expected a first "
                      "line \"#version: ...\", got \"%s\"", sp, bpe_path.c_str(), line.c_str());
        std::vector<bool> ranked(tokens_.size(), false);
        for (int b = 0; b < 256; b++) ranked[(size_t)byte_token_[b]] = true;
        int64_t rank = 256, lineno = 1;
        while (std::getline(in, line)) {
            lineno++;
            if (line.empty()) continue;
            size_t sp1 = line.find(' ');
            REQUIRE_INPUT(sp1 != std::string::npos && sp1 > 0 && sp1 + 1 < line.size() &&
                              line.find(' ', sp1 + 1) == std::string::npos,
                          "--tokenizer %s: %s line %lld: expected \"first second\"", sp,
                          bpe_path.c_str(), (long long)lineno);
            bool ok = decode_gpt2_string(line.substr(0, sp1), u2b, &a) &&
                      decode_gpt2_string(line.substr(sp1 + 1), u2b, &b);
            REQUIRE_INPUT(ok, "--tokenizer %s: %s line %lld: a character outside GPT-2's byte "
                          "alphabet", sp, bpe_path.c_str(), (long long)lineno);
            ab = a + b;
            const int id = token_of(ab);
            REQUIRE_INPUT(id == rank && !ranked[(size_t)id], "--tokenizer %s: %s line %lld: "
                          "merge \"%s\" has rank %lld but %s gives its token id %d; the two "
                          "files do not belong together", sp, bpe_path.c_str(),
                          (long long)lineno, line.c_str(), (long long)rank, enc_path.c_str(),
                          id);
            ranked[(size_t)id] = true;
            rank++;
        }
        REQUIRE_INPUT(rank == (int64_t)tokens_.size() - 1, "--tokenizer %s: %s has %lld merges, "
                      "%s has %zu tokens: expected 256 + merges + <|endoftext|>", sp,
                      bpe_path.c_str(), (long long)(rank - 256), enc_path.c_str(),
                      tokens_.size());
    }

    // tiktoken merges two parts when their concatenation is a token, so index every token
    // by each way of cutting it into two tokens.
    std::vector<std::pair<uint64_t, int32_t>> pairs;
    for (size_t t = 0; t < tokens_.size(); t++) {
        const std::string& s = tokens_[t];
        if ((int)t == eot_) continue;
        for (size_t k = 1; k < s.size(); k++) {
            int a = token_of(std::string_view(s).substr(0, k));
            int b = a < 0 ? -1 : token_of(std::string_view(s).substr(k));
            if (b >= 0) pairs.push_back({((uint64_t)a << 32 | (uint32_t)b) + 1, (int32_t)t});
        }
    }
    size_t cap = 1;
    while (cap < 2 * pairs.size()) cap *= 2;
    pair_keys_.assign(cap, 0);
    pair_vals_.assign(cap, 0);
    for (const auto& [key, val] : pairs) {
        size_t i = hash_bytes(reinterpret_cast<const char*>(&key), 8) & (cap - 1);
        while (pair_keys_[i] != 0) i = (i + 1) & (cap - 1);
        pair_keys_[i] = key;
        pair_vals_[i] = val;
    }

    int err;
    PCRE2_SIZE off;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)kPattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &err, &off, nullptr);
    LNS_CHECK(re != nullptr, "PCRE2 rejected GPT-2's pattern (error %d at %zu)", err, (size_t)off);
    jit_ = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;  // else the interpreter, slower
    re_ = re;
}

Gpt2Tokenizer::~Gpt2Tokenizer() {
    pcre2_code_free(static_cast<pcre2_code*>(re_));
    delete vocab_;
}

int Gpt2Tokenizer::token_of(std::string_view bytes) const {
    const uint64_t* v = vocab_->find(bytes);
    return v ? (int)*v : -1;
}

int Gpt2Tokenizer::merge_of(int a, int b) const {
    const uint64_t key = ((uint64_t)a << 32 | (uint32_t)b) + 1;
    const size_t mask = pair_keys_.size() - 1;
    size_t i = hash_bytes(reinterpret_cast<const char*>(&key), 8) & mask;
    for (;; i = (i + 1) & mask) {
        if (pair_keys_[i] == key) return pair_vals_[i];
        if (pair_keys_[i] == 0) return INT32_MAX;
    }
}

void Gpt2Tokenizer::bpe(std::string_view piece, std::vector<int>& out, bool heap) const {
    const size_t n = piece.size();
    if (n == 0) return;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(piece.data());
    if (!heap || n < 2) {
        // tiktoken's loop: ids of the parts and, for each, the rank of merging it with its
        // right neighbour; merge the leftmost lowest, update its two neighbours, repeat.
        thread_local std::vector<int> ids, rank;
        ids.resize(n);
        rank.resize(n);
        for (size_t i = 0; i < n; i++) ids[i] = byte_token_[p[i]];
        for (size_t i = 0; i + 1 < n; i++) rank[i] = merge_of(ids[i], ids[i + 1]);
        rank[n - 1] = INT32_MAX;
        size_t m = n;
        for (;;) {
            size_t best = 0;
            for (size_t i = 1; i + 1 < m; i++)
                if (rank[i] < rank[best]) best = i;
            if (m < 2 || rank[best] == INT32_MAX) break;
            ids[best] = rank[best];  // for GPT-2 the rank is the merged token's id
            for (size_t i = best + 1; i + 1 < m; i++) {
                ids[i] = ids[i + 1];
                rank[i] = rank[i + 1];
            }
            m--;
            rank[best] = best + 1 < m ? merge_of(ids[best], ids[best + 1]) : INT32_MAX;
            if (best > 0) rank[best - 1] = merge_of(ids[best - 1], ids[best]);
        }
        out.insert(out.end(), ids.begin(), ids.begin() + m);
        return;
    }
    // Long pieces: the same merges in the same order, from a heap of candidate merges
    // ordered by (rank, position) over a linked list of parts, so O(n log n) instead of
    // O(n^2). A part is named by its first byte; ver[] changes whenever a part does, so
    // stale heap entries are recognised and skipped.
    std::vector<int> id(n), next(n), prev(n), ver(n, 0);
    for (size_t i = 0; i < n; i++) {
        id[i] = byte_token_[p[i]];
        next[i] = (int)i + 1;
        prev[i] = (int)i - 1;
    }
    struct Cand {
        int rank, left, right, vl, vr;
        bool operator>(const Cand& o) const {
            return rank != o.rank ? rank > o.rank : left > o.left;
        }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap_q;
    auto push = [&](int l) {
        if (l < 0 || next[l] >= (int)n) return;
        const int r = next[l];
        int m = merge_of(id[l], id[r]);
        if (m != INT32_MAX) heap_q.push({m, l, r, ver[l], ver[r]});
    };
    for (int i = 0; i + 1 < (int)n; i++) push(i);
    while (!heap_q.empty()) {
        Cand c = heap_q.top();
        heap_q.pop();
        if (ver[c.left] != c.vl || ver[c.right] != c.vr || next[c.left] != c.right) continue;
        id[c.left] = c.rank;
        ver[c.left]++;
        ver[c.right] = -1;  // absorbed: never valid again
        next[c.left] = next[c.right];
        if (next[c.left] < (int)n) prev[next[c.left]] = c.left;
        push(c.left);
        if (prev[c.left] >= 0) push(prev[c.left]);
    }
    for (int i = 0; i < (int)n; i = next[i]) out.push_back(id[i]);
}

std::vector<std::string_view> Gpt2Tokenizer::pretokenize(std::string_view text) const {
    REQUIRE_INPUT(utf8_first_invalid(text) == text.size(), "%s: invalid UTF-8", spec_.c_str());
    std::vector<std::string_view> pieces;
    Scratch& s = tl_scratch;
    const pcre2_code* re = static_cast<const pcre2_code*>(re_);
    const PCRE2_SPTR subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    for (size_t pos = 0; pos < text.size();) {
        int rc = jit_ ? pcre2_jit_match(re, subject, text.size(), pos, 0, s.md, s.mc)
                      : pcre2_match(re, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.md, s.mc);
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
        LNS_CHECK(rc > 0 && ov[0] == pos && ov[1] > pos, "PCRE2 found no GPT-2 piece at byte %zu "
                  "(rc %d)", pos, rc);
        pieces.push_back(text.substr(pos, ov[1] - pos));
        pos = ov[1];
    }
    return pieces;
}

void Gpt2Tokenizer::encode_ordinary(std::string_view text, std::vector<int>& out) const {
    Scratch& s = tl_scratch;
    if (s.owner != serial_) s.reset(serial_);
    const pcre2_code* re = static_cast<const pcre2_code*>(re_);
    const PCRE2_SPTR subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
    for (size_t pos = 0; pos < text.size();) {
        // Checked UTF-8 already, hence pcre2_jit_match (no re-check) / PCRE2_NO_UTF_CHECK.
        int rc = jit_ ? pcre2_jit_match(re, subject, text.size(), pos, 0, s.md, s.mc)
                      : pcre2_match(re, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.md, s.mc);
        LNS_CHECK(rc > 0 && ov[0] == pos && ov[1] > pos, "PCRE2 found no GPT-2 piece at byte %zu "
                  "(rc %d)", pos, rc);
        const std::string_view piece = text.substr(pos, ov[1] - pos);
        pos = ov[1];
        if (piece.size() == 1) {
            out.push_back(byte_token_[(unsigned char)piece[0]]);
        } else if (const uint64_t* v = vocab_->find(piece)) {
            out.push_back((int)*v);  // a whole token: taken as is, as tiktoken does
        } else if (const uint64_t* c = s.cache.find(piece)) {
            out.insert(out.end(), s.ids.begin() + (ptrdiff_t)(*c >> 32),
                       s.ids.begin() + (ptrdiff_t)((*c >> 32) + (*c & 0xFFFFFFFF)));
        } else {
            const size_t before = out.size();
            bpe(piece, out, piece.size() >= kHeapFrom);
            const size_t count = out.size() - before;
            if (s.cache.arena_bytes() + piece.size() > Scratch::kCacheBytes) s.reset(serial_);
            s.cache.insert(piece, (uint64_t)s.ids.size() << 32 | count);
            s.ids.insert(s.ids.end(), out.begin() + (ptrdiff_t)before, out.end());
        }
    }
}

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int>& out,
                                  bool allow_special) const {
    const size_t bad = utf8_first_invalid(text);
    REQUIRE_INPUT(bad == text.size(), "--tokenizer %s: invalid UTF-8 at byte offset %zu of the "
                  "text (repair it with utf8_sanitize, or `tokenize` without --strict-utf8)",
                  spec_.c_str(), bad);
    if (!allow_special) {
        encode_ordinary(text, out);
        return;
    }
    const std::string_view eot(kEndOfText);
    for (;;) {
        const size_t at = text.find(eot);
        encode_ordinary(text.substr(0, at), out);
        if (at == std::string_view::npos) return;
        out.push_back(eot_);
        text.remove_prefix(at + eot.size());
    }
}

std::string Gpt2Tokenizer::decode(const int* ids, size_t n) const {
    std::string s;
    for (size_t i = 0; i < n; i++) {
        REQUIRE_INPUT(ids[i] >= 0 && ids[i] < vocab_size(), "--tokenizer %s: cannot decode id %d "
                      "(position %zu), expected 0..%d", spec_.c_str(), ids[i], i,
                      vocab_size() - 1);
        s += tokens_[(size_t)ids[i]];
    }
    return s;
}

bool Gpt2Tokenizer::can_split_at(std::string_view t, size_t p) const {
    // "x\nY" with x, Y printable ASCII: no piece spans the newline (it is a piece alone,
    // whole or cut: "\n" before a non-space), so the halves encode as the whole does.
    // Before a run of whitespace the cut could regroup it, hence the strict rule.
    auto graph = [](char c) { return c > ' ' && c < 0x7F; };
    return p >= 2 && p < t.size() && t[p - 1] == '\n' && graph(t[p - 2]) && graph(t[p]);
}
