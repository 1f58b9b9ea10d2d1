// make_tokenizer, the bytes tokenizer, UTF-8 checking and repair, parallel split points.
#include "tokenizer/tokenizer.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/check.h"
#include "tokenizer/gpt2.h"
#include "tokenizer/sentencepiece.h"

namespace {

class BytesTokenizer : public Tokenizer {
public:
    void encode_append(std::string_view text, std::vector<int>& out, bool) const override {
        for (unsigned char c : text) out.push_back(c);
    }
    std::string decode(const int* ids, size_t n) const override {
        std::string s(n, '\0');
        for (size_t i = 0; i < n; i++) {
            REQUIRE_INPUT(ids[i] >= 0 && ids[i] < 256,
                          "bytes tokenizer: cannot decode id %d (position %zu), expected 0..255",
                          ids[i], i);
            s[i] = (char)ids[i];
        }
        return s;
    }
    int vocab_size() const override { return 256; }
    int eot_token() const override { return -1; }
    const std::string& name() const override { return name_; }
    bool needs_utf8() const override { return false; }
    bool can_split_at(std::string_view, size_t) const override { return true; }

private:
    std::string name_ = "bytes";
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
    if (spec == "bytes") return std::make_unique<BytesTokenizer>();
    if (spec == "gpt2") return std::make_unique<Gpt2Tokenizer>(gpt2_vocab_dir(), spec);
    if (spec.rfind("gpt2:", 0) == 0) return std::make_unique<Gpt2Tokenizer>(spec.substr(5), spec);
    const std::string sp = "sentencepiece:";
    if (spec.rfind(sp, 0) == 0) {
        REQUIRE_INPUT(spec.size() > sp.size(), "--tokenizer %s: expected sentencepiece:PATH "
                      "with the path of a .model file", spec.c_str());
        return make_sentencepiece_tokenizer(spec.substr(sp.size()), spec);
    }
    throw UserError(strfmt("--tokenizer %s: unknown tokenizer, expected bytes, gpt2, gpt2:DIR "
                           "or sentencepiece:PATH", spec.c_str()));
}

std::string gpt2_vocab_dir() {
    const char* d = getenv("LNS_GPT2_DIR");
    if (d && *d) return d;
    const char* x = getenv("XDG_CACHE_HOME");
    if (x && *x) return std::string(x) + "/lns/gpt2";
    const char* h = getenv("HOME");
    return std::string(h && *h ? h : ".") + "/.cache/lns/gpt2";
}

std::vector<size_t> split_points(const Tokenizer& tok, std::string_view text, size_t target) {
    std::vector<size_t> starts{0};
    if (target == 0) target = 1;
    // Candidates are the starts of lines: cheap to find, and where text splits naturally.
    size_t p = target;
    while (p < text.size()) {
        const void* nl = memchr(text.data() + p - 1, '\n', text.size() - (p - 1));
        if (!nl) break;
        size_t q = (size_t)((const char*)nl - text.data()) + 1;
        if (q >= text.size()) break;
        if (tok.can_split_at(text, q)) {
            starts.push_back(q);
            p = q + target;
        } else {
            p = q + 1;
        }
    }
    return starts;
}

// ---- UTF-8 (Unicode 15, table 3-7 "well-formed byte sequences")

namespace {

// Length (1-4) of the well-formed sequence at p, or 0 if it is ill-formed; then *sub is
// the length of its maximal subpart (>= 1): the bytes that one U+FFFD replaces.
int utf8_seq(const unsigned char* p, size_t n, int* sub) {
    const unsigned c = p[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;       // no overlong forms
        else if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;       // no overlong forms
        else if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        *sub = 1;  // 80..C1, F5..FF never start a sequence
        return 0;
    }
    for (int i = 1; i < len; i++) {
        const unsigned b = (size_t)i < n ? p[i] : 0;
        if ((size_t)i >= n || b < (i == 1 ? lo : 0x80u) || b > (i == 1 ? hi : 0xBFu)) {
            *sub = i;
            return 0;
        }
    }
    return len;
}

}  // namespace

size_t utf8_first_invalid(std::string_view text) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t i = 0;
    while (i < n) {
        // ASCII fast path, 8 bytes at a time
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        int sub;
        int len = utf8_seq(p + i, n - i, &sub);
        if (len == 0) return i;
        i += (size_t)len;
    }
    return n;
}

size_t utf8_sanitize(std::string& text) {
    size_t i = utf8_first_invalid(text);
    if (i == text.size()) return 0;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    std::string out(text, 0, i);
    size_t replaced = 0;
    while (i < n) {
        int sub = 0;
        int len = utf8_seq(p + i, n - i, &sub);
        if (len > 0) {
            out.append(text, i, (size_t)len);
            i += (size_t)len;
        } else {
            out += "\xEF\xBF\xBD";  // U+FFFD
            replaced++;
            i += (size_t)sub;
        }
    }
    text.swap(out);
    return replaced;
}
