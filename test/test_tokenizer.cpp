// Tokenizers: GPT-2 BPE token for token against an independent implementation
// (test/data/tokenizer/gpt2_reference.jsonl, made by scripts/make_gpt2_reference.js with
// js-tiktoken), round trips, special tokens, UTF-8 repair, PCRE2's Unicode classes,
// SentencePiece through a model trained here with spm_train, and bytes.
#include <catch2/catch.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/check.h"
#include "common/rng.h"
#include "test/test_util.h"
#include "tokenizer/gpt2.h"
#include "tokenizer/tokenizer.h"

namespace {

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE(f.good());
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// GPT-2 loads once for all tests; fetched by `make gpt2-vocab` (a prerequisite of test).
const Gpt2Tokenizer& gpt2() {
    static std::unique_ptr<Gpt2Tokenizer> tok;
    if (!tok) {
        try {
            tok = std::make_unique<Gpt2Tokenizer>(gpt2_vocab_dir(), "gpt2");
        } catch (const UserError& e) {
            FAIL("GPT-2 vocabulary missing (run scripts/get_gpt2_vocab.sh): " << e.what());
        }
    }
    return *tok;
}

struct RefCase {
    std::string name, text;  // text: for cases given in hex, the raw bytes
    bool invalid;            // given in hex: ill-formed UTF-8 (or at its edge)
    std::vector<int> ids;
};

std::vector<RefCase> reference() {
    std::vector<RefCase> cases;
    std::istringstream in(slurp(repo_root() + "/test/data/tokenizer/gpt2_reference.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        RefCase c{j["name"], "", j.contains("hex"), j["ids"].get<std::vector<int>>()};
        if (c.invalid) {
            const std::string hex = j["hex"];
            for (size_t i = 0; i < hex.size(); i += 2)
                c.text += (char)std::stoi(hex.substr(i, 2), nullptr, 16);
        } else {
            c.text = j["text"];
        }
        cases.push_back(std::move(c));
    }
    return cases;
}

}  // namespace

TEST_CASE("gpt2: ids equal the reference implementation's on every test text", "[tokenizer]") {
    const Gpt2Tokenizer& tok = gpt2();
    const auto cases = reference();
    REQUIRE(cases.size() >= 400);
    size_t exact = 0, ill_formed = 0;
    for (const RefCase& c : cases) {
        INFO(c.name);
        std::string text = c.text;
        if (c.invalid && utf8_first_invalid(text) < text.size()) {
            ill_formed++;
            REQUIRE(utf8_sanitize(text) > 0);  // as the reference's decoder repaired it
        }
        const std::vector<int> ids = tok.encode(text);
        CHECK(ids == c.ids);
        exact += ids == c.ids;
        CHECK(tok.decode(ids) == text);  // round trip
    }
    REQUIRE(ill_formed >= 15);
    REQUIRE(exact == cases.size());
}

TEST_CASE("gpt2: long texts split at split_points encode as the whole does", "[tokenizer]") {
    const Gpt2Tokenizer& tok = gpt2();
    std::string all;  // every reference text back to back, then Shakespeare
    for (const RefCase& c : reference())
        if (!c.invalid) all += c.text + "\n";
    all += slurp(repo_root() + "/test/data/shakespeare_64k.txt");
    const std::vector<int> whole = tok.encode(all);
    for (size_t target : {1, 7, 100, 4096}) {
        const auto starts = split_points(tok, all, target);
        REQUIRE(starts.size() > 10);
        std::vector<int> parts;
        for (size_t i = 0; i < starts.size(); i++) {
            size_t end = i + 1 < starts.size() ? starts[i + 1] : all.size();
            tok.encode_append(std::string_view(all).substr(starts[i], end - starts[i]), parts);
        }
        REQUIRE(parts == whole);
    }
    REQUIRE(tok.decode(whole) == all);
}

TEST_CASE("gpt2: the heap merge equals tiktoken's loop on long pieces", "[tokenizer]") {
    const Gpt2Tokenizer& tok = gpt2();
    // words run together so that many merges apply, plus random bytes of small alphabets
    const std::string words = slurp(repo_root() + "/test/data/shakespeare_64k.txt");
    Rng rng(7);
    for (int i = 0; i < 300; i++) {
        std::string piece;
        const size_t n = 2 + rng.next_u64() % 400;
        if (i % 2 == 0) {
            for (char c : words.substr(rng.next_u64() % (words.size() - 2 * n), 2 * n))
                if (isalpha((unsigned char)c) && piece.size() < n) piece += c;
        } else {
            const char* alpha[] = {"ab", "aeiou tn", "0123456789", "!=-", "\xe4\xb8\xad "};
            const std::string a = alpha[i / 2 % 5];
            while (piece.size() < n) piece += a[rng.next_u64() % a.size()];
        }
        std::vector<int> loop, heap;
        tok.bpe(piece, loop, false);
        tok.bpe(piece, heap, true);
        INFO(piece);
        REQUIRE(loop == heap);
        REQUIRE(tok.decode(heap) == piece);
    }
    // a piece far past kHeapFrom, through encode: one run of letters, 200 KB
    std::string big;
    while (big.size() < 200000) big += "thequickbrownfoxjumpsoverthelazydog";
    std::vector<int> ids = tok.encode(big), loop;
    tok.bpe(big.substr(0, 3000), loop, false);
    REQUIRE(tok.decode(ids) == big);
    std::vector<int> head = tok.encode(big.substr(0, 3000));
    REQUIRE(head == loop);
}

TEST_CASE("gpt2: pre-tokenisation, special tokens, vocabulary", "[tokenizer]") {
    const Gpt2Tokenizer& tok = gpt2();
    REQUIRE(tok.vocab_size() == 50257);
    REQUIRE(tok.eot_token() == 50256);
    REQUIRE(tok.name() == "gpt2");
    using SV = std::vector<std::string_view>;
    REQUIRE(tok.pretokenize("Hello world's  x\n\n y") ==
            SV{"Hello", " world", "'s", " ", " x", "\n\n", " y"});
    // a whitespace run before a non-space leaves its last character to stand alone
    REQUIRE(tok.pretokenize("I'M 12abc  \t!?") ==
            SV{"I", "'", "M", " 12", "abc", "  ", "\t", "!?"});
    // NEL (U+0085) is whitespace, U+180E and U+FEFF are not, as in tiktoken
    REQUIRE(tok.pretokenize("a \xc2\x85 b") == SV{"a", " \xc2\x85", " b"});
    REQUIRE(tok.pretokenize("a \xe1\xa0\x8e b") == SV{"a", " \xe1\xa0\x8e", " b"});

    // "<|endoftext|>" is text unless asked for
    const std::vector<int> plain = tok.encode("a<|endoftext|>b");
    REQUIRE(plain == std::vector<int>{64, 27, 91, 437, 1659, 5239, 91, 29, 65});
    REQUIRE(tok.encode("a<|endoftext|>b", true) == std::vector<int>{64, 50256, 65});
    REQUIRE(tok.encode("<|endoftext|><|endoftext|>", true) == std::vector<int>{50256, 50256});
    REQUIRE(tok.decode(std::vector<int>{50256}) == "<|endoftext|>");
    REQUIRE(tok.encode("").empty());

    REQUIRE_THROWS_WITH(tok.decode(std::vector<int>{50257}), Catch::Contains("50257"));
    REQUIRE_THROWS_WITH(tok.decode(std::vector<int>{-1}), Catch::Contains("-1"));
    REQUIRE_THROWS_WITH(tok.encode("abc\xff"), Catch::Contains("byte offset 3"));
    REQUIRE_THROWS_WITH(tok.encode("\xe4\xb8"), Catch::Contains("byte offset 0"));

    // safe split points: after "\n" between printable ASCII only
    REQUIRE(tok.can_split_at("ab\ncd", 3));
    REQUIRE_FALSE(tok.can_split_at("ab \ncd", 4));
    REQUIRE_FALSE(tok.can_split_at("ab\n cd", 3));
    REQUIRE_FALSE(tok.can_split_at("ab\r\ncd", 4));
}

TEST_CASE("gpt2: thread-safe, and caches do not leak between tokenizers", "[tokenizer]") {
    const Gpt2Tokenizer& tok = gpt2();
    const auto cases = reference();
    std::vector<int> failures(cases.size(), 0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(4)
    for (size_t i = 0; i < cases.size(); i++) {
        std::string text = cases[i].text;
        utf8_sanitize(text);
        failures[i] = tok.encode(text) != cases[i].ids;
    }
    for (size_t i = 0; i < cases.size(); i++) REQUIRE(failures[i] == 0);
    // a second tokenizer on the same thread starts from an empty cache
    Gpt2Tokenizer other(gpt2_vocab_dir(), "gpt2:again");
    REQUIRE(other.encode(cases[0].text) == tok.encode(cases[0].text));
}

TEST_CASE("gpt2: bad vocabulary files are UserErrors naming the file", "[tokenizer]") {
    TmpDir d;
    REQUIRE_THROWS_WITH(make_tokenizer("gpt2:" + d.path),
                        Catch::Contains(d / "encoder.json") && Catch::Contains("get_gpt2_vocab"));
    const std::string enc = slurp(gpt2_vocab_dir() + "/encoder.json");
    const std::string bpe = slurp(gpt2_vocab_dir() + "/vocab.bpe");
    auto write = [&](const std::string& name, const std::string& s) {
        std::ofstream(d / name, std::ios::binary) << s;
    };
    write("encoder.json", enc.substr(0, enc.size() / 2));
    REQUIRE_THROWS_WITH(make_tokenizer("gpt2:" + d.path),
                        Catch::Contains(d / "encoder.json") && Catch::Contains("JSON"));
    write("encoder.json", enc);
    REQUIRE_THROWS_WITH(make_tokenizer("gpt2:" + d.path), Catch::Contains(d / "vocab.bpe"));
    // two merges swapped: the ranks no longer match the ids
    std::istringstream in(bpe);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    std::swap(lines[100], lines[101]);
    std::string swapped;
    for (const auto& l : lines) swapped += l + "\n";
    write("vocab.bpe", swapped);
    REQUIRE_THROWS_WITH(make_tokenizer("gpt2:" + d.path),
                        Catch::Contains(d / "vocab.bpe") && Catch::Contains("line 101"));
    write("vocab.bpe", bpe);
    REQUIRE(make_tokenizer("gpt2:" + d.path)->vocab_size() == 50257);
}

TEST_CASE("gpt2: PCRE2's Unicode classes agree with the reference's", "[tokenizer]") {
    // The reference engine (node) may know a newer Unicode than PCRE2; every code point
    // where their L / N / White_Space classes differ must be one PCRE2 sees as unassigned
    // (a character added since). Anything else would be a real disagreement.
    std::istringstream in(slurp(repo_root() + "/test/data/tokenizer/unicode_classes.txt"));
    std::vector<std::pair<uint32_t, char>> runs;
    std::string line;
    while (std::getline(in, line))
        if (line[0] != '#') runs.push_back({(uint32_t)std::stoul(line, nullptr, 16), line.back()});
    REQUIRE(runs.size() > 1000);

    auto compile = [](const char* pat) {
        int err;
        PCRE2_SIZE off;
        pcre2_code* re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &err, &off, nullptr);
        REQUIRE(re != nullptr);
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
        return re;
    };
    pcre2_code* re[4] = {compile("\\p{L}"), compile("\\p{N}"), compile("\\p{White_Space}"),
                         compile("\\p{Cn}")};
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    auto is = [&](int k, const char* s, size_t n) {
        return pcre2_match(re[k], (PCRE2_SPTR)s, n, 0, 0, md, nullptr) > 0;
    };
    size_t differ = 0, checked = 0;
    size_t r = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        while (r + 1 < runs.size() && runs[r + 1].first <= cp) r++;
        char s[4];
        size_t n;
        if (cp < 0x80) s[0] = (char)cp, n = 1;
        else if (cp < 0x800) s[0] = (char)(0xC0 | cp >> 6), s[1] = (char)(0x80 | (cp & 63)), n = 2;
        else if (cp < 0x10000)
            s[0] = (char)(0xE0 | cp >> 12), s[1] = (char)(0x80 | (cp >> 6 & 63)),
            s[2] = (char)(0x80 | (cp & 63)), n = 3;
        else
            s[0] = (char)(0xF0 | cp >> 18), s[1] = (char)(0x80 | (cp >> 12 & 63)),
            s[2] = (char)(0x80 | (cp >> 6 & 63)), s[3] = (char)(0x80 | (cp & 63)), n = 4;
        const char mine = is(0, s, n) ? 'L' : is(1, s, n) ? 'N' : is(2, s, n) ? 'W' : 'O';
        checked++;
        if (mine != runs[r].second) {
            differ++;
            INFO("U+" << std::hex << cp << ": PCRE2 " << mine << ", reference "
                      << runs[r].second);
            REQUIRE(is(3, s, n));  // unassigned in PCRE2's Unicode
        }
    }
    REQUIRE(checked == 0x110000 - 0x800);
    // 14049 with PCRE2 10.42 (Unicode 14) against node 20 (Unicode 17); see doc/tokenizer.md
    REQUIRE(differ < 20000);
    for (auto* x : re) pcre2_code_free(x);
    pcre2_match_data_free(md);
}

TEST_CASE("utf8: validation and repair per maximal subpart", "[tokenizer]") {
    REQUIRE(utf8_first_invalid("") == 0);
    REQUIRE(utf8_first_invalid("plain ascii text") == 16);
    REQUIRE(utf8_first_invalid("\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf") == 13);
    struct Case {
        std::string in;
        size_t first, replaced;
        std::string out;
    };
    const std::string R = "\xef\xbf\xbd";  // U+FFFD
    const Case cases[] = {
        {"ab\xff" "cd", 2, 1, "ab" + R + "cd"},
        {"\xc0\xaf", 0, 2, R + R},                       // overlong: C0 never leads
        {"\xe0\x80\x80", 0, 3, R + R + R},               // overlong 3-byte
        {"\xed\xa0\x80", 0, 3, R + R + R},               // surrogate
        {"\xf4\x90\x80\x80", 0, 4, R + R + R + R},       // above U+10FFFF
        {"\xe2\x82", 0, 1, R},                           // truncated: one maximal subpart
        {"x\xf0\x9f\x98", 1, 1, "x" + R},                // truncated emoji
        {"\xf0\x9f\x98 ok", 0, 1, R + " ok"},
        {"\x80\x80", 0, 2, R + R},                       // stray continuations
        {"\xc2" "a", 0, 1, R + "a"},
        {"123456789\xfe", 9, 1, "123456789" + R},        // past the 8-byte fast path
    };
    for (const Case& c : cases) {
        INFO(c.in);
        REQUIRE(utf8_first_invalid(c.in) == c.first);
        std::string s = c.in;
        REQUIRE(utf8_sanitize(s) == c.replaced);
        REQUIRE(s == c.out);
        REQUIRE(utf8_first_invalid(s) == s.size());
    }
}

TEST_CASE("bytes: one token per byte, any bytes", "[tokenizer]") {
    auto tok = make_tokenizer("bytes");
    REQUIRE(tok->vocab_size() == 256);
    REQUIRE(tok->eot_token() == -1);
    REQUIRE_FALSE(tok->needs_utf8());
    std::string all;
    for (int b = 0; b < 256; b++) all += (char)b;
    const std::vector<int> ids = tok->encode(all);
    REQUIRE(ids.size() == 256);
    for (int b = 0; b < 256; b++) REQUIRE(ids[(size_t)b] == b);
    REQUIRE(tok->decode(ids) == all);
    REQUIRE_THROWS_WITH(tok->decode(std::vector<int>{256}), Catch::Contains("256"));
}

TEST_CASE("make_tokenizer: unknown specs name the flag", "[tokenizer]") {
    REQUIRE_THROWS_WITH(make_tokenizer("gpt3"), Catch::Contains("--tokenizer gpt3"));
    REQUIRE_THROWS_WITH(make_tokenizer("sentencepiece:"), Catch::Contains("sentencepiece:PATH"));
    REQUIRE_THROWS_WITH(make_tokenizer("sentencepiece:/no/such.model"),
                        Catch::Contains("/no/such.model"));
    REQUIRE(make_tokenizer("gpt2")->vocab_size() == 50257);
}

TEST_CASE("sentencepiece: a model trained here with spm_train", "[tokenizer]") {
    TmpDir d;
    const std::string text = repo_root() + "/test/data/shakespeare_64k.txt";
    // identity normalisation and kept whitespace make decode(encode(x)) == x exactly
    std::string out;
    const int rc = run_command("spm_train --input=" + text + " --model_prefix=" + (d / "sp") +
                                   " --vocab_size=1000 --model_type=bpe --byte_fallback=true "
                                   "--normalization_rule_name=identity "
                                   "--remove_extra_whitespaces=false --split_digits=true "
                                   "--num_threads=2 --minloglevel=2",
                               &out);
    INFO(out);
    REQUIRE(rc == 0);
    auto tok = make_tokenizer("sentencepiece:" + (d / "sp.model"));
    REQUIRE(tok->vocab_size() == 1000);
    REQUIRE(tok->eot_token() == 2);  // spm_train's default </s>
    REQUIRE_FALSE(tok->can_split_at("a\nb", 2));

    const std::string shakespeare = slurp(text);
    std::istringstream in(shakespeare);
    size_t lines = 0;
    for (std::string line; std::getline(in, line) && lines < 500; lines++) {
        INFO(line);
        const std::vector<int> ids = tok->encode(line);
        for (int id : ids) REQUIRE((id >= 0 && id < 1000));
        REQUIRE(tok->decode(ids) == line);
    }
    // characters the model never saw come back through byte fallback
    for (const char* s :
         {"caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80", "tabs\tand  spaces"})
        REQUIRE(tok->decode(tok->encode(s)) == s);
    const std::vector<int> all = tok->encode(shakespeare);
    REQUIRE(all.size() * 2 < shakespeare.size());  // it does compress
    REQUIRE_THROWS_WITH(tok->encode("bad \xff"), Catch::Contains("byte offset 4"));
    REQUIRE_THROWS_WITH(tok->decode(std::vector<int>{1000}), Catch::Contains("1000"));
}
