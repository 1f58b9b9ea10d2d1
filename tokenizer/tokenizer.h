// One interface for every tokenizer, chosen by a spec string (the --tokenizer flag):
//   "bytes"                 one token per byte, vocab 256, no end-of-text token
//   "gpt2" / "gpt2:DIR"     GPT-2 byte-level BPE from encoder.json + vocab.bpe in DIR
//                           (default: gpt2_vocab_dir(); scripts/get_gpt2_vocab.sh fills it)
//   "sentencepiece:PATH"    any SentencePiece model file (T5, LLaMA, one trained by spm_train)
//
// Every method is const and thread-safe: one tokenizer serves all encoding threads.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Appends the ids of `text` to `out`. gpt2 and sentencepiece need valid UTF-8 and
    // throw UserError with the byte offset of the first bad sequence (utf8_sanitize
    // repairs text first). With allow_special, gpt2 turns the literal "<|endoftext|>"
    // into eot_token(); by default it is ordinary text, as in tiktoken.
    virtual void encode_append(std::string_view text, std::vector<int>& out,
                               bool allow_special = false) const = 0;
    std::vector<int> encode(std::string_view text, bool allow_special = false) const {
        std::vector<int> out;
        encode_append(text, out, allow_special);
        return out;
    }

    // The bytes the ids stand for (UTF-8 for whole texts; a cut through a multi-byte
    // character gives its bytes as they are). UserError for an id outside the vocab.
    virtual std::string decode(const int* ids, size_t n) const = 0;
    std::string decode(const std::vector<int>& ids) const { return decode(ids.data(), ids.size()); }

    virtual int vocab_size() const = 0;
    virtual int eot_token() const = 0;  // end-of-text (document separator); -1: none
    virtual const std::string& name() const = 0;  // the spec it was made from

    // Whether encode needs valid UTF-8 (bytes takes any bytes).
    virtual bool needs_utf8() const { return true; }
    // Whether encoding text[0, p) and text[p, n) separately gives the same ids as
    // encoding text whole, so long documents can be split across threads.
    virtual bool can_split_at(std::string_view text, size_t p) const = 0;
};

// "bytes", "gpt2", "gpt2:DIR" or "sentencepiece:PATH". UserError naming the flag and the
// file on failure (unknown spec, missing or corrupt vocabulary files).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// Where the GPT-2 files live by default: $LNS_GPT2_DIR, else $XDG_CACHE_HOME/lns/gpt2,
// else $HOME/.cache/lns/gpt2 (the same rule as scripts/get_gpt2_vocab.sh).
std::string gpt2_vocab_dir();

// Cuts text into pieces of about `target` bytes at points where can_split_at holds, so
// that encoding the pieces one by one (in parallel) equals encoding the whole. Returns
// the start offsets of the pieces (the first is 0); a text with no split point stays whole.
std::vector<size_t> split_points(const Tokenizer& tok, std::string_view text, size_t target);

// ---- UTF-8
// Byte offset of the first byte of the first ill-formed sequence (overlong forms,
// surrogates, > U+10FFFF, truncated or stray bytes), or text.size() if all is valid.
size_t utf8_first_invalid(std::string_view text);
// Replaces every ill-formed sequence by U+FFFD (one per maximal subpart, as Python's
// errors="replace" and the WHATWG decoder do) and returns how many it replaced.
size_t utf8_sanitize(std::string& text);
