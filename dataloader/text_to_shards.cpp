// build_shards: documents -> units of about 1 MB -> tokens on all cores -> shards in order.
#include "dataloader/text_to_shards.h"

#include <fcntl.h>
#include <glob.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "dataloader/shard.h"

namespace {

constexpr const char* kSeparator = "<|endoftext|>";
constexpr size_t kUnitBytes = 1 << 20;  // work per task: small enough to balance the cores

// One input's bytes: a read-only map of a file, or stdin read into memory.
struct Input {
    std::string path;
    bool jsonl = false;
    const char* data = nullptr;
    size_t size = 0;
    void* map = nullptr;
    std::string owned;

    explicit Input(const std::string& p) : path(p) {
        const std::string ext = ".jsonl";
        jsonl = p.size() > ext.size() && p.compare(p.size() - ext.size(), ext.size(), ext) == 0;
        if (p == "-") {
            owned.assign(std::istreambuf_iterator<char>(std::cin),
                         std::istreambuf_iterator<char>());
            REQUIRE_INPUT(!std::cin.bad(), "-: cannot read standard input");
            data = owned.data();
            size = owned.size();
            return;
        }
        int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE_INPUT(fd >= 0, "%s: cannot open input (%s)", p.c_str(), strerror(errno));
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            throw UserError(strfmt("%s: expected a regular file of text or JSONL", p.c_str()));
        }
        size = (size_t)st.st_size;
        if (size > 0) {
            map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (map == MAP_FAILED) {
                close(fd);
                throw UserError(strfmt("%s: cannot mmap (%s)", p.c_str(), strerror(errno)));
            }
            madvise(map, size, MADV_SEQUENTIAL);
            data = static_cast<const char*>(map);
        }
        close(fd);
    }
    ~Input() {
        if (map) munmap(map, size);
    }
    Input(const Input&) = delete;
    Input& operator=(const Input&) = delete;
    std::string_view view(size_t b, size_t e) const { return std::string_view(data + b, e - b); }
};

// A task: bytes [begin, end) of one input, all in one split.
struct Unit {
    size_t begin, end;
    int split;         // 0 train, 1 val
    bool doc_start;    // text: the first piece of its document, so it gets the EOT token
    size_t line;       // jsonl: line number of `begin`, from 1
};

struct UnitOut {
    std::vector<int> ids;
    size_t replaced = 0, documents = 0;
    std::string error;
};

// Start of the line nearest to `t` (0 < t < n); returns t itself if the text has no
// line start near it, stepping back to a UTF-8 character boundary.
size_t nearest_line_start(const Input& in, size_t t) {
    size_t before = 0, after = in.size;
    for (size_t i = t; i > 0; i--)
        if (in.data[i - 1] == '\n') {
            before = i;
            break;
        }
    if (const void* nl = memchr(in.data + t, '\n', in.size - t))
        after = (size_t)((const char*)nl - in.data) + 1;
    if (before == 0 && after == in.size) {  // one line: cut inside it
        while (t > 0 && ((unsigned char)in.data[t] & 0xC0) == 0x80) t--;
        return t;
    }
    if (before == 0) return after;
    if (after == in.size) return before;
    return t - before <= after - t ? before : after;
}

// Empty or whitespace-only documents (say, the blank line after a final separator) are
// dropped: an end-of-text token with nothing to end.
bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

// The units of one text input: its documents, cut at `cut` into train/val and into
// pieces where the tokenizer allows.
void text_units(const Tokenizer& tok, const Input& in, double val_fraction,
                std::vector<Unit>& units, size_t* documents) {
    // documents: the spans between separator lines
    std::vector<std::pair<size_t, size_t>> docs;
    const size_t slen = strlen(kSeparator);
    size_t doc_begin = 0, from = 0;
    while (from < in.size) {
        const void* hit = memmem(in.data + from, in.size - from, kSeparator, slen);
        if (!hit) break;
        const size_t at = (size_t)((const char*)hit - in.data);
        size_t after = at + slen;
        if (after < in.size && in.data[after] == '\r') after++;
        const bool line_start = at == 0 || in.data[at - 1] == '\n';
        const bool line_end = after == in.size || in.data[after] == '\n';
        if (line_start && line_end) {
            if (!blank(in.view(doc_begin, at))) docs.push_back({doc_begin, at});
            doc_begin = after < in.size ? after + 1 : in.size;
        }
        from = at + 1;
    }
    if (!blank(in.view(doc_begin, in.size))) docs.push_back({doc_begin, in.size});
    *documents += docs.size();

    size_t cut = in.size;
    if (val_fraction > 0 && in.size > 1) {
        const size_t val_bytes = (size_t)std::llround((double)in.size * val_fraction);
        const size_t t = in.size - std::min(val_bytes, in.size - 1);
        size_t best = in.size, best_dist = SIZE_MAX;
        for (const auto& d : docs) {
            const size_t dist = d.first > t ? d.first - t : t - d.first;
            if (d.first > 0 && dist < best_dist) best = d.first, best_dist = dist;
        }
        cut = best_dist <= val_bytes / 2 ? best : nearest_line_start(in, t);
        for (const auto& d : docs)  // a document cut in two continues in val as its own
            if (d.first < cut && cut < d.second) (*documents)++;
    }

    for (const auto& d : docs) {
        const std::pair<size_t, size_t> parts[2] = {{d.first, std::min(d.second, cut)},
                                                    {std::max(d.first, cut), d.second}};
        for (int split = 0; split < 2; split++) {
            const auto [b, e] = parts[split];
            if (b >= e) continue;
            const std::vector<size_t> starts = split_points(tok, in.view(b, e), kUnitBytes);
            for (size_t i = 0; i < starts.size(); i++) {
                const size_t ub = b + starts[i], ue = i + 1 < starts.size() ? b + starts[i + 1] : e;
                units.push_back({ub, ue, split, i == 0, 0});
            }
        }
    }
}

// The units of one JSONL input: runs of whole lines (records) of about kUnitBytes.
void jsonl_units(const Input& in, double val_fraction, std::vector<Unit>& units) {
    size_t cut = in.size;
    if (val_fraction > 0 && in.size > 1) {
        const size_t val_bytes = (size_t)std::llround((double)in.size * val_fraction);
        cut = nearest_line_start(in, in.size - std::min(val_bytes, in.size - 1));
    }
    size_t begin = 0, line = 1, begin_line = 1;
    for (size_t pos = 0; pos < in.size;) {
        const void* nl = memchr(in.data + pos, '\n', in.size - pos);
        const size_t next = nl ? (size_t)((const char*)nl - in.data) + 1 : in.size;
        line++;
        // close the unit at the cut or once it is big enough
        if (next == cut || next - begin >= kUnitBytes || next == in.size) {
            units.push_back({begin, next, begin >= cut ? 1 : 0, true, begin_line});
            begin = next;
            begin_line = line;
        }
        pos = next;
    }
}

// Tokens of text that begins at byte `offset` of `path`, repairing or rejecting bad UTF-8.
void encode_checked(const Tokenizer& tok, std::string_view text, const std::string& path,
                    size_t offset, bool strict, UnitOut& o) {
    if (tok.needs_utf8()) {
        const size_t bad = utf8_first_invalid(text);
        if (bad != text.size()) {
            REQUIRE_INPUT(!strict, "%s: invalid UTF-8 at byte offset %zu (without "
                          "--strict-utf8 it is replaced by U+FFFD and counted)", path.c_str(),
                          offset + bad);
            std::string fixed(text);
            o.replaced += utf8_sanitize(fixed);
            tok.encode_append(fixed, o.ids);
            return;
        }
    }
    tok.encode_append(text, o.ids);
}

void run_unit(const Tokenizer& tok, const Input& in, const Unit& u, const ShardJob& job,
              UnitOut& o) {
    const int eot = tok.eot_token();
    o.ids.reserve((u.end - u.begin) / 3);  // ~4 bytes a token for English GPT-2: one allocation
    if (!in.jsonl) {
        if (u.doc_start && eot >= 0) o.ids.push_back(eot);
        encode_checked(tok, in.view(u.begin, u.end), in.path, u.begin, job.strict_utf8, o);
        return;
    }
    size_t line = u.line;
    for (size_t pos = u.begin; pos < u.end; line++) {
        const void* nl = memchr(in.data + pos, '\n', u.end - pos);
        const size_t end = nl ? (size_t)((const char*)nl - in.data) : u.end;
        std::string rec(in.data + pos, end - pos);
        const size_t line_start = pos;
        pos = end + 1;
        if (rec.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
        const size_t bad = utf8_first_invalid(rec);
        if (bad != rec.size()) {
            REQUIRE_INPUT(!job.strict_utf8, "%s line %zu: invalid UTF-8 at byte offset %zu",
                          in.path.c_str(), line, line_start + bad);
            o.replaced += utf8_sanitize(rec);
        }
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(rec);
        } catch (const nlohmann::json::exception& e) {
            throw UserError(strfmt("%s line %zu: not valid JSON (%s)", in.path.c_str(), line,
                                   e.what()));
        }
        const std::string& f = job.jsonl_field;
        REQUIRE_INPUT(j.is_object() && j.contains(f) && j[f].is_string(), "%s line %zu: "
                      "expected a JSON object with a string field \"%s\" (--jsonl-field)",
                      in.path.c_str(), line, f.c_str());
        const std::string& text = j[f].get_ref<const std::string&>();
        if (blank(text)) continue;
        if (eot >= 0) o.ids.push_back(eot);
        o.documents++;
        encode_checked(tok, text, in.path, line_start, job.strict_utf8, o);
    }
}

// Shards are written as NAME.bin.partial (which no *.bin glob matches) and renamed once
// every shard of both splits is complete: an interrupted or failed run leaves no set of
// shards that looks whole.
constexpr const char* kPartial = ".partial";

// Collects one split's tokens and writes a shard every `cap` tokens.
struct SplitWriter {
    std::string prefix;
    size_t cap;
    bool wide;
    std::vector<std::string>* files;
    std::vector<uint32_t> buf;
    void add(const std::vector<int>& ids) {
        for (size_t i = 0; i < ids.size();) {
            const size_t m = std::min(ids.size() - i, cap - buf.size());
            buf.insert(buf.end(), ids.begin() + (ptrdiff_t)i, ids.begin() + (ptrdiff_t)(i + m));
            i += m;
            if (buf.size() == cap) flush();
        }
    }
    void flush() {
        if (buf.empty()) return;
        const std::string path = strfmt("%s_%06zu.bin", prefix.c_str(), files->size());
        files->push_back(path);  // before the write: a failed run removes what it began
        write_shard(path + kPartial, buf.data(), buf.size(), wide);
        buf.clear();
    }
};

std::vector<std::string> glob_paths(const std::string& pattern) {
    glob_t g;
    memset(&g, 0, sizeof(g));
    std::vector<std::string> out;
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    return out;
}

// "[=======>      ]  45.2%  46.3/102.4 MB  38.1 MB/s  ETA 0:01  11.5M tokens" on stderr:
// redrawn in place on a terminal, a line every few seconds otherwise.
class Progress {
public:
    Progress(bool on, size_t total) : on_(on), total_(total), tty_(isatty(2)) {}
    void update(size_t done, size_t tokens, bool final = false) {
        if (!on_) return;
        const double t = seconds();
        if (!final && t - last_ < (tty_ ? 0.2 : 5.0)) return;
        last_ = t;
        const double frac = total_ ? (double)done / (double)total_ : 1.0;
        const int width = 30, fill = (int)(frac * width);
        std::string bar(width, ' ');
        for (int i = 0; i < fill; i++) bar[(size_t)i] = '=';
        if (fill < width) bar[(size_t)fill] = '>';
        const double mbs = t > 0 ? (double)done / 1e6 / t : 0.0;
        const double eta = mbs > 0 ? (double)(total_ - done) / 1e6 / mbs : 0.0;
        fprintf(stderr, "%s[%s] %5.1f%%  %.1f/%.1f MB  %.1f MB/s  ETA %d:%02d  %.1fM tokens%s",
                tty_ ? "\r" : "", bar.c_str(), 100.0 * frac, (double)done / 1e6,
                (double)total_ / 1e6, mbs, (int)eta / 60, (int)eta % 60, (double)tokens / 1e6,
                tty_ && !final ? "" : "\n");
        fflush(stderr);
    }
    double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

private:
    bool on_;
    size_t total_;
    bool tty_;
    double last_ = -1e9;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Encodes job.inputs into the shards of stats.files (as NAME.bin.partial).
void encode_inputs(const Tokenizer& tok, const ShardJob& job, ShardStats& stats) {
    const char* split_name[2] = {"train", "val"};
    std::vector<std::unique_ptr<Input>> inputs;
    for (const auto& p : job.inputs) {
        inputs.push_back(std::make_unique<Input>(p));
        stats.bytes += inputs.back()->size;
    }
    const bool wide = tok.vocab_size() > 65536;
    SplitWriter writers[2];
    for (int s = 0; s < 2; s++)
        writers[s] = {job.out_prefix + "_" + split_name[s], job.shard_tokens, wide,
                      &stats.files[s], {}};
    const int threads = job.threads > 0 ? job.threads : omp_get_max_threads();
    Progress progress(job.progress, stats.bytes);
    std::atomic<size_t> done{0}, tokens_done{0};  // bytes and tokens encoded so far

    for (const auto& in : inputs) {
        std::vector<Unit> units;
        if (in->jsonl) jsonl_units(*in, job.val_fraction, units);
        else text_units(tok, *in, job.val_fraction, units, &stats.documents);
        // Batches of units: tokens of a batch stay in memory until written in order.
        const size_t batch_bytes = std::max((size_t)64 << 20, (size_t)threads * 4 * kUnitBytes);
        for (size_t first = 0; first < units.size();) {
            size_t last = first, bytes = 0;
            while (last < units.size() && (bytes < batch_bytes || last == first))
                bytes += units[last].end - units[last].begin, last++;
            std::vector<UnitOut> outs(last - first);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
            for (size_t i = first; i < last; i++) {
                // a local UnitOut: neighbouring outs[] share cache lines, and every
                // token appended would write one of them
                UnitOut o;
                try {  // no exception may leave an OpenMP region
                    run_unit(tok, *in, units[i], job, o);
                } catch (const std::exception& e) {
                    o.error = e.what();
                }
                done += units[i].end - units[i].begin;
                tokens_done += o.ids.size();
                outs[i - first] = std::move(o);
                if (omp_get_thread_num() == 0) progress.update(done, tokens_done);
            }
            for (size_t i = first; i < last; i++) {
                UnitOut& o = outs[i - first];
                if (!o.error.empty()) throw UserError(o.error);
                writers[units[i].split].add(o.ids);
                stats.tokens[units[i].split] += o.ids.size();
                stats.replaced += o.replaced;
                stats.documents += o.documents;
                std::vector<int>().swap(o.ids);
            }
            progress.update(done, tokens_done);
            first = last;
        }
    }
    for (auto& w : writers) w.flush();
    progress.update(done, tokens_done, true);
    REQUIRE_INPUT(stats.tokens[0] > 0, "%s: the inputs hold no text to tokenize",
                  job.inputs[0].c_str());
    stats.seconds = progress.seconds();
}

}  // namespace

ShardStats build_shards(const Tokenizer& tok, const ShardJob& job) {
    REQUIRE_INPUT(!job.inputs.empty(), "tokenize shard: expected at least one input file");
    REQUIRE_INPUT(!job.out_prefix.empty() && job.out_prefix.back() != '/',
                  "tokenize shard: --out: expected an output prefix such as data/name, got '%s'",
                  job.out_prefix.c_str());
    REQUIRE_INPUT(job.val_fraction >= 0 && job.val_fraction < 1, "--val-fraction: expected a "
                  "value in [0, 1), got %g", job.val_fraction);
    REQUIRE_INPUT(job.shard_tokens > 0 && job.shard_tokens <= (size_t)INT32_MAX,
                  "--shard-tokens: expected 1..%d, got %zu", INT32_MAX, job.shard_tokens);
    const char* split_name[2] = {"train", "val"};

    // Shards of an earlier run would mix with the new ones under a glob.
    std::vector<std::string> old;
    for (const char* s : split_name) {
        for (const auto& p : glob_paths(job.out_prefix + "_" + s + "_*.bin" + kPartial))
            std::filesystem::remove(p);  // left by a run that was killed
        auto paths = glob_paths(job.out_prefix + "_" + s + "_*.bin");
        old.insert(old.end(), paths.begin(), paths.end());
    }
    if (!old.empty()) {
        REQUIRE_INPUT(job.overwrite, "%s: %zu shard(s) of an earlier run exist (%s ...); remove "
                      "them or pass --force to replace them", job.out_prefix.c_str(),
                      old.size(), old[0].c_str());
        for (const auto& p : old) std::filesystem::remove(p);
    }
    const std::filesystem::path parent = std::filesystem::path(job.out_prefix).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(parent, ec);
        REQUIRE_INPUT(!ec, "%s: cannot create the output folder (%s)", parent.c_str(),
                      ec.message().c_str());
    }

    ShardStats stats;
    try {
        encode_inputs(tok, job, stats);
    } catch (...) {
        for (const auto& files : stats.files)
            for (const auto& f : files) std::filesystem::remove(f + kPartial);
        throw;
    }
    for (const auto& files : stats.files)
        for (const auto& f : files) std::filesystem::rename(f + kPartial, f);
    return stats;
}
