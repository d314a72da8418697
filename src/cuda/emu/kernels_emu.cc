/* kernels_emu.cc - the kernel files of src/cuda compiled as C++ against the CPU emulator
 * (cuda_emu.h; -Demulate_cuda=true). One translation unit, so kernel names stay unique. */
#include "cuda/k_runtime.cu"
#include "cuda/k_elementwise.cu"
#include "cuda/k_quant.cu"
#include "cuda/k_nn.cu"
#include "cuda/k_attention.cu"
#include "cuda/k_optim.cu"
