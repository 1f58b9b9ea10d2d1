// Run under mpirun by test/test_comm.cpp: every collective of the MPI communicator
// on rank-dependent data, checked exactly (the values are small integers, so fp32
// sums are exact). `stall` makes the last rank sleep through a collective: the
// others must stop at the time limit with a message instead of hanging. `file DIR`
// (started once per rank with SLURM_* set, no MPI): the file bootstrap's broadcast
// and barrier.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "comm/comm.h"

static int fails = 0;
#define EXPECT(cond)                                                                   \
    do {                                                                               \
        if (!(cond)) fprintf(stderr, "rank check failed at line %d: %s\n", __LINE__, #cond), fails++; \
    } while (0)

static int file_bootstrap(const std::string& dir) {
    const LaunchInfo li = detect_launch();
    if (li.kind != Launcher::slurm) return fprintf(stderr, "not a Slurm launch\n"), 1;
    auto comm = make_file_comm(li, dir, 20.0);
    char msg[32] = {};
    for (int round = 0; round < 3; round++) {  // the same collectives, in order, several times
        if (comm->rank() == round % comm->size()) snprintf(msg, sizeof msg, "id %d from %d", round * 7, comm->rank());
        comm->broadcast(msg, sizeof msg, round % comm->size());
        EXPECT(std::string(msg) == "id " + std::to_string(round * 7) + " from " + std::to_string(round % comm->size()));
        comm->barrier();
    }
    printf("rank %d of %d: %s\n", comm->rank(), comm->size(), fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}

int main(int argc, char** argv) {
    if (argc > 2 && std::string(argv[1]) == "file") return file_bootstrap(argv[2]);
    const bool stall = argc > 1 && std::string(argv[1]) == "stall";
    auto comm = make_mpi_comm(stall ? 2.0 : 60.0);
    const int r = comm->rank(), R = comm->size();
    if (stall && r == R - 1) sleep(60);

    const size_t n = 1001, shard = 7;
    std::vector<float> a(n);
    for (size_t i = 0; i < n; i++) a[i] = (float)(i % 13) + r;
    comm->all_reduce_sum(a.data(), n, DType::f32);
    for (size_t i = 0; i < n; i++) EXPECT(a[i] == (float)(R * (i % 13) + R * (R - 1) / 2));

    std::vector<float> in(R * shard), out(shard);
    for (size_t i = 0; i < in.size(); i++) in[i] = (float)(i + 100 * r);
    comm->reduce_scatter_sum(out.data(), in.data(), shard, DType::f32);
    for (size_t i = 0; i < shard; i++) EXPECT(out[i] == (float)(R * (r * shard + i) + 100 * R * (R - 1) / 2));

    std::vector<float> mine(shard, (float)r), all(R * shard);
    comm->all_gather(all.data(), mine.data(), shard, DType::f32);
    for (int k = 0; k < R; k++)
        for (size_t i = 0; i < shard; i++) EXPECT(all[k * shard + i] == (float)k);

    char msg[16] = {};
    if (r == 0) std::strcpy(msg, "from rank 0");
    comm->broadcast(msg, sizeof msg, 0);
    EXPECT(std::string(msg) == "from rank 0");
    comm->barrier();
    printf("rank %d of %d: %s\n", r, R, fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
