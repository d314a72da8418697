/* cmd_info.c - `bitgrad info FILE.gguf`: header, keys with types and values, tensors with
 * type, shape and bytes, and for ternary tensors the zero fraction and scale. */
#include <stdlib.h>
#include <string.h>

#include <bitgrad/gguf.h>

#include "cli.h"

static void print_scalar(const bg_gguf *g, int64_t i, int type)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; bool b; uint64_t u64; int64_t i64; double f64; } v;
    switch (type) {
    case BG_GGUF_U8: bg_gguf_get_u8(g, i, &v.u8); printf("%u", v.u8); break;
    case BG_GGUF_I8: bg_gguf_get_i8(g, i, &v.i8); printf("%d", v.i8); break;
    case BG_GGUF_U16: bg_gguf_get_u16(g, i, &v.u16); printf("%u", v.u16); break;
    case BG_GGUF_I16: bg_gguf_get_i16(g, i, &v.i16); printf("%d", v.i16); break;
    case BG_GGUF_U32: bg_gguf_get_u32(g, i, &v.u32); printf("%u", v.u32); break;
    case BG_GGUF_I32: bg_gguf_get_i32(g, i, &v.i32); printf("%d", v.i32); break;
    case BG_GGUF_F32: bg_gguf_get_f32(g, i, &v.f32); printf("%.9g", (double)v.f32); break;
    case BG_GGUF_BOOL: bg_gguf_get_bool(g, i, &v.b); printf("%s", v.b ? "true" : "false"); break;
    case BG_GGUF_U64: bg_gguf_get_u64(g, i, &v.u64); printf("%llu", (unsigned long long)v.u64); break;
    case BG_GGUF_I64: bg_gguf_get_i64(g, i, &v.i64); printf("%lld", (long long)v.i64); break;
    case BG_GGUF_F64: bg_gguf_get_f64(g, i, &v.f64); printf("%.17g", v.f64); break;
    case BG_GGUF_STRING: {
        size_t len;
        const char *s = bg_gguf_get_str(g, i, &len);
        printf("\"%.*s\"%s", (int)(len > 60 ? 60 : len), s, len > 60 ? "..." : "");
        break;
    }
    default: printf("?");
    }
}

static void print_kv(const bg_gguf *g, int64_t i)
{
    int type = bg_gguf_kv_type(g, i);
    printf("  %-45s %-5s ", bg_gguf_key(g, i), bg_gguf_type_name(type));
    if (type != BG_GGUF_ARRAY) {
        print_scalar(g, i, type);
    } else {
        int et = bg_gguf_get_arr_type(g, i);
        int64_t n = bg_gguf_get_arr_n(g, i);
        printf("[%s x %lld]", bg_gguf_type_name(et), (long long)n);
        if (et == BG_GGUF_STRING && n > 0) {
            size_t len;
            const char *s = bg_gguf_get_arr_str(g, i, 0, &len);
            printf(" \"%.*s\", ...", (int)(len > 20 ? 20 : len), s);
        }
    }
    printf("\n");
}

/* Zero fraction and mean block scale of a TQ tensor. */
static void ternary_stats(const bg_gguf *g, int64_t i)
{
    int64_t n = bg_gguf_tensor_nelements(g, i);
    int8_t *codes = malloc((size_t)n);
    float *d = malloc((size_t)(n / 256 + 1) * sizeof(float));
    if (codes && d && !bg_tq_unpack_codes(bg_gguf_tensor_type(g, i), bg_gguf_tensor_data(g, i),
                                          codes, d, n)) {
        double dsum = 0.0;
        for (int64_t b = 0; b < n / 256; b++) dsum += d[b];
        printf("  zeros %.1f%%  d %.6g", 100.0 * bg_ternary_sparsity(codes, n),
               dsum / (double)(n / 256));
        char sn[80];
        const char *name = bg_gguf_tensor_name(g, i);
        size_t len = strlen(name);
        if (len > 7 && strcmp(name + len - 7, ".weight") == 0) {
            snprintf(sn, sizeof sn, "%.*s.scale", (int)(len - 7), name);
            int64_t si = bg_gguf_find_tensor(g, sn);
            float s;
            if (si >= 0 && bg_gguf_tensor_nelements(g, si) == 1 && !bg_gguf_read_tensor_f32(g, si, &s))
                printf("  scale %.8g", (double)s);
        }
    }
    free(codes);
    free(d);
}

int cmd_info(int argc, char **argv)
{
    if (argc != 2 || cli_flag(argv, 1, "--help")) {
        printf("usage: bitgrad info FILE.gguf\n");
        return argc == 2 ? 0 : 2;
    }
    char err[512];
    bg_gguf *g = NULL;
    if (bg_gguf_open(&g, argv[1], err, sizeof err)) return cli_fail(1, "%s: %s", argv[1], err);
    printf("%s: GGUF v%u, alignment %u, data at %llu, %lld keys, %lld tensors\n", argv[1],
           bg_gguf_version(g), bg_gguf_alignment(g), (unsigned long long)bg_gguf_data_offset(g),
           (long long)bg_gguf_n_kv(g), (long long)bg_gguf_n_tensors(g));
    printf("keys:\n");
    for (int64_t i = 0; i < bg_gguf_n_kv(g); i++) print_kv(g, i);
    printf("tensors:\n");
    size_t total = 0;
    for (int64_t i = 0; i < bg_gguf_n_tensors(g); i++) {
        int t = bg_gguf_tensor_type(g, i), nd = bg_gguf_tensor_n_dims(g, i);
        const int64_t *ne = bg_gguf_tensor_ne(g, i);
        char shape[96];
        int off = snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < nd; d++)
            off += snprintf(shape + off, sizeof shape - (size_t)off, d ? ",%lld" : "%lld", (long long)ne[d]);
        snprintf(shape + off, sizeof shape - (size_t)off, "]");
        total += bg_gguf_tensor_nbytes(g, i);
        printf("  %-32s %-6s %-14s %10zu bytes", bg_gguf_tensor_name(g, i), bg_ggml_type_name(t),
               shape, bg_gguf_tensor_nbytes(g, i));
        if (t == BG_GGML_TQ1_0 || t == BG_GGML_TQ2_0) ternary_stats(g, i);
        printf("\n");
    }
    printf("total tensor data: %zu bytes\n", total);
    bg_gguf_free(&g);
    return 0;
}
