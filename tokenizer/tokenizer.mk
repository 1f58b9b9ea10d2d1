# Tokenizers and data preparation; included by the top Makefile. Targets:
#   tokenize          the tool: encode, decode, shard (text/JSONL -> train/val shards), bench
#   gpt2-vocab        GPT-2's encoder.json + vocab.bpe, checked and cached (the tests need them)
#   bench-tokenizer   tokenizer MB/s on one core and on all, against js-tiktoken on the same text
#   fuzz              short libFuzzer runs of the shard reader and the GPT-2 encoder (not CI)
#   gpt2-reference    regenerate test/data/tokenizer/gpt2_reference.jsonl with js-tiktoken

DEBIAN_PKGS += libpcre2-dev libsentencepiece-dev sentencepiece
TOKENIZER_LDLIBS := -lpcre2-8 -lsentencepiece
LDLIBS += $(TOKENIZER_LDLIBS)

# Their headers come with `make deps`, which -j could otherwise run after these compile.
$(BUILD)/tokenizer/gpt2.o $(BUILD)/tokenizer/sentencepiece.o $(BUILD)/tokenizer/tokenizer.o \
	$(BUILD)/test/test_tokenizer.o: | deps

# The test suite loads GPT-2's files (fetched once, then cached) and runs the tool.
test: gpt2-vocab tokenize

.PHONY: gpt2-vocab bench-tokenizer fuzz gpt2-reference
gpt2-vocab:
	@bash scripts/get_gpt2_vocab.sh

# The independent implementations (npm), pinned, for the reference ids and the benchmark.
NODE_DIR := $(BUILD)/node
NODE_PKGS := js-tiktoken@1.0.21 gpt-3-encoder@1.1.4
$(NODE_DIR)/.installed:
	@mkdir -p $(NODE_DIR)
	npm install --prefix $(NODE_DIR) --no-save --no-audit --no-fund --loglevel=error $(NODE_PKGS)
	@touch $@
gpt2-reference: $(NODE_DIR)/.installed
	NODE_PATH=$(NODE_DIR)/node_modules node scripts/make_gpt2_reference.js

# tools live under tokenizer/tools/, out of LIB_SRC's reach; the tool needs no model code
TOKENIZE_OBJ := $(BUILD)/tokenizer/tools/tokenize.o $(filter $(BUILD)/dataloader/% $(BUILD)/tokenizer/%,$(LIB_OBJ))
tokenize: $(TOKENIZE_OBJ)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/tokenizer/tools/tokenize.o: | deps
-include $(BUILD)/tokenizer/tools/tokenize.d

BENCH_MB ?= 20
bench-tokenizer: tokenize gpt2-vocab $(NODE_DIR)/.installed
	@BUILD=$(BUILD) BENCH_MB=$(BENCH_MB) NODE_PATH=$(NODE_DIR)/node_modules bash bench/tokenizer.sh

# libFuzzer with ASan and UBSan (clang); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
FUZZ_CXX ?= clang++
FUZZ_FLAGS := -std=c++17 -g -O1 -fopenmp -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
$(BUILD)/fuzz/fuzz_shard: fuzz/fuzz_shard.cpp dataloader/shard.cpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $^ -o $@
$(BUILD)/fuzz/fuzz_gpt2: fuzz/fuzz_gpt2.cpp tokenizer/tokenizer.cpp tokenizer/gpt2.cpp tokenizer/sentencepiece.cpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $^ -o $@ $(TOKENIZER_LDLIBS)
fuzz: $(BUILD)/fuzz/fuzz_shard $(BUILD)/fuzz/fuzz_gpt2 gpt2-vocab
	@mkdir -p $(BUILD)/fuzz/corpus_shard $(BUILD)/fuzz/corpus_gpt2
	$(BUILD)/fuzz/fuzz_shard -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $(BUILD)/fuzz/corpus_shard fuzz/seeds/shard
	$(BUILD)/fuzz/fuzz_gpt2 -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $(BUILD)/fuzz/corpus_gpt2 fuzz/seeds/gpt2

# Rules above must not become the default goal of the including Makefile.
.DEFAULT_GOAL :=
