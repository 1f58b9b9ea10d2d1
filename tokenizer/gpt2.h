// GPT-2's byte-level BPE, loaded from the original encoder.json and vocab.bpe, encoding
// exactly as tiktoken's "gpt2" encoding does:
//   1. pre-tokenise with GPT-2's regex (PCRE2, JIT-compiled, Unicode properties);
//   2. a piece that is itself a token becomes that token;
//   3. otherwise start from its bytes and repeatedly merge the adjacent pair whose
//      concatenation is the lowest-ranked token (rank = id for GPT-2), leftmost first.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

class Gpt2Tokenizer : public Tokenizer {
public:
    // Reads DIR/encoder.json and DIR/vocab.bpe; UserError naming `spec` and the file if
    // either is missing, malformed, or the two disagree.
    Gpt2Tokenizer(const std::string& dir, const std::string& spec);
    ~Gpt2Tokenizer() override;

    void encode_append(std::string_view text, std::vector<int>& out,
                       bool allow_special = false) const override;
    std::string decode(const int* ids, size_t n) const override;
    using Tokenizer::decode;
    int vocab_size() const override { return (int)tokens_.size(); }
    int eot_token() const override { return eot_; }
    const std::string& name() const override { return spec_; }
    bool can_split_at(std::string_view text, size_t p) const override;

    // The regex's pieces of `text` (valid UTF-8), for tests.
    std::vector<std::string_view> pretokenize(std::string_view text) const;
    // Step 3 above for one piece, appended to out. `heap` forces the O(n log n) path that
    // long pieces take (otherwise O(n^2) on pieces up to kHeapFrom bytes); for tests.
    void bpe(std::string_view piece, std::vector<int>& out, bool heap) const;
    static constexpr size_t kHeapFrom = 128;

private:
    struct Table;  // open-addressing hash tables, in gpt2.cpp
    void encode_ordinary(std::string_view text, std::vector<int>& out) const;
    int token_of(std::string_view bytes) const;  // -1 if not a (mergeable) token
    int merge_of(int a, int b) const;  // token of bytes(a)+bytes(b), or INT32_MAX if none

    std::string spec_;
    std::vector<std::string> tokens_;  // id -> bytes
    int eot_ = -1;
    int byte_token_[256];              // the single-byte tokens
    Table* vocab_ = nullptr;           // bytes -> id, special tokens excluded
    std::vector<uint64_t> pair_keys_;  // (a << 32 | b) + 1, 0 = empty; open addressing
    std::vector<int32_t> pair_vals_;   // the merged token
    void* re_ = nullptr;               // pcre2_code_8*
    bool jit_ = false;
    uint64_t serial_;                  // tells per-thread caches which tokenizer they hold
};
