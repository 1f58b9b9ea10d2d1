// libFuzzer target: arbitrary bytes as a token shard. The reader must accept a valid
// shard and refuse anything else with a UserError; never crash, hang or read past the map.
// The first input byte picks the vocab size, so both the width and the range checks run.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "common/check.h"
#include "dataloader/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string path = "/tmp/lns_fuzz_shard_" + std::to_string(getpid()) + ".bin";
    const int vocabs[] = {1, 256, 50257, 65535, 65536, 100000, 1 << 30};
    const int vocab = size ? vocabs[data[0] % 7] : 256;
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) return 0;
    if (size > 1) fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    try {
        Shard s(path, vocab);
        uint64_t sum = 0;
        for (size_t i = 0; i < s.size(); i++) {
            if (s[i] >= (uint32_t)vocab) __builtin_trap();  // accepted a bad token
            sum += s[i];
        }
        if (size - 1 != SHARD_HEADER_BYTES + s.size() * (s.wide() ? 4 : 2)) __builtin_trap();
        (void)sum;
    } catch (const UserError& e) {
        if (std::string(e.what()).rfind(path, 0) != 0) __builtin_trap();  // must name the file
    }
    unlink(path.c_str());
    return 0;
}
