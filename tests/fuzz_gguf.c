/* tests/fuzz_gguf.c - libFuzzer target for the GGUF reader: any bytes go to bg_gguf_open_memory;
 * a file it accepts is then read completely (every key, string, array element and tensor), so
 * that ASan/UBSan catch any access the validation failed to guard. A rejected file must come
 * with a message. Build and run with .ci/fuzz_gguf.sh. */
#include <bitgrad/gguf.h>
#include <bitgrad/quant.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_everything(const bg_gguf *g)
{
    volatile unsigned sink = 0;
    for (int64_t i = 0; i < bg_gguf_n_kv(g); i++) {
        size_t len = 0;
        const char *key = bg_gguf_key(g, i);
        const char *s = bg_gguf_get_str(g, i, &len);
        sink += (unsigned char)key[0] + (s ? (unsigned char)s[len] : 0u);
        int64_t n = bg_gguf_get_arr_n(g, i);
        const uint8_t *arr = bg_gguf_get_arr_data(g, i);
        for (int64_t j = 0; j < n; j++) {
            const char *e = bg_gguf_get_arr_str(g, i, j, &len);
            sink += e ? (unsigned char)e[len] : arr ? arr[j] : 0u;
        }
    }
    for (int64_t i = 0; i < bg_gguf_n_tensors(g); i++) {
        int64_t n = bg_gguf_tensor_nelements(g, i);
        const uint8_t *p = bg_gguf_tensor_data(g, i);
        size_t nbytes = bg_gguf_tensor_nbytes(g, i);
        sink += p[0] + p[nbytes - 1];
        float *buf = n > 0 && n <= (1 << 22) ? malloc((size_t)n * sizeof *buf) : NULL;
        if (buf) (void)bg_gguf_read_tensor_f32(g, i, buf);
        free(buf);
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bg_gguf *g = NULL;
    char err[256] = "";
    if (bg_gguf_open_memory(&g, data, size, err, sizeof err) == 0) {
        read_everything(g);
        bg_gguf_free(&g);
    } else if (err[0] == 0) {
        fprintf(stderr, "rejected without a message\n");
        abort();
    }
    return 0;
}
