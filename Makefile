# lns.cu — build, test, run.
#   make              train_gpt (CUDA build when nvcc exists, else CPU-only with g++)
#   make test         every test (GPU tests run only where a GPU exists)
#   make quickstart   build, data, a short training run, a sample, a loss plot
#   make deps         install the Debian packages the project needs (as root)

CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(CUDA_HOME)/bin/nvcc
PYTHON ?= /usr/bin/python3
CXX ?= g++
BUILD ?= build

# Without a local GPU build for Ampere and Hopper; with one, for it alone.
GPU_ARCH ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.' | sed 's/^90$$/90a/')
ifeq ($(strip $(GPU_ARCH)),)
GPU_ARCH := 80 90a
endif

HAVE_NVCC := $(shell test -x $(NVCC) && echo 1)
ifeq ($(NO_CUDA),1)
HAVE_NVCC :=
endif

# PRECISION=FP32 runs the CUDA backend in fp32 throughout, for exact comparison with the CPU.
PRECISION ?= BF16
CXXFLAGS ?= -O3
CXXFLAGS += -std=c++17 -fopenmp -Wall -Wextra -I. -MMD -MP
LDLIBS := -fopenmp
NVCCFLAGS ?= -O3
NVCCFLAGS += -std=c++17 -I. -MMD -MP -Xcompiler -fopenmp,-Wall,-Wextra -Werror all-warnings \
	$(foreach a,$(GPU_ARCH),-gencode arch=compute_$(a),code=sm_$(a))
ifeq ($(PRECISION),FP32)
CXXFLAGS += -DENABLE_FP32
NVCCFLAGS += -DENABLE_FP32
endif

LIB_SRC := $(wildcard common/*.cpp model/*.cpp cpu/*.cpp dataloader/*.cpp tokenizer/*.cpp train/*.cpp comm/*.cpp)
LIB_OBJ := $(LIB_SRC:%.cpp=$(BUILD)/%.o)
TEST_SRC := $(wildcard test/*.cpp test/emu/*.cpp)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/%.o)
KERNEL_SRC := $(wildcard kernels/*.cu comm/*.cu)
KERNEL_OBJ :=
ifeq ($(HAVE_NVCC),1)
# The CUDA backend: kernels built by nvcc, linked into train_gpt and the tests;
# host code that calls it sees LNS_CUDA.
KERNEL_OBJ := $(KERNEL_SRC:%.cu=$(BUILD)/%.o)
# The same backend source compiled by g++ for the CPU emulator (test/emu): emu_backend,
# which the tests run where no GPU is. ptx_probe.cu is a GPU-only test harness.
EMU_KERNEL_OBJ := $(patsubst kernels/%.cu,$(BUILD)/emu/kernels/%.o,$(filter-out kernels/ptx_probe.cu,$(wildcard kernels/*.cu))) \
	$(BUILD)/emu/comm/nccl_comm.o
EMU_RUNTIME_OBJ := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard test/emu/*.cpp))
# and the [gpu] tests compiled against it, so they run on every machine (test_util.h: GPU_TEST_CASE)
EMU_OBJ := $(EMU_KERNEL_OBJ) $(patsubst %.cpp,$(BUILD)/emu/%.o,$(wildcard test/test_cuda_*.cpp))
# train_gpt on the emulated backend: --device cuda runs the CUDA backend's source (tests)
EMU_TRAIN := $(BUILD)/train_gpt_emu
CXXFLAGS += -DLNS_CUDA -isystem $(CUDA_HOME)/include
NVCCFLAGS += -DLNS_CUDA
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcublas -lnccl
# what an nvcc link of a CUDA program needs besides the objects (LDLIBS is lazy: later additions count)
NVCC_LINK_LIBS = -lgomp -lcublasLt -lcublas -lnccl $(filter -l% -L%,$(LDLIBS))
endif

DEBIAN_PKGS := g++ make libcli11-dev catch2 nlohmann-json3-dev libomp-dev python3 python3-numpy python3-torch python3-matplotlib \
	libopenmpi-dev openmpi-bin

# MPI (several processes on the CPU backend, and NCCL's bootstrap) when OpenMPI is installed.
HAVE_MPI := $(shell command -v mpicxx >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_MPI),1)
# C bindings only, headers as system headers (their C++ bindings do not build cleanly)
CXXFLAGS += -DLNS_MPI -DOMPI_SKIP_MPICXX=1 $(addprefix -isystem ,$(shell mpicxx --showme:incdirs))
LDLIBS += $(addprefix -L,$(shell mpicxx --showme:libdirs)) -lmpi
endif

# Each concern may add packages, libraries and tools of its own.
-include tokenizer/tokenizer.mk
-include bench/bench.mk

.PHONY: all deps test quickstart clean data bench repro-tiny
# Benchmarks report speed as ratios against a reference measured in the same run.
bench: bench-tokenizer bench-dp
all: train_gpt

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

# kernel source compiled for the CPU emulator (test/emu): CUDA's pragmas mean nothing to g++, its
# guarded reads of arrays filled under the same guard look uninitialised to it, its 128-bit
# type punning is the CUDA idiom, and a kernel taking a TMA tensor map (a 64-byte-aligned
# CUtensorMap) by value draws a note on an ABI change of GCC 4.6
EMU_CXXFLAGS := -Wno-unknown-pragmas -Wno-maybe-uninitialized -Wno-strict-aliasing -Wno-psabi
# EMU_FMA=1 (x86-64 with FMA; use its own BUILD): the emulated code contracts a*b+c to FMA as
# nvcc does by default, so bitwise tests meet a compiler that fuses (doc/cuda.md)
ifeq ($(EMU_FMA),1)
EMU_CXXFLAGS += -mfma -ffp-contract=fast
endif
$(BUILD)/test/test_ptx_probe.o \
	$(BUILD)/test/test_emulator.o $(BUILD)/test/emu/cuda_emu.o: CXXFLAGS += $(EMU_CXXFLAGS)
$(BUILD)/emu/%.o: %.cu
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(EMU_CXXFLAGS) -x c++ -include test/emu/cuda_emu.h -c $< -o $@
$(BUILD)/emu/test/%.o: test/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(EMU_CXXFLAGS) -include test/emu/cuda_emu.h -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@
$(BUILD)/comm/%.o: comm/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

ifeq ($(HAVE_NVCC),1)
train_gpt: train_gpt.cu $(LIB_OBJ) $(KERNEL_OBJ)
	$(NVCC) $(NVCCFLAGS) $< $(LIB_OBJ) $(KERNEL_OBJ) -o $@ $(NVCC_LINK_LIBS)
else
train_gpt: train_gpt.cu $(LIB_OBJ)
	$(CXX) $(CXXFLAGS) -x c++ $< -x none $(LIB_OBJ) -o $@ $(LDLIBS)
endif

$(BUILD)/test_all: $(TEST_OBJ) $(LIB_OBJ) $(KERNEL_OBJ) $(EMU_OBJ) $(if $(HAVE_MPI),$(BUILD)/test_comm_mpi) $(EMU_TRAIN)
	$(CXX) $(filter %.o,$^) -o $@ $(LDLIBS) $(CUDA_LIBS)

$(BUILD)/train_gpt_emu: train_gpt.cu $(LIB_OBJ) $(EMU_KERNEL_OBJ) $(EMU_RUNTIME_OBJ)
	$(CXX) $(CXXFLAGS) $(EMU_CXXFLAGS) -include test/emu/cuda_emu.h -x c++ $< -x none $(filter %.o,$^) -o $@ \
		$(LDLIBS) $(CUDA_LIBS)

# run under mpirun by test/test_comm.cpp
$(BUILD)/test_comm_mpi: $(BUILD)/test/mpi/test_comm_mpi.o $(BUILD)/comm/comm.o $(BUILD)/common/safetensors.o
	$(CXX) $^ -o $@ $(LDLIBS)

# `make deps`: as root, install what is missing; otherwise print the command.
deps:
	@missing=""; for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "deps: installing$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >$(BUILD).deps.log 2>&1 \
	  || { tail -20 $(BUILD).deps.log; echo "deps: apt-get failed (log above)"; exit 1; }; \
	else echo "deps: missing$$missing; run: sudo apt-get install$$missing"; exit 1; fi

# deps first, alone: with -j the build must not start before the headers exist
test: deps
	@$(MAKE) --no-print-directory train_gpt $(BUILD)/test_all
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(BUILD)/test_all

# ---- quickstart: tinyshakespeare as bytes, a small LNS model, a sample, a plot
QS_DIR ?= runs/quickstart
QS_TEXT ?= $(firstword $(wildcard ../shared/data/tinyshakespeare.txt) data/tinyshakespeare.txt)
QS_FLAGS ?= --model llama-mini --norm lns -b 8 -t 128 --steps 500 --lr 3e-3 --warmup 30 --eval-every 50 --val-batches 8 --sample-tokens 300 --top-k 40
data/tinyshakespeare_train.bin: scripts/get_tinyshakespeare.sh scripts/text_to_shards.py
	@bash scripts/get_tinyshakespeare.sh $(QS_TEXT) data/tinyshakespeare.txt
	$(PYTHON) scripts/text_to_shards.py --tokenizer bytes data/tinyshakespeare.txt data/tinyshakespeare
data: data/tinyshakespeare_train.bin

quickstart: deps
	@$(MAKE) --no-print-directory train_gpt data
	rm -rf $(QS_DIR)  # a fresh run each time (train_gpt refuses a directory holding a run)
	./train_gpt $(QS_FLAGS) --train-data data/tinyshakespeare_train.bin --val-data data/tinyshakespeare_val.bin \
	  --out-dir $(QS_DIR) --save-to $(QS_DIR)/model
	$(PYTHON) scripts/plot_loss.py $(QS_DIR) -o $(QS_DIR)/loss.png

# ---- the paper's grids (scripts/repro.py; doc/curse-of-depth.md): Table 1 at tiny scale on the CPU,
# charts and summary.md in runs/repro/table1-tiny/plots
repro-tiny: train_gpt
	$(PYTHON) scripts/repro.py table1 --scale tiny

clean:
	rm -rf $(BUILD) train_gpt

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(KERNEL_OBJ:.o=.d) $(EMU_OBJ:.o=.d)
# the programs compiled and linked in one step (header changes rebuild them too)
-include train_gpt.d $(BUILD)/train_gpt_emu.d $(BUILD)/bench_kernels.d
