# Kernel profiling and micro-benchmarks (doc/profiling.md); included by the Makefile.
#   make bench-kernels   $(BUILD)/bench_kernels: every CUDA op alone, against ceilings it measures
#   make bench-dp        data parallel (mpirun) against one process on the same cores (bench/data_parallel.sh)
#   make profile         a -lineinfo build in $(PROF_BUILD), then scripts/profile.sh $(PROFILE_ARGS)
#                        e.g. make profile PROFILE_ARGS="--model gpt2-124m -b 16 -t 1024"

# included before `all`: keep `all` the default goal
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := all
endif

PROF_BUILD ?= build-prof
PROFILE_ARGS ?=

.PHONY: bench-kernels profile bench-dp

bench-dp: train_gpt
	BUILD=$(BUILD) bash bench/data_parallel.sh

# the profiling build: source lines in the reports (NVTX is on in every CUDA build)
ifeq ($(LNS_PROFILE_BUILD),1)
NVCCFLAGS += -lineinfo
endif

ifeq ($(HAVE_NVCC),1)
$(BUILD)/bench_kernels: bench/bench_kernels.cu $(LIB_OBJ) $(KERNEL_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $< $(LIB_OBJ) $(KERNEL_OBJ) -o $@ $(NVCC_LINK_LIBS)

$(BUILD)/train_gpt_prof: train_gpt.cu $(LIB_OBJ) $(KERNEL_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $< $(LIB_OBJ) $(KERNEL_OBJ) -o $@ $(NVCC_LINK_LIBS)

bench-kernels: $(BUILD)/bench_kernels

profile:
	@bash scripts/profile.sh --check  # the tools first: the build takes minutes
	@$(MAKE) --no-print-directory BUILD=$(PROF_BUILD) LNS_PROFILE_BUILD=1 $(PROF_BUILD)/train_gpt_prof $(PROF_BUILD)/bench_kernels
	PROF_BUILD=$(PROF_BUILD) bash scripts/profile.sh $(PROFILE_ARGS)
else
bench-kernels profile:
	@echo "$@: needs the CUDA build: nvcc at $(NVCC), and not NO_CUDA=1 (doc/profiling.md)"; exit 1
endif

-include $(BUILD)/bench_kernels.d $(BUILD)/train_gpt_prof.d
