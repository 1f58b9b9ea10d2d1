// The byte-level tokenizer: one token per byte, vocabulary 256. Enough for offline
// smoke runs; the BPE and SentencePiece tokenizers share this interface.
#pragma once
#include <string>
#include <vector>

struct ByteTokenizer {
    static constexpr int vocab_size = 256;
    std::vector<int> encode(const std::string& text) const {
        const unsigned char* p = reinterpret_cast<const unsigned char*>(text.data());
        return std::vector<int>(p, p + text.size());
    }
    std::string decode(const std::vector<int>& ids) const {
        std::string s;
        for (int id : ids) s += (char)(unsigned char)id;
        return s;
    }
};
