// Shard format and data loader: round trips, rejection of malformed shards (each
// message must name the file), exact window contents, rank disjointness, epoch
// wrap-around and exact resume.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <algorithm>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "common/check.h"
#include "dataloader/dataloader.h"
#include "dataloader/shard.h"

namespace {

// A fresh directory under /tmp, removed with everything in it at scope exit.
struct TmpDir {
    std::string path;
    TmpDir() {
        char buf[] = "/tmp/lns_test_data_XXXXXX";
        REQUIRE(mkdtemp(buf) != nullptr);
        path = buf;
    }
    ~TmpDir() { std::filesystem::remove_all(path); }
    std::string file(const std::string& name) const { return path + "/" + name; }
};

// Writes raw bytes: a header of the given fields, then `payload` bytes of zeros.
void write_raw(const std::string& path, int32_t magic, int32_t version, int32_t count,
               size_t payload) {
    std::vector<int32_t> header(SHARD_HEADER_INTS, 0);
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    FILE* f = fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    fwrite(header.data(), sizeof(int32_t), header.size(), f);
    std::vector<char> zeros(payload, 0);
    if (payload) fwrite(zeros.data(), 1, payload, f);
    fclose(f);
}

// tokens first, first+1, ..., first+n-1, so every window's contents are predictable
std::vector<uint32_t> iota_tokens(size_t n, uint32_t first) {
    std::vector<uint32_t> t(n);
    std::iota(t.begin(), t.end(), first);
    return t;
}

// Expects construction of Shard(path) to throw a UserError naming the path and `what`.
void require_rejected(const std::string& path, int vocab, const std::string& what) {
    try {
        Shard s(path, vocab);
        FAIL("expected a UserError for " << path);
    } catch (const UserError& e) {
        std::string msg = e.what();
        INFO(msg);
        REQUIRE(msg.rfind(path, 0) == 0);  // starts with the path
        REQUIRE(msg.find(what) != std::string::npos);
    }
}

}  // namespace

TEST_CASE("shard: uint16 round trip", "[data]") {
    TmpDir d;
    std::string path = d.file("a.bin");
    std::vector<uint32_t> toks = {0, 1, 2, 255, 256, 50256, 65535, 7};
    write_shard(path, toks.data(), toks.size(), false);
    REQUIRE_FALSE(std::filesystem::exists(path + ".tmp"));
    REQUIRE(std::filesystem::file_size(path) == SHARD_HEADER_BYTES + toks.size() * 2);
    Shard s(path, 65536);
    REQUIRE_FALSE(s.wide());
    REQUIRE(s.path() == path);
    REQUIRE(s.size() == toks.size());
    for (size_t i = 0; i < toks.size(); i++) REQUIRE(s[i] == toks[i]);

    // moving transfers the mapping; the moved-from shard is empty
    Shard m(std::move(s));
    REQUIRE(m.size() == toks.size());
    REQUIRE(m[6] == 65535u);
    REQUIRE(s.size() == 0);
}

TEST_CASE("shard: uint32 round trip", "[data]") {
    TmpDir d;
    std::string path = d.file("a.bin");
    std::vector<uint32_t> toks = {0, 65535, 65536, 100000, 151935, 3};
    write_shard(path, toks.data(), toks.size(), true);
    REQUIRE(std::filesystem::file_size(path) == SHARD_HEADER_BYTES + toks.size() * 4);
    Shard s(path, 151936);
    REQUIRE(s.wide());
    REQUIRE(s.size() == toks.size());
    for (size_t i = 0; i < toks.size(); i++) REQUIRE(s[i] == toks[i]);
}

TEST_CASE("shard: write_shard rejects bad input", "[data]") {
    TmpDir d;
    std::string path = d.file("a.bin");
    std::vector<uint32_t> big = {1, 70000};
    REQUIRE_THROWS_WITH(write_shard(path, big.data(), big.size(), false),
                        Catch::Contains(path) && Catch::Contains("uint16"));
    REQUIRE_THROWS_WITH(write_shard(path, big.data(), 0, true), Catch::Contains(path));
    std::string nodir = d.file("no/such/dir/a.bin");
    REQUIRE_THROWS_WITH(write_shard(nodir, big.data(), big.size(), true),
                        Catch::Contains(nodir));
    REQUIRE_FALSE(std::filesystem::exists(path));
}

TEST_CASE("shard: malformed files are rejected naming the file", "[data]") {
    TmpDir d;
    std::string path = d.file("bad.bin");
    SECTION("missing file") { require_rejected(path, 256, "cannot open"); }
    SECTION("empty 0-byte file") {
        fclose(fopen(path.c_str(), "wb"));
        require_rejected(path, 256, "header");
    }
    SECTION("shorter than the header") {
        FILE* f = fopen(path.c_str(), "wb");
        fwrite("abc", 1, 3, f);
        fclose(f);
        require_rejected(path, 256, "header");
    }
    SECTION("truncated tokens") {
        write_raw(path, SHARD_MAGIC_U16, SHARD_VERSION_U16, 100, 2 * 99);
        require_rejected(path, 256, "should be");
    }
    SECTION("count disagrees with the size (extra bytes)") {
        write_raw(path, SHARD_MAGIC_U32, SHARD_VERSION_U32, 10, 4 * 10 + 2);
        require_rejected(path, 256, "should be");
    }
    SECTION("wrong magic") {
        write_raw(path, 12345, SHARD_VERSION_U16, 4, 8);
        require_rejected(path, 256, "magic");
    }
    SECTION("wrong version") {
        write_raw(path, SHARD_MAGIC_U16, SHARD_VERSION_U32, 4, 8);
        require_rejected(path, 256, "version");
    }
    SECTION("no tokens") {
        write_raw(path, SHARD_MAGIC_U16, SHARD_VERSION_U16, 0, 0);
        require_rejected(path, 256, "no tokens");
    }
    SECTION("token >= vocab_size") {
        std::vector<uint32_t> toks = {1, 2, 300, 4};
        write_shard(path, toks.data(), toks.size(), false);
        require_rejected(path, 256, "token 2 (byte offset 1028) is 300");
        REQUIRE_NOTHROW(Shard(path, 301));
    }
    SECTION("a directory") { require_rejected(d.path, 256, "regular file"); }
}

TEST_CASE("expand_glob: sorted matches, plain paths, no match", "[data]") {
    TmpDir d;
    std::vector<uint32_t> t = {1};
    for (const char* name : {"s_10.bin", "s_02.bin", "s_01.bin", "other.txt"})
        write_shard(d.file(name), t.data(), 1, false);
    auto files = expand_glob(d.file("s_*.bin"));
    REQUIRE(files == std::vector<std::string>{d.file("s_01.bin"), d.file("s_02.bin"),
                                              d.file("s_10.bin")});
    REQUIRE(expand_glob(d.file("other.txt")) == std::vector<std::string>{d.file("other.txt")});
    std::string none = d.file("nothing_*.bin");
    REQUIRE_THROWS_WITH(expand_glob(none), Catch::Contains(none + ": no file matches"));
}

TEST_CASE("dataloader: windows hold exactly the expected tokens", "[data]") {
    TmpDir d;
    const int B = 2, T = 4;  // B*T = 8
    // shard 0: tokens 0..24 (25 tokens): windows k with 8k + 9 <= 25 -> k = 0, 1, 2
    // shard 1: tokens 1000..1011 (12):    k = 0 only;  shard 2: 5 tokens, too short
    auto s0 = iota_tokens(25, 0), s1 = iota_tokens(12, 1000), s2 = iota_tokens(5, 2000);
    write_shard(d.file("d_0.bin"), s0.data(), s0.size(), false);
    write_shard(d.file("d_1.bin"), s1.data(), s1.size(), true);  // widths may mix
    write_shard(d.file("d_2.bin"), s2.data(), s2.size(), false);
    DataLoader dl(d.file("d_*.bin"), B, T, 4096);
    REQUIRE(dl.shards().size() == 2);  // d_2 skipped
    REQUIRE(dl.num_batches() == 4);
    REQUIRE(dl.tokens_per_epoch() == 4 * B * T);

    const int starts[] = {0, 8, 16, 1000};
    std::vector<int> x(B * T), y(B * T);
    for (int start : starts) {
        REQUIRE(dl.epoch() == 0);
        dl.next_batch(x.data(), y.data());
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                // row b starts at start + b*T; targets are inputs shifted by one
                REQUIRE(x[b * T + t] == start + b * T + t);
                REQUIRE(y[b * T + t] == start + b * T + t + 1);
            }
    }
    REQUIRE(dl.epoch() == 1);
}

TEST_CASE("dataloader: two ranks see every window of an epoch once, disjointly", "[data]") {
    TmpDir d;
    const int B = 3, T = 5;  // B*T = 15
    // window counts 7, 4, 1: odd counts and a shard with no window for rank 1
    const size_t sizes[] = {7 * 15 + 1, 4 * 15 + 10, 1 * 15 + 1};
    std::set<int> all;  // first token of every window, over both ranks
    for (int i = 0; i < 3; i++) {
        auto t = iota_tokens(sizes[i], 10000 * i);
        write_shard(d.file("r_" + std::to_string(i) + ".bin"), t.data(), t.size(), false);
        for (int k = 0; (size_t)(k * 15 + 16) <= sizes[i]; k++) all.insert(10000 * i + k * 15);
    }
    REQUIRE(all.size() == 12);

    std::multiset<int> seen;
    size_t total = 0;
    for (int rank = 0; rank < 2; rank++) {
        DataLoader dl(d.file("r_*.bin"), B, T, 65536, rank, 2);
        total += dl.num_batches();
        std::vector<int> x(B * T), y(B * T);
        for (size_t i = 0; i < dl.num_batches(); i++) {
            REQUIRE(dl.epoch() == 0);
            dl.next_batch(x.data(), y.data());
            int k = (x[0] % 10000) / 15;  // window index within its shard
            REQUIRE(k % 2 == rank);
            seen.insert(x[0]);
        }
        REQUIRE(dl.epoch() == 1);
    }
    REQUIRE(total == 12);
    REQUIRE(std::set<int>(seen.begin(), seen.end()) == all);
    REQUIRE(seen.size() == all.size());  // no window twice
}

TEST_CASE("dataloader: wrap-around increments epoch and repeats the data", "[data]") {
    TmpDir d;
    const int B = 1, T = 8;
    auto t = iota_tokens(3 * 8 + 1, 0);
    write_shard(d.file("w.bin"), t.data(), t.size(), false);
    DataLoader dl(d.file("w.bin"), B, T, 256);
    REQUIRE(dl.num_batches() == 3);
    std::vector<int> x(B * T), y(B * T);
    for (int epoch = 0; epoch < 3; epoch++)
        for (int k = 0; k < 3; k++) {
            REQUIRE(dl.epoch() == epoch);
            dl.next_batch(x.data(), y.data());
            REQUIRE(x[0] == 8 * k);
        }
    REQUIRE(dl.epoch() == 3);
    dl.reset();
    REQUIRE(dl.epoch() == 0);
    dl.next_batch(x.data(), y.data());
    REQUIRE(x[0] == 0);
}

TEST_CASE("dataloader: state/restore resumes with the same next batch", "[data]") {
    TmpDir d;
    const int B = 2, T = 3;
    auto a = iota_tokens(40, 0), b = iota_tokens(20, 500);
    write_shard(d.file("s_a.bin"), a.data(), a.size(), false);
    write_shard(d.file("s_b.bin"), b.data(), b.size(), false);
    for (int rank = 0; rank < 2; rank++) {
        DataLoader dl(d.file("s_*.bin"), B, T, 1024, rank, 2);
        std::vector<int> x(B * T), y(B * T), x2(B * T), y2(B * T);
        for (int step = 0; step < 2 * (int)dl.num_batches() + 1; step++) {
            LoaderState st = dl.state();
            dl.next_batch(x.data(), y.data());
            DataLoader fresh(d.file("s_*.bin"), B, T, 1024, rank, 2);
            fresh.restore(st);
            REQUIRE(fresh.epoch() == st.epoch);
            fresh.next_batch(x2.data(), y2.data());
            REQUIRE(x == x2);
            REQUIRE(y == y2);
            REQUIRE(fresh.state().shard == dl.state().shard);
            REQUIRE(fresh.state().window == dl.state().window);
            REQUIRE(fresh.state().epoch == dl.state().epoch);
        }
        // positions that are not this rank's windows are refused
        std::string pat = d.file("s_*.bin");
        REQUIRE_THROWS_WITH(dl.restore({2, 0, 0}), Catch::Contains(pat));
        REQUIRE_THROWS_WITH(dl.restore({0, 1 - rank, 0}), Catch::Contains("window"));
        REQUIRE_THROWS_WITH(dl.restore({0, 100, 0}), Catch::Contains("window"));
        REQUIRE_THROWS_WITH(dl.restore({0, rank, -1}), Catch::Contains("epoch"));
    }
}

TEST_CASE("dataloader: too little data is a UserError naming the pattern", "[data]") {
    TmpDir d;
    auto t = iota_tokens(8, 0);
    write_shard(d.file("small.bin"), t.data(), t.size(), false);
    std::string pat = d.file("small*.bin");
    // B*T+1 = 9 > 8 tokens
    REQUIRE_THROWS_WITH(DataLoader(pat, 2, 4, 256),
                        Catch::Contains(pat) && Catch::Contains("9 tokens"));
    REQUIRE_NOTHROW(DataLoader(pat, 1, 7, 256));
    // one window in total: rank 1 of 2 would get nothing
    REQUIRE_THROWS_WITH(DataLoader(pat, 1, 7, 256, 1, 2), Catch::Contains("rank 1 of 2"));
    // a bad shard anywhere in the pattern fails the loader
    REQUIRE_THROWS_WITH(DataLoader(pat, 1, 7, 5), Catch::Contains(d.file("small.bin")));
    REQUIRE_THROWS_WITH(DataLoader(d.file("none*.bin"), 1, 7, 256),
                        Catch::Contains("no file matches"));
}

namespace {

// Shards r_0.bin.. with window counts `windows` (B*T = 15) whose tokens name their
// window: the first token of window k of shard i is 10000*i + 15*k.
std::set<int> write_windows(const TmpDir& d, const std::vector<int>& windows) {
    std::set<int> all;
    for (size_t i = 0; i < windows.size(); i++) {
        auto t = iota_tokens((size_t)windows[i] * 15 + 1 + i % 3, 10000 * (uint32_t)i);
        write_shard(d.file("r_" + std::to_string(i) + ".bin"), t.data(), t.size(), false);
        for (int k = 0; k < windows[i]; k++) all.insert(10000 * (int)i + 15 * k);
    }
    return all;
}

// The first token of each batch of one epoch of `dl`, in order.
std::vector<int> epoch_starts(DataLoader& dl) {
    std::vector<int> x(15), y(15), starts;
    const int64_t e = dl.epoch();
    for (size_t i = 0; i < dl.num_batches(); i++) {
        REQUIRE(dl.epoch() == e);
        dl.next_batch(x.data(), y.data());
        REQUIRE(y[0] == x[0] + 1);
        starts.push_back(x[0]);
    }
    REQUIRE(dl.epoch() == e + 1);
    return starts;
}

}  // namespace

TEST_CASE("dataloader: shuffled epochs cover every window once, in a seeded order", "[data]") {
    TmpDir d;
    const std::set<int> all = write_windows(d, {9, 4, 1, 6, 3});
    const std::string pat = d.file("r_*.bin");
    for (int nranks : {1, 2, 3}) {
        std::vector<std::unique_ptr<DataLoader>> ranks;
        for (int r = 0; r < nranks; r++)
            ranks.push_back(std::make_unique<DataLoader>(pat, 3, 5, 65536, r, nranks, true, 42));
        std::vector<int> previous;
        for (int epoch = 0; epoch < 3; epoch++) {
            std::multiset<int> seen;
            std::vector<int> order;
            for (auto& dl : ranks) {
                auto s = epoch_starts(*dl);
                seen.insert(s.begin(), s.end());
                order.insert(order.end(), s.begin(), s.end());
            }
            INFO("nranks " << nranks << " epoch " << epoch);
            REQUIRE(seen.size() == all.size());  // each window exactly once per epoch
            REQUIRE(std::set<int>(seen.begin(), seen.end()) == all);
            REQUIRE(order != previous);  // a new order every epoch
            previous = order;
        }
    }
    // the order is a function of the seed: same seed, same order; another, another
    DataLoader a(pat, 3, 5, 65536, 0, 1, true, 42), b(pat, 3, 5, 65536, 0, 1, true, 42),
        c(pat, 3, 5, 65536, 0, 1, true, 43), seq(pat, 3, 5, 65536);
    auto oa = epoch_starts(a), ob = epoch_starts(b), oc = epoch_starts(c), os = epoch_starts(seq);
    REQUIRE(oa == ob);
    REQUIRE(oa != oc);
    REQUIRE(oa != os);
    REQUIRE(std::is_sorted(os.begin(), os.end()));
}

TEST_CASE("dataloader: a restored shuffled loader continues with the same windows", "[data]") {
    TmpDir d;
    write_windows(d, {7, 2, 5});
    const std::string pat = d.file("r_*.bin");
    for (int rank = 0; rank < 2; rank++) {
        DataLoader dl(pat, 3, 5, 65536, rank, 2, true, 7);
        std::vector<int> x(15), y(15), x2(15), y2(15);
        // across three epochs, from every position
        for (int step = 0; step < 3 * (int)dl.num_batches(); step++) {
            const LoaderState st = dl.state();
            REQUIRE(st.shuffle);
            REQUIRE(st.seed == 7);
            dl.next_batch(x.data(), y.data());
            DataLoader fresh(pat, 3, 5, 65536, rank, 2, true, 7);
            fresh.restore(st);
            for (int k = 0; k < 3; k++) {  // the same next batches, not just the first
                fresh.next_batch(x2.data(), y2.data());
                if (k == 0) REQUIRE(x2 == x);
            }
            REQUIRE(fresh.epoch() >= st.epoch);
        }
        // a state of another order or seed is refused, naming what differs
        LoaderState st = dl.state();
        DataLoader other_seed(pat, 3, 5, 65536, rank, 2, true, 8);
        REQUIRE_THROWS_WITH(other_seed.restore(st), Catch::Contains("seed 7") &&
                                                        Catch::Contains("seed 8"));
        DataLoader sequential(pat, 3, 5, 65536, rank, 2);
        REQUIRE_THROWS_WITH(sequential.restore(st), Catch::Contains("shuffled"));
        REQUIRE_THROWS_WITH(dl.restore({0, 1 - rank, 0, true, 7}), Catch::Contains("window"));
    }
}

// ---- documents layout: one document per row, padded targets masked

TEST_CASE("dataloader documents: each row is one document, truncated or padded", "[data]") {
    TmpDir d;
    const int SEP = 9, T = 4;
    // documents start at 0, 3, 9, 11; the last (the separator alone) has no target
    const std::vector<uint32_t> a = {9, 1, 2, 9, 3, 4, 5, 6, 7, 9, 8, 9};
    // a shard that does not start with the separator: its first document starts at 0
    const std::vector<uint32_t> b = {1, 2, 9, 5};
    write_shard(d.file("doc_a.bin"), a.data(), a.size(), false);
    write_shard(d.file("doc_b.bin"), b.data(), b.size(), true);
    DataLoader dl(d.file("doc_*.bin"), 1, T, 256, 0, 1, false, 0, {true, SEP});
    REQUIRE(dl.num_documents(0) == 3);
    REQUIRE(dl.num_documents(1) == 2);
    REQUIRE(dl.num_batches() == 5);
    const int P = -1;  // masked target
    // expected rows (inputs, targets); a padded input is the separator
    const std::vector<std::vector<int>> xs = {{9, 1, 2, 9}, {9, 3, 4, 5}, {9, 8, 9, 9}, {1, 2, 9, 9}, {9, 9, 9, 9}};
    const std::vector<std::vector<int>> ys = {{1, 2, 9, P}, {3, 4, 5, 6}, {8, 9, P, P}, {2, 9, P, P}, {5, P, P, P}};
    const size_t offsets[] = {0, 3, 9, 0, 2};
    std::vector<int> x(T), y(T);
    for (int k = 0; k < 5; k++) {
        INFO("row " << k);
        REQUIRE(dl.epoch() == 0);
        REQUIRE(dl.next_offset() == offsets[k]);
        dl.next_batch(x.data(), y.data());
        REQUIRE(x == xs[k]);
        REQUIRE(y == ys[k]);
    }
    REQUIRE(dl.epoch() == 1);

    // B = 2: a window is two consecutive documents of one shard; doc_b has one window,
    // doc_a one (its third document is left over)
    DataLoader two(d.file("doc_*.bin"), 2, T, 256, 0, 1, false, 0, {true, SEP});
    REQUIRE(two.num_batches() == 2);
    std::vector<int> x2(2 * T), y2(2 * T);
    two.next_batch(x2.data(), y2.data());
    REQUIRE(std::vector<int>(x2.begin(), x2.begin() + T) == xs[0]);
    REQUIRE(std::vector<int>(y2.begin() + T, y2.end()) == ys[1]);
}

TEST_CASE("dataloader documents: ranks, shuffle and resume work on documents", "[data]") {
    TmpDir d;
    const int SEP = 0, B = 2, T = 6;
    // documents named by their second token (unique), lengths 2..11, over three shards
    std::set<int> all;
    int name = 1;
    for (int i = 0; i < 3; i++) {
        std::vector<uint32_t> t;
        for (int k = 0; k < 5 + 2 * i; k++, name++) {
            t.push_back(SEP);
            t.push_back((uint32_t)name);
            for (int j = 0; j < name % 10; j++) t.push_back(1000);
            all.insert(name);
        }
        t.push_back(SEP);  // the end of the shard's last document
        write_shard(d.file("r_" + std::to_string(i) + ".bin"), t.data(), t.size(), false);
    }
    const std::string pat = d.file("r_*.bin");
    for (bool shuffle : {false, true})
        for (int nranks : {1, 2}) {
            INFO("shuffle " << shuffle << " nranks " << nranks);
            std::multiset<int> seen;
            size_t windows = 0;
            for (int r = 0; r < nranks; r++) {
                DataLoader dl(pat, B, T, 2048, r, nranks, shuffle, 5, {true, SEP});
                windows += dl.num_batches();
                std::vector<int> x(B * T), y(B * T), x2(B * T), y2(B * T);
                for (size_t i = 0; i < dl.num_batches(); i++) {
                    const LoaderState st = dl.state();
                    dl.next_batch(x.data(), y.data());
                    for (int b = 0; b < B; b++) {
                        REQUIRE(x[b * T] == SEP);  // every row starts at a document
                        seen.insert(y[b * T]);
                        // targets are inputs shifted by one until the padding, then -1
                        int n = 0;
                        while (n < T && y[b * T + n] >= 0) n++;
                        for (int t = 0; t + 1 < n; t++) REQUIRE(x[b * T + t + 1] == y[b * T + t]);
                        for (int t = n; t < T; t++) REQUIRE(y[b * T + t] == -1);
                        // a document shorter than the row ends with the next separator
                        if (n < T) REQUIRE(y[b * T + n - 1] == SEP);
                    }
                    DataLoader fresh(pat, B, T, 2048, r, nranks, shuffle, 5, {true, SEP});
                    fresh.restore(st);
                    fresh.next_batch(x2.data(), y2.data());
                    REQUIRE(x2 == x);
                    REQUIRE(y2 == y);
                }
                REQUIRE(dl.epoch() == 1);
            }
            // shards of 5, 7, 9 documents: 2 + 3 + 4 windows, the odd document of each left out
            REQUIRE(windows == 9);
            REQUIRE(seen.size() == 18);
            REQUIRE(std::set<int>(seen.begin(), seen.end()).size() == 18);  // none twice
        }
}

TEST_CASE("dataloader documents: too few documents or a bad separator is a UserError", "[data]") {
    TmpDir d;
    auto t = iota_tokens(100, 1);  // no separator 0: one document
    write_shard(d.file("nosep.bin"), t.data(), t.size(), false);
    const std::string pat = d.file("nosep.bin");
    REQUIRE_NOTHROW(DataLoader(pat, 1, 8, 256, 0, 1, false, 0, {true, 0}));
    REQUIRE_THROWS_WITH(DataLoader(pat, 2, 8, 256, 0, 1, false, 0, {true, 0}),
                        Catch::Contains(pat) && Catch::Contains("documents") && Catch::Contains("token 0"));
    REQUIRE_THROWS_WITH(DataLoader(pat, 1, 8, 256, 0, 1, false, 0, {true, 256}),
                        Catch::Contains(pat) && Catch::Contains("got 256"));
    REQUIRE_THROWS_WITH(DataLoader(pat, 1, 8, 256, 0, 1, false, 0, {true, -1}), Catch::Contains("got -1"));
}
