// Text and JSONL to shards (build_shards, the `tokenize` tool): documents and end-of-text
// tokens, the train/val cut, shard sizes, determinism across thread counts, bad input.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "dataloader/dataloader.h"
#include "dataloader/shard.h"
#include "dataloader/text_to_shards.h"
#include "test/test_util.h"
#include "tokenizer/tokenizer.h"

namespace {

void write_file(const std::string& path, const std::string& s) {
    std::ofstream f(path, std::ios::binary);
    f << s;
    REQUIRE(f.good());
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// All tokens of the shards, in order.
std::vector<int> read_tokens(const std::vector<std::string>& files, int vocab) {
    std::vector<int> out;
    for (const auto& f : files) {
        Shard s(f, vocab);
        for (size_t i = 0; i < s.size(); i++) out.push_back((int)s[i]);
    }
    return out;
}

const Tokenizer& gpt2() {
    static std::unique_ptr<Tokenizer> tok = make_tokenizer("gpt2");
    return *tok;
}

std::vector<int> with_eot(const Tokenizer& tok, const std::vector<std::string>& docs) {
    std::vector<int> ids;
    for (const auto& d : docs) {
        ids.push_back(tok.eot_token());
        tok.encode_append(d, ids);
    }
    return ids;
}

// A tokenizer with a vocabulary over 65536: byte b -> 65536 + b, end-of-text 70000.
struct WideBytes : Tokenizer {
    void encode_append(std::string_view t, std::vector<int>& out, bool) const override {
        for (unsigned char c : t) out.push_back(65536 + c);
    }
    std::string decode(const int*, size_t) const override { return ""; }
    int vocab_size() const override { return 70001; }
    int eot_token() const override { return 70000; }
    const std::string& name() const override { return name_; }
    bool needs_utf8() const override { return false; }
    bool can_split_at(std::string_view, size_t) const override { return true; }
    std::string name_ = "wide";
};

}  // namespace

TEST_CASE("shard: documents split at <|endoftext|> lines, each led by end-of-text", "[shards]") {
    TmpDir d;
    const std::vector<std::string> docs = {
        "First document.\nIt says <|endoftext|> inline, which stays text.\n\n",
        "Second, with CRLF separator after.\n",
        "Third \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\n"};
    // separators: "\n"-ended, "\r\n"-ended, and one at the very end without a newline
    const std::string text = docs[0] + "<|endoftext|>\n" + docs[1] + "<|endoftext|>\r\n" +
                             "\n \n<|endoftext|>\n" + docs[2] + "<|endoftext|>\n\n";
    write_file(d / "in.txt", text);
    ShardJob job;
    job.inputs = {d / "in.txt"};
    job.out_prefix = d / "out";
    job.val_fraction = 0.3;  // the nearest document boundary to 70% is the third's start
    const ShardStats st = build_shards(gpt2(), job);
    REQUIRE(st.documents == 3);  // the blank ones (between separators, at the end) dropped
    REQUIRE(st.files[0] == std::vector<std::string>{d / "out_train_000000.bin"});
    REQUIRE(st.files[1] == std::vector<std::string>{d / "out_val_000000.bin"});
    REQUIRE(read_tokens(st.files[0], 50257) == with_eot(gpt2(), {docs[0], docs[1]}));
    REQUIRE(read_tokens(st.files[1], 50257) == with_eot(gpt2(), {docs[2]}));
    REQUIRE(st.tokens[0] + st.tokens[1] == with_eot(gpt2(), docs).size());
    REQUIRE(st.bytes == text.size());
}

TEST_CASE("shard: one long document is cut for val at a line start", "[shards]") {
    TmpDir d;
    const std::string text = read_file(repo_root() + "/test/data/shakespeare_64k.txt");
    ShardJob job;
    job.inputs = {repo_root() + "/test/data/shakespeare_64k.txt"};
    job.out_prefix = d / "s";
    job.val_fraction = 0.1;
    const ShardStats st = build_shards(gpt2(), job);
    const std::vector<int> train = read_tokens(st.files[0], 50257),
                           val = read_tokens(st.files[1], 50257);
    REQUIRE(train[0] == 50256);
    REQUIRE(val[0] == 50256);
    const std::string a = gpt2().decode(train.data() + 1, train.size() - 1),
                      b = gpt2().decode(val.data() + 1, val.size() - 1);
    REQUIRE(a + b == text);  // nothing lost, nothing twice
    REQUIRE(a.back() == '\n');
    const double frac = (double)b.size() / (double)text.size();
    REQUIRE(frac > 0.09);
    REQUIRE(frac < 0.11);
    // the loader reads them: windows of train, validation from the start every time
    DataLoader dl(d / "s_train_*.bin", 4, 64, 50257);
    REQUIRE(dl.num_batches() == (train.size() - 1) / 256);
}

TEST_CASE("shard: the same bytes for any thread count; exact shard sizes", "[shards]") {
    TmpDir d;
    std::string text = read_file(repo_root() + "/test/data/shakespeare_64k.txt");
    // several documents, some large enough to be split across threads
    std::string many;
    for (size_t i = 0; i < 6; i++)
        many += text.substr(i * 3000, 2000 + i * 9000) + "\n<|endoftext|>\n";
    write_file(d / "many.txt", many);
    ShardJob job;
    job.inputs = {d / "many.txt", repo_root() + "/test/data/shakespeare_64k.txt"};
    job.val_fraction = 0.05;
    job.shard_tokens = 5000;
    std::vector<ShardStats> runs;
    for (int threads : {1, 2, 3}) {
        job.threads = threads;
        job.out_prefix = d / ("t" + std::to_string(threads));
        runs.push_back(build_shards(gpt2(), job));
    }
    for (int s = 0; s < 2; s++) {
        REQUIRE(runs[0].files[s].size() == runs[1].files[s].size());
        for (size_t i = 0; i < runs[0].files[s].size(); i++) {
            REQUIRE(read_file(runs[0].files[s][i]) == read_file(runs[1].files[s][i]));
            REQUIRE(read_file(runs[0].files[s][i]) == read_file(runs[2].files[s][i]));
            // every shard but the last of a split holds exactly shard_tokens
            if (i + 1 < runs[0].files[s].size())
                REQUIRE(Shard(runs[0].files[s][i], 50257).size() == 5000);
        }
    }
    REQUIRE(runs[0].files[0].size() > 3);
    // and one big shard holds the same tokens as the small ones together
    job.shard_tokens = 100000000;
    job.out_prefix = d / "big";
    const ShardStats big = build_shards(gpt2(), job);
    REQUIRE(big.files[0].size() == 1);
    REQUIRE(read_tokens(big.files[0], 50257) == read_tokens(runs[0].files[0], 50257));
    REQUIRE(read_tokens(big.files[1], 50257) == read_tokens(runs[0].files[1], 50257));
}

TEST_CASE("shard: JSONL records are documents; bad records name file and line", "[shards]") {
    TmpDir d;
    write_file(d / "a.jsonl", "{\"text\": \"Hello \\u00e9 world\", \"id\": 1}\n"
                              "\n"
                              "{\"text\": \"line\\nbreak\\t<|endoftext|>\"}\n"
                              "{\"body\": \"x\", \"text\": \"third\"}\n"
                              "{\"text\": \" \\n\"}\n");  // blank: dropped
    ShardJob job;
    job.inputs = {d / "a.jsonl"};
    job.out_prefix = d / "j";
    job.val_fraction = 0;
    ShardStats st = build_shards(gpt2(), job);
    REQUIRE(st.documents == 3);
    REQUIRE(st.files[1].empty());
    REQUIRE(read_tokens(st.files[0], 50257) ==
            with_eot(gpt2(), {"Hello \xc3\xa9 world", "line\nbreak\t<|endoftext|>", "third"}));

    job.jsonl_field = "body";
    job.overwrite = true;
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job),
                        Catch::Contains(d / "a.jsonl" + " line 1") && Catch::Contains("\"body\""));
    job.jsonl_field = "text";
    write_file(d / "b.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
    job.inputs = {d / "b.jsonl"};
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job),
                        Catch::Contains(d / "b.jsonl" + " line 2") && Catch::Contains("JSON"));
}

TEST_CASE("shard: invalid UTF-8 is replaced and counted, or rejected at its offset", "[shards]") {
    TmpDir d;
    write_file(d / "bad.txt", "good text\nbad \xff here \xe4\xb8 and\n");
    ShardJob job;
    job.inputs = {d / "bad.txt"};
    job.out_prefix = d / "u";
    job.val_fraction = 0;
    const ShardStats st = build_shards(gpt2(), job);
    REQUIRE(st.replaced == 2);
    REQUIRE(read_tokens(st.files[0], 50257) ==
            with_eot(gpt2(), {"good text\nbad \xef\xbf\xbd here \xef\xbf\xbd and\n"}));
    job.strict_utf8 = true;
    job.overwrite = true;
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job),
                        Catch::Contains(d / "bad.txt") && Catch::Contains("byte offset 14"));
    write_file(d / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"x\xff\"}\n");
    job.inputs = {d / "bad.jsonl"};
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job),
                        Catch::Contains(d / "bad.jsonl" + " line 2") &&
                            Catch::Contains("byte offset 26"));
    job.strict_utf8 = false;
    REQUIRE(build_shards(gpt2(), job).replaced == 1);
}

// Shards are written under .partial names and renamed when all are complete: a run that
// fails (or is killed) half way leaves nothing a *.bin glob would take for a whole set.
TEST_CASE("shard: a run that fails half way leaves no shards; a killed run's partial files go", "[shards]") {
    TmpDir d;
    std::string text;
    for (int i = 0; i < 40; i++) text += "line " + std::to_string(i) + " of plain text\n";
    write_file(d / "good.txt", text);
    write_file(d / "bad.txt", "bad \xff here\n");
    write_file(d / "p_train_000003.bin.partial", "left by a killed run");
    ShardJob job;
    job.inputs = {d / "good.txt", d / "bad.txt"};
    job.out_prefix = d / "p";
    job.shard_tokens = 16;  // good.txt alone makes several shards before bad.txt fails
    job.strict_utf8 = true;
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job), Catch::Contains(d / "bad.txt"));
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(d.path))
        if (e.path().filename().string().rfind("p_", 0) == 0) left.push_back(e.path().filename().string());
    INFO(left.size() << " files left, first " << (left.empty() ? "" : left[0]));
    CHECK(left.empty());
    job.inputs = {d / "good.txt"};
    const ShardStats st = build_shards(gpt2(), job);
    REQUIRE(st.files[0].size() > 2);
    for (const auto& f : st.files[0]) {
        CHECK(std::filesystem::exists(f));
        CHECK_FALSE(std::filesystem::exists(f + ".partial"));
    }
    job.out_prefix = d.path + "/";  // a directory: the shards would be named "_train_000000.bin"
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job), Catch::Contains("--out: expected an output prefix"));
}

TEST_CASE("shard: earlier shards, missing inputs, bad flags are refused", "[shards]") {
    TmpDir d;
    write_file(d / "x.txt", "some text\n");
    ShardJob job;
    job.inputs = {d / "x.txt"};
    job.out_prefix = d / "o";
    job.val_fraction = 0;
    build_shards(gpt2(), job);
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job),
                        Catch::Contains(d / "o") && Catch::Contains("--force"));
    // with overwrite, stale shards of the earlier run go: none is left to mix in
    write_file(d / "o_train_000007.bin", "stale");
    job.overwrite = true;
    build_shards(gpt2(), job);
    REQUIRE_FALSE(std::filesystem::exists(d / "o_train_000007.bin"));
    REQUIRE(std::filesystem::exists(d / "o_train_000000.bin"));

    job.inputs = {d / "missing.txt"};
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job), Catch::Contains(d / "missing.txt"));
    job.inputs = {d / "x.txt"};
    job.val_fraction = 1.5;
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job), Catch::Contains("--val-fraction"));
    job.val_fraction = 0;
    write_file(d / "empty.txt", "");
    job.inputs = {d / "empty.txt"};
    REQUIRE_THROWS_WITH(build_shards(gpt2(), job), Catch::Contains("no text"));
}

TEST_CASE("shard: uint32 tokens past 65536, and bytes without end-of-text", "[shards]") {
    TmpDir d;
    write_file(d / "t.txt", "abc\n<|endoftext|>\nde\n");
    ShardJob job;
    job.inputs = {d / "t.txt"};
    job.out_prefix = d / "w";
    job.val_fraction = 0;
    const ShardStats st = build_shards(WideBytes(), job);
    Shard s(st.files[0][0], 70001);
    REQUIRE(s.wide());
    REQUIRE(read_tokens(st.files[0], 70001) ==
            std::vector<int>{70000, 65536 + 'a', 65536 + 'b', 65536 + 'c', 65536 + '\n', 70000,
                             65536 + 'd', 65536 + 'e', 65536 + '\n'});
    job.out_prefix = d / "b";
    const ShardStats bs = build_shards(*make_tokenizer("bytes"), job);
    REQUIRE_FALSE(Shard(bs.files[0][0], 256).wide());
    REQUIRE(read_tokens(bs.files[0], 256) == std::vector<int>{'a', 'b', 'c', '\n', 'd', 'e', '\n'});
}

TEST_CASE("tokenize tool: encode, decode and shard from the command line", "[shards]") {
    const std::string bin = repo_root() + "/tokenize";
    if (!std::filesystem::exists(bin)) FAIL(bin << " is missing: build it with `make tokenize`");
    TmpDir d;
    const std::string text = "Hello world's \xf0\x9f\x98\x80\n\t<|endoftext|>  end";
    write_file(d / "in.txt", text);
    std::string out;
    REQUIRE(run_command(bin + " encode < " + (d / "in.txt"), &out) == 0);
    std::string expect;
    for (int id : gpt2().encode(text)) expect += (expect.empty() ? "" : " ") + std::to_string(id);
    REQUIRE(out == expect + "\n");
    write_file(d / "ids.txt", out);
    const std::string back = d / "back.txt";
    REQUIRE(run_command(bin + " decode < " + (d / "ids.txt") + " > " + back, &out) == 0);
    REQUIRE(read_file(back) == text);
    out.clear();
    REQUIRE(run_command(bin + " encode --allow-special < " + (d / "in.txt"), &out) == 0);
    REQUIRE(out.find(" 50256 ") != std::string::npos);

    // invalid UTF-8: replaced and reported, or rejected with the offset (exit 1, no crash)
    write_file(d / "bad.txt", "ab\xff");
    out.clear();
    REQUIRE(run_command(bin + " encode < " + (d / "bad.txt"), &out) == 0);
    REQUIRE(out.find("replaced 1 invalid UTF-8 sequence") != std::string::npos);
    out.clear();
    REQUIRE(run_command(bin + " encode --strict-utf8 < " + (d / "bad.txt"), &out) == 1);
    REQUIRE(out.find("byte offset 2") != std::string::npos);
    out.clear();  // bytes takes any byte: the flag would do nothing
    REQUIRE(run_command(bin + " encode --tokenizer bytes --strict-utf8 < " + (d / "bad.txt"), &out) == 1);
    REQUIRE(out.find("--strict-utf8: --tokenizer bytes takes any bytes") != std::string::npos);
    out.clear();
    write_file(d / "badids.txt", "1 2 50257");
    REQUIRE(run_command(bin + " decode < " + (d / "badids.txt"), &out) == 1);
    REQUIRE(out.find("token 2 is \"50257\"") != std::string::npos);

    out.clear();
    REQUIRE(run_command(bin + " shard --quiet --val-fraction 0.1 --out " + (d / "ts") + " " +
                            repo_root() + "/test/data/shakespeare_64k.txt", &out) == 0);
    INFO(out);
    REQUIRE(out.find("wrote " + (d / "ts_train_000000.bin")) != std::string::npos);
    REQUIRE(Shard(d / "ts_val_000000.bin", 50257).size() > 1000);
    out.clear();
    REQUIRE(run_command(bin + " shard --tokenizer nope --out x y", &out) == 1);
    REQUIRE(out.find("--tokenizer nope") != std::string::npos);
}

TEST_CASE("prepare_hf.py: its shards load; without datasets or network it says so", "[shards]") {
    TmpDir d;
    const std::string root = repo_root();
    std::string out;
    // the Python writer makes the same format: uint16, and uint32 past 65535
    const std::string code = "import sys; sys.path.insert(0, '" + root + "/scripts'); "
                             "import prepare_hf as p; p.write_shard('" + (d / "n.bin") +
                             "', [1, 2, 65535], False); p.write_shard('" + (d / "w.bin") +
                             "', [1, 70000], True)";
    REQUIRE(run_command("/usr/bin/python3 -B -c \"" + code + "\"", &out) == 0);
    REQUIRE(read_tokens({d / "n.bin"}, 65536) == std::vector<int>{1, 2, 65535});
    REQUIRE(Shard(d / "w.bin", 70001).wide());
    REQUIRE(read_tokens({d / "w.bin"}, 70001) == std::vector<int>{1, 70000});
    // here (no datasets package, no network) it stops with a plain message
    out.clear();
    const int rc = run_command("/usr/bin/python3 -B " + root + "/scripts/prepare_hf.py --dataset "
                               "c4 --tokenizer t5-base --max-tokens 2000 --val-tokens 1000 "
                               "--shard-tokens 1000 --out " + (d / "c4"), &out);
    INFO(out);
    if (out.find("wrote") == std::string::npos) {  // unless this machine can reach the Hub
        REQUIRE(rc == 1);
        REQUIRE(out.rfind("error: ", 0) == 0);
        REQUIRE(out.find("Traceback") == std::string::npos);
    }
}
