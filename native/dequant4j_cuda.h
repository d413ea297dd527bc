/*
 * dequant4j CUDA kernels: the C ABI.
 *
 * Every launcher takes device pointers, sizes and a stream (a cudaStream_t passed as void*, NULL for the legacy
 * default stream), checks its arguments on the host before touching the GPU, enqueues its kernels and returns
 * DQ4J_OK, a negative DQ4J_ERR_* code (nothing was launched) or a positive cudaError_t from the launch. Launchers
 * never allocate, copy or synchronize: the caller owns memory, copies and streams.
 *
 * Numerics follow the dequant4j scalar oracle (dev.dequant4j.internal.cpu.ScalarKernels):
 *   - dequantization is bit for bit: one binary32 product (two for int8, in bitsandbytes' order), one
 *     round-to-nearest-even to the output type; the double-quant absmax is f32(f32(map[code] * nested) + offset);
 *   - merges follow MergeOp's per-element order (acc starts with k = 0 and adds k = 1 .. r-1, then
 *     w = w + f32(acc * scale)); with DQ4J_MERGE_FMA the k-loop uses fused multiply-adds instead (faster at large
 *     r, within an ulp of the output type but no longer bit-identical);
 *   - F16 conversion is IEEE RNE with Java's NaN payload rule (Float.floatToFloat16), BF16 is
 *     (bits + 0x7FFF + lsb) >> 16 with NaN -> 0x7FC0 (c10::BFloat16).
 */
#ifndef DEQUANT4J_CUDA_H
#define DEQUANT4J_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; only these functions are exported. */
#if defined(__GNUC__)
#define DQ4J_API __attribute__((visibility("default")))
#else
#define DQ4J_API
#endif

/* Bumped whenever a struct, an enum value or a launcher signature changes. */
#define DQ4J_ABI_VERSION 1

/* Element types. */
#define DQ4J_F32 0
#define DQ4J_F16 1
#define DQ4J_BF16 2
#define DQ4J_F64 3

/* Source kinds. */
#define DQ4J_SRC_4BIT 1  /* bitsandbytes NF4/FP4, with or without double quantization */
#define DQ4J_SRC_INT8 2  /* bitsandbytes LLM.int8 rows with SCB */
#define DQ4J_SRC_PLAIN 3 /* F32, F16, BF16 or F64 values */

/* Merge step kinds (dev.dequant4j.internal.lora.MergeOp). */
#define DQ4J_STEP_LORA 1         /* w = w + f32(acc * scale), acc = left[row,:] . right[:,col] */
#define DQ4J_STEP_DORA_ROW 2     /* as LORA, then w = f32(factor[row] * w) */
#define DQ4J_STEP_DORA_COL 3     /* as LORA, then w = f32(factor[col] * w) */
#define DQ4J_STEP_ADD_SCALED 4   /* w = w + f32(values[element] * scale) */
#define DQ4J_STEP_REPLACE_ROWS 5 /* w = values[row_map[row] * cols + col] where row_map[row] >= 0 */

/* Flags of dq4j_merge / dq4j_dora_norms. */
#define DQ4J_MERGE_FMA 1 /* k-loop with fused multiply-adds (not bit-identical to the oracle) */

/* Error codes (positive values are cudaError_t). */
#define DQ4J_OK 0
#define DQ4J_ERR_INVALID_ARGUMENT (-1) /* a null pointer, a negative size, an unknown kind or dtype */
#define DQ4J_ERR_MISALIGNED (-2)       /* a pointer or elem0 without the alignment the kernel needs */
#define DQ4J_ERR_TOO_MANY_STEPS (-3)   /* more than DQ4J_MAX_STEPS merge steps */

#define DQ4J_MAX_STEPS 16

/* The fused merge kernel's output tile; DoRA partial sums come per tile (see dq4j_dora_norms). */
#define DQ4J_TILE_ROWS 32
#define DQ4J_TILE_COLS 256

/*
 * Where the base values of a range of a tensor come from. The range starts at flattened element elem0 of the
 * whole tensor; every pointer here is relative to that range, so a caller can stream a large tensor in chunks.
 */
typedef struct dq4j_source {
    int32_t kind;          /* DQ4J_SRC_* */
    int32_t dtype;         /* PLAIN: DQ4J_F32, DQ4J_F16, DQ4J_BF16 or DQ4J_F64 */
    int32_t block_shift;   /* 4BIT: log2(blocksize), 5 (32) .. 12 (4096) */
    int32_t nested;        /* 4BIT: 1 with double quantization (absmax_code + nested_*), 0 with f32 absmax */
    int64_t elem0;         /* flattened index of the range's first element in the whole tensor */
    int64_t cols;          /* INT8: the row length (elements per SCB entry); otherwise unused */
    const void* data;      /* 4BIT: packed bytes from byte elem0 / 2; INT8: int8 values from elem0; PLAIN: values */
    const float* absmax;           /* 4BIT, not nested: scales, [0] = block (elem0 >> block_shift) */
    const uint8_t* absmax_code;    /* 4BIT, nested: 8-bit codes, same indexing */
    const float* nested_map;       /* 4BIT, nested: the 256-entry dynamic map */
    const float* nested_absmax;    /* 4BIT, nested: [0] = nested block ((elem0 >> block_shift) >> 8) */
    const float* scb;              /* INT8: row scales, [0] = row (elem0 / cols) */
    float nested_offset;           /* 4BIT, nested: added after the nested product */
    float code[16];                /* 4BIT: the code table by nibble (NF4 or FP4) */
} dq4j_source;

/*
 * One merge step. Its arrays are indexed over the whole tensor (global row, column or flattened element), since
 * they are uploaded once per tensor while the source streams in row chunks.
 */
typedef struct dq4j_step {
    int32_t kind;            /* DQ4J_STEP_* */
    int32_t r;               /* LORA/DORA: rank, >= 1 */
    float scale;             /* LORA/DORA/ADD_SCALED */
    int32_t reserved;        /* zero */
    const float* left;       /* LORA/DORA: rows x r, row-major */
    const float* right;      /* LORA/DORA: r x cols, row-major */
    const float* factor;     /* DORA_ROW: per row; DORA_COL: per column (from dq4j_dora_*_factors) */
    const float* values;     /* ADD_SCALED: per element; REPLACE_ROWS: replacement rows of cols values */
    const int32_t* row_map;  /* REPLACE_ROWS: per row, the index of its replacement row in values, or -1 */
} dq4j_step;

DQ4J_API int32_t dq4j_abi_version(void);
DQ4J_API int64_t dq4j_sizeof_source(void);
DQ4J_API int64_t dq4j_sizeof_step(void);

/* A static description of a code: DQ4J_ERR_* or a cudaError_t name and text. */
DQ4J_API const char* dq4j_error_string(int32_t code);

/*
 * Dequantizes or converts n elements of src into out (n values of out_dtype, DQ4J_F32/F16/BF16).
 * Alignment: 4BIT needs elem0 % 32 == 0 and data 16-byte aligned; INT8 needs elem0 % 16 == 0 and data 16-byte
 * aligned; PLAIN needs data 16-byte aligned; out must be 16-byte aligned. Partial vectors at the end are fine.
 */
DQ4J_API int32_t dq4j_dequant(const dq4j_source* src, int64_t n, int32_t out_dtype, void* out, void* stream);

/*
 * Rows [row0, row0 + rows) of a tensor with cols columns (src.elem0 must be row0 * cols): base values, then the
 * steps in order on each element in fp32, then one rounding to out_dtype into out (rows * cols values, 16-byte
 * aligned). At most DQ4J_MAX_STEPS steps and 2^30 elements per launch. Steps of kind DORA_* need their factor
 * arrays (dq4j_dora_norms, then dq4j_dora_*_factors).
 */
DQ4J_API int32_t dq4j_merge(const dq4j_source* src, int64_t row0, int64_t rows, int64_t cols,
                            const dq4j_step* steps, int32_t nsteps, int32_t flags, int32_t out_dtype, void* out,
                            void* stream);

/*
 * The norm pass of DoRA step `step` over the same rows: runs steps [0, step) fully and the delta of `step`, then
 * writes double partial sums of squares to partials: for DORA_ROW [rows][ceil(cols / DQ4J_TILE_COLS)], for
 * DORA_COL [ceil(rows / DQ4J_TILE_ROWS)][cols].
 */
DQ4J_API int32_t dq4j_dora_norms(const dq4j_source* src, int64_t row0, int64_t rows, int64_t cols,
                                 const dq4j_step* steps, int32_t nsteps, int32_t step, int32_t flags,
                                 double* partials, void* stream);

/* factor[i] = f32(magnitude[i] / f32(sqrt(sum over tiles of partials[i][t]))) for rows i < rows. */
DQ4J_API int32_t dq4j_dora_row_factors(const double* partials, int64_t rows, int64_t col_tiles,
                                       const float* magnitude, float* factor, void* stream);

/* col_sums[c] += sum over t of partials[t][c], tiles in order; the caller zeroes col_sums first. */
DQ4J_API int32_t dq4j_dora_col_accumulate(const double* partials, int64_t row_tiles, int64_t cols,
                                          double* col_sums, void* stream);

/* factor[c] = f32(magnitude[c] / f32(sqrt(col_sums[c]))). */
DQ4J_API int32_t dq4j_dora_col_factors(const double* col_sums, int64_t cols, const float* magnitude,
                                       float* factor, void* stream);

#ifdef __cplusplus
}
#endif

#endif
