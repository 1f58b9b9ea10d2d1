// libFuzzer target: arbitrary bytes through the GPT-2 encoder. Ill-formed UTF-8 must be a
// UserError, never a crash; after utf8_sanitize every text must round-trip through
// encode/decode, give the same ids when cut at split_points, and keep ids in the vocab.
// Needs GPT-2's files (make gpt2-vocab).
#include <cstdint>
#include <memory>
#include <string>

#include "common/check.h"
#include "tokenizer/gpt2.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static std::unique_ptr<Gpt2Tokenizer> tok =
        std::make_unique<Gpt2Tokenizer>(gpt2_vocab_dir(), "gpt2");
    std::string text(reinterpret_cast<const char*>(data), size);
    const bool valid = utf8_first_invalid(text) == text.size();
    try {
        tok->encode(text);
        if (!valid) __builtin_trap();  // accepted ill-formed UTF-8
    } catch (const UserError&) {
        if (valid) __builtin_trap();
    }
    utf8_sanitize(text);
    if (utf8_first_invalid(text) != text.size()) __builtin_trap();
    for (bool special : {false, true}) {
        const std::vector<int> ids = tok->encode(text, special);
        for (int id : ids)
            if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
        if (tok->decode(ids) != text) __builtin_trap();
        std::vector<int> parts;
        const auto starts = split_points(*tok, text, 1 + size % 13);
        for (size_t i = 0; i < starts.size(); i++) {
            const size_t end = i + 1 < starts.size() ? starts[i + 1] : text.size();
            tok->encode_append(std::string_view(text).substr(starts[i], end - starts[i]), parts,
                               special);
        }
        if (parts != ids) __builtin_trap();
    }
    // the heap merge and tiktoken's loop agree on any piece
    std::vector<int> a, b;
    tok->bpe(text, a, false);
    tok->bpe(text, b, true);
    if (a != b) __builtin_trap();
    return 0;
}
