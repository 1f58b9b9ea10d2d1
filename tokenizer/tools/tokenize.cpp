// tokenize: text <-> token ids, and text/JSONL files -> train/val shards.
//
//   tokenize encode [--tokenizer gpt2] < text        ids on one line, space separated
//   tokenize decode [--tokenizer gpt2] < ids         the text
//   tokenize shard  [--tokenizer gpt2] --out data/gutenberg FILE...   shards, all cores
//   tokenize bench  [--tokenizer gpt2] [--threads N] FILE            MB/s of encoding
//
// --tokenizer: bytes, gpt2, gpt2:DIR or sentencepiece:PATH (see tokenizer/tokenizer.h).
#include <malloc.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "common/check.h"
#include "dataloader/text_to_shards.h"
#include "tokenizer/tokenizer.h"

namespace {

std::string read_all(std::istream& in) {
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Encodes `text` on `threads` threads (pieces cut where the tokenizer allows), in order.
std::vector<int> encode_parallel(const Tokenizer& tok, std::string_view text, bool special,
                                 int threads) {
    const std::vector<size_t> starts = split_points(tok, text, 1 << 20);
    std::vector<std::vector<int>> parts(starts.size());
    std::vector<std::string> errors(starts.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (size_t i = 0; i < starts.size(); i++) {
        const size_t end = i + 1 < starts.size() ? starts[i + 1] : text.size();
        try {  // into a local vector: neighbouring parts[] share cache lines
            std::vector<int> ids;
            tok.encode_append(text.substr(starts[i], end - starts[i]), ids, special);
            parts[i].swap(ids);
        } catch (const std::exception& e) {
            errors[i] = e.what();
        }
    }
    std::vector<int> ids;
    for (size_t i = 0; i < starts.size(); i++) {
        if (!errors[i].empty()) throw UserError(errors[i]);
        ids.insert(ids.end(), parts[i].begin(), parts[i].end());
    }
    return ids;
}

// Invalid UTF-8 is replaced by U+FFFD and counted, or with --strict-utf8 rejected.
void check_utf8(const Tokenizer& tok, std::string& text, bool strict) {
    if (!tok.needs_utf8()) return;
    const size_t bad = utf8_first_invalid(text);
    if (bad == text.size()) return;
    REQUIRE_INPUT(!strict, "stdin: invalid UTF-8 at byte offset %zu", bad);
    const size_t n = utf8_sanitize(text);
    fprintf(stderr, "tokenize: replaced %zu invalid UTF-8 sequence%s by U+FFFD (first at byte "
            "offset %zu)\n", n, n == 1 ? "" : "s", bad);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"tokenize: text <-> token ids, and text or JSONL files -> llm.c token shards"};
    app.require_subcommand(1);
    std::string spec = "gpt2";
    int threads = 0;
    bool special = false, strict = false;
    auto common = [&](CLI::App* c) {
        c->add_option("--tokenizer", spec, "bytes, gpt2, gpt2:DIR or sentencepiece:PATH")
            ->capture_default_str();
        c->add_option("--threads", threads, "threads to use (0: all cores)")->capture_default_str();
    };
    CLI::App* enc = app.add_subcommand("encode", "UTF-8 text on stdin -> token ids on stdout");
    common(enc);
    enc->add_flag("--allow-special", special, "the literal <|endoftext|> becomes the end-of-text "
                  "token (default: ordinary text)");
    enc->add_flag("--strict-utf8", strict, "reject invalid UTF-8 instead of replacing it");
    CLI::App* dec = app.add_subcommand("decode", "token ids on stdin -> text on stdout");
    common(dec);

    ShardJob job;
    CLI::App* sh = app.add_subcommand("shard", "text or .jsonl files -> PREFIX_train_*.bin, "
                                      "PREFIX_val_*.bin");
    common(sh);
    sh->add_option("inputs", job.inputs, "text files (documents split at lines that hold only "
                   "<|endoftext|>), .jsonl files (one document per record), - for stdin")
        ->required();
    sh->add_option("--out", job.out_prefix, "output prefix, e.g. data/gutenberg")->required();
    sh->add_option("--shard-tokens", job.shard_tokens, "tokens per shard")->capture_default_str();
    sh->add_option("--val-fraction", job.val_fraction, "fraction of each input, from its end, "
                   "that goes to val")->capture_default_str();
    sh->add_option("--jsonl-field", job.jsonl_field, "the JSONL records' text field")
        ->capture_default_str();
    sh->add_flag("--strict-utf8", job.strict_utf8, "reject invalid UTF-8 instead of replacing it");
    sh->add_flag("--force", job.overwrite, "replace shards of an earlier run with this prefix");
    bool quiet = false;
    sh->add_flag("--quiet", quiet, "no progress bar");

    std::string bench_file;
    int repeat = 1;
    std::string ids_out;
    CLI::App* be = app.add_subcommand("bench", "encode FILE, report MB/s (whole file in memory)");
    common(be);
    be->add_option("file", bench_file, "UTF-8 text")->required();
    be->add_option("--repeat", repeat, "encode it this many times, report the best")
        ->capture_default_str();
    be->add_option("--ids-out", ids_out, "write the ids as little-endian uint32 to this file");

    CLI11_PARSE(app, argc, argv);
    // Threads that grow and free large token vectors make glibc mmap and munmap them, and
    // every munmap stalls the other threads (TLB shootdowns): keep such blocks in the heap.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    try {
        REQUIRE_INPUT(threads >= 0, "--threads: expected >= 0, got %d", threads);
        const int nt = threads > 0 ? threads : omp_get_max_threads();
        std::unique_ptr<Tokenizer> tok = make_tokenizer(spec);
        REQUIRE_INPUT(!(strict || job.strict_utf8) || tok->needs_utf8(), "--strict-utf8: --tokenizer %s takes any "
                      "bytes, so there is no invalid UTF-8 to reject (the flag is for gpt2 and sentencepiece)",
                      spec.c_str());
        if (*enc) {
            std::string text = read_all(std::cin);
            check_utf8(*tok, text, strict);
            const std::vector<int> ids = encode_parallel(*tok, text, special, nt);
            std::string line;
            for (size_t i = 0; i < ids.size(); i++) {
                if (i) line += ' ';
                line += std::to_string(ids[i]);
            }
            line += '\n';
            fwrite(line.data(), 1, line.size(), stdout);
        } else if (*dec) {
            std::vector<int> ids;
            std::string word;
            for (size_t i = 0; std::cin >> word; i++) {
                char* end = nullptr;
                errno = 0;
                const long v = strtol(word.c_str(), &end, 10);
                REQUIRE_INPUT(*end == '\0' && errno == 0 && v >= 0 && v < tok->vocab_size(),
                              "stdin: token %zu is \"%s\", expected an id in 0..%d", i,
                              word.c_str(), tok->vocab_size() - 1);
                ids.push_back((int)v);
            }
            const std::string text = tok->decode(ids);
            fwrite(text.data(), 1, text.size(), stdout);
        } else if (*sh) {
            job.threads = nt;
            job.progress = !quiet;
            const ShardStats st = build_shards(*tok, job);
            if (st.replaced)
                fprintf(stderr, "tokenize: replaced %zu invalid UTF-8 sequence%s by U+FFFD\n",
                        st.replaced, st.replaced == 1 ? "" : "s");
            for (int s = 0; s < 2; s++)
                for (const auto& f : st.files[s]) printf("wrote %s\n", f.c_str());
            printf("%zu documents, %.1f MB -> %zu train + %zu val tokens (%s) in %.2f s, "
                   "%.1f MB/s on %d threads\n", st.documents, (double)st.bytes / 1e6,
                   st.tokens[0], st.tokens[1], tok->name().c_str(), st.seconds,
                   (double)st.bytes / 1e6 / st.seconds, nt);
        } else if (*be) {
            std::ifstream f(bench_file, std::ios::binary);
            REQUIRE_INPUT(f.good(), "%s: cannot open", bench_file.c_str());
            std::string text = read_all(f);
            check_utf8(*tok, text, false);
            double best = 1e30;
            std::vector<int> ids;
            for (int r = 0; r < std::max(repeat, 1); r++) {
                const auto t0 = std::chrono::steady_clock::now();
                ids = encode_parallel(*tok, text, false, nt);
                const double dt =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                best = std::min(best, dt);
            }
            printf("%s threads=%d bytes=%zu tokens=%zu seconds=%.3f MB/s=%.2f\n",
                   tok->name().c_str(), nt, text.size(), ids.size(), best,
                   (double)text.size() / 1e6 / best);
            if (!ids_out.empty()) {
                std::ofstream o(ids_out, std::ios::binary);
                std::vector<uint32_t> u(ids.begin(), ids.end());
                o.write(reinterpret_cast<const char*>(u.data()), (std::streamsize)(u.size() * 4));
                REQUIRE_INPUT(o.good(), "--ids-out %s: cannot write", ids_out.c_str());
            }
        }
    } catch (const UserError& e) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
