/* bitgrad.h - the whole public API of bitgrad: BitNet b1.58 training, fine-tuning and
 * GGUF export in C. Include this one header; link with -lbitgrad (pkg-config bitgrad). */
#ifndef BITGRAD_H
#define BITGRAD_H

#include "bitgrad/tensor.h"
#include "bitgrad/autograd.h"
#include "bitgrad/quant.h"
#include "bitgrad/ternary.h"
#include "bitgrad/nn.h"
#include "bitgrad/optim.h"
#include "bitgrad/checkpoint.h"
#include "bitgrad/dist.h"
#include "bitgrad/text.h"

#endif
