// The SentencePiece tokenizer: a thin wrapper over sentencepiece::SentencePieceProcessor.
#include "tokenizer/sentencepiece.h"

#include <sentencepiece_processor.h>

#include "common/check.h"

namespace {

class SentencePieceTokenizer : public Tokenizer {
public:
    SentencePieceTokenizer(const std::string& path, const std::string& spec) : spec_(spec) {
        const auto st = sp_.Load(path);
        REQUIRE_INPUT(st.ok(), "--tokenizer %s: cannot load the SentencePiece model %s (%s)",
                      spec.c_str(), path.c_str(), st.ToString().c_str());
    }
    void encode_append(std::string_view text, std::vector<int>& out, bool) const override {
        const size_t bad = utf8_first_invalid(text);
        REQUIRE_INPUT(bad == text.size(), "--tokenizer %s: invalid UTF-8 at byte offset %zu of "
                      "the text", spec_.c_str(), bad);
        std::vector<int> ids;
        const auto st = sp_.Encode(text, &ids);
        REQUIRE_INPUT(st.ok(), "--tokenizer %s: encoding failed (%s)", spec_.c_str(),
                      st.ToString().c_str());
        out.insert(out.end(), ids.begin(), ids.end());
    }
    std::string decode(const int* ids, size_t n) const override {
        for (size_t i = 0; i < n; i++)
            REQUIRE_INPUT(ids[i] >= 0 && ids[i] < vocab_size(), "--tokenizer %s: cannot decode "
                          "id %d (position %zu), expected 0..%d", spec_.c_str(), ids[i], i,
                          vocab_size() - 1);
        std::string text;
        const auto st = sp_.Decode(std::vector<int>(ids, ids + n), &text);
        REQUIRE_INPUT(st.ok(), "--tokenizer %s: decoding failed (%s)", spec_.c_str(),
                      st.ToString().c_str());
        return text;
    }
    int vocab_size() const override { return sp_.GetPieceSize(); }
    int eot_token() const override { return sp_.eos_id(); }
    const std::string& name() const override { return spec_; }
    // SentencePiece normalises whitespace across the whole text, so only whole documents
    // are encoded on their own.
    bool can_split_at(std::string_view, size_t) const override { return false; }

private:
    sentencepiece::SentencePieceProcessor sp_;
    std::string spec_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path,
                                                        const std::string& spec) {
    return std::make_unique<SentencePieceTokenizer>(path, spec);
}
