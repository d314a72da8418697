/* cmd_export.c - `bitgrad export`: a checkpoint (or any bitnet GGUF bitgrad can import) to a
 * llama.cpp model file, and optionally a bitgrad adapter file to a llama.cpp adapter. */
#include <string.h>

#include <bitgrad/checkpoint.h>
#include <bitgrad/export.h>

#include "cli.h"

static int export_usage(int status)
{
    printf("usage: bitgrad export CKPT.gguf --out model.gguf [--type tq2_0|tq1_0|f16|f32]\n"
           "                      [--embd f16|f32] [--scale-in-d] [--name NAME]\n"
           "                      [--adapter ADAPTER.gguf --adapter-out llama_adapter.gguf]\n"
           "  writes the bitnet model for llama.cpp (lossless TQ2_0 by default: codes with\n"
           "  d = 1 and the exact scale in <proj>.scale; --scale-in-d puts fp16(scale) in d).\n"
           "  --adapter takes a bitgrad adapter file (bg_lora_save) and writes it in\n"
           "  llama.cpp's LoRA format.\n");
    return status;
}

static int parse_type(const char *s, int *out)
{
    static const struct { const char *n; int t; } types[] = {
        { "tq2_0", BG_GGML_TQ2_0 }, { "tq1_0", BG_GGML_TQ1_0 }, { "f16", BG_GGML_F16 },
        { "f32", BG_GGML_F32 } };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(s, types[i].n) == 0) {
            *out = types[i].t;
            return 0;
        }
    return cli_fail(2, "unknown type '%s' (tq2_0, tq1_0, f16, f32)", s);
}

int cmd_export(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *type = "tq2_0", *embd = "f16", *name = NULL;
    const char *adapter = NULL, *adapter_out = NULL;
    bg_export_options eo = bg_export_default();
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return export_usage(0);
        if (cli_opt(argc, argv, &i, "--out", &out, &bad) || cli_opt(argc, argv, &i, "--type", &type, &bad) ||
            cli_opt(argc, argv, &i, "--embd", &embd, &bad) || cli_opt(argc, argv, &i, "--name", &name, &bad) ||
            cli_opt(argc, argv, &i, "--adapter", &adapter, &bad) ||
            cli_opt(argc, argv, &i, "--adapter-out", &adapter_out, &bad)) continue;
        if (cli_flag(argv, i, "--scale-in-d")) eo.scale_in_d = true;
        else if (argv[i][0] != '-' && !in) in = argv[i];
        else return cli_fail(2, "export: unknown argument %s", argv[i]);
    }
    if (bad || !in || (!out && !adapter_out) || (!adapter != !adapter_out)) return export_usage(2);
    if (parse_type(type, &eo.weight_type) || parse_type(embd, &eo.embd_type)) return 2;
    if (name) eo.name = name;
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return cli_fail(1, "out of memory");
    char err[512];
    bg_module *m = NULL;
    int rc = bg_bitnet_import(ctx, in, &m, err, sizeof err) ? cli_fail(1, "%s: %s", in, err) : 0;
    if (!rc && out && bg_bitnet_export(m, out, &eo, err, sizeof err)) rc = cli_fail(1, "%s", err);
    if (!rc && out) printf("wrote %s\n", out);
    /* the adapter goes with the model these options write: .scale tensors or not */
    bool coded = eo.weight_type == BG_GGML_TQ2_0 || eo.weight_type == BG_GGML_TQ1_0 ||
                 eo.weight_type == BG_GGML_Q2_0 || eo.weight_type == BG_GGML_Q8_0;
    if (m) bg_lora_set_scale_tensors(m, coded && !eo.scale_in_d);
    if (!rc && adapter && (bg_lora_load(adapter, m, "default", err, sizeof err) ||
                           bg_lora_export(m, "default", adapter_out, err, sizeof err)))
        rc = cli_fail(1, "%s", err);
    if (!rc && adapter) printf("wrote %s\n", adapter_out);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
    return rc;
}
