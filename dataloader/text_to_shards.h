// Text or JSONL files -> tokenized train/val shards in the llm.c format, on all cores.
//
// Documents: in a text file, the text between lines that hold only "<|endoftext|>"
// (the separator lines themselves are dropped); in a .jsonl file, the string field
// `jsonl_field` of each record (one record per line). Blank documents are dropped. As
// in llm.c, every document is preceded by the tokenizer's end-of-text token (none for
// `bytes`), so documents are packed back to back and a shard starts at a document
// boundary.
//
// Split: the last val_fraction of each input's bytes goes to val, cut at the document
// boundary nearest that point when one lies within half the val size of it, else at the
// nearest line start (a document cut there continues in val as a document of its own).
// Train never sees val text, and the split does not depend on the number of threads:
// the shards are the same bytes for any thread count.
//
// Output: PREFIX_train_000000.bin, PREFIX_train_000001.bin, ... and PREFIX_val_000000.bin
// ..., each of shard_tokens tokens except the last of each split; uint16 tokens, uint32
// when the vocabulary is larger than 65536.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

struct ShardJob {
    std::vector<std::string> inputs;  // text or .jsonl files; "-" reads text from stdin
    std::string out_prefix;
    size_t shard_tokens = 100000000;  // llm.c's FineWeb shards hold 1e8 tokens
    double val_fraction = 0.01;
    std::string jsonl_field = "text";
    bool strict_utf8 = false;  // reject invalid UTF-8 naming the file and byte offset,
                               // instead of replacing each bad sequence by U+FFFD
    bool overwrite = false;    // remove PREFIX_{train,val}_*.bin of an earlier run first
    int threads = 0;           // 0: all cores
    bool progress = false;     // a progress bar with MB/s and ETA on stderr
};

struct ShardStats {
    size_t documents = 0, bytes = 0;
    size_t replaced = 0;  // invalid UTF-8 sequences replaced by U+FFFD
    size_t tokens[2] = {0, 0};  // train, val (end-of-text tokens included)
    std::vector<std::string> files[2];
    double seconds = 0;
};

// UserError naming the file (and line or byte offset) for unreadable or malformed input,
// and naming the prefix when earlier shards are in the way (see `overwrite`).
ShardStats build_shards(const Tokenizer& tok, const ShardJob& job);
