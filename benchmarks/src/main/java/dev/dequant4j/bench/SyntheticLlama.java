package dev.dequant4j.bench;

import dev.dequant4j.DType;
import dev.dequant4j.internal.safetensors.ShardFiles;
import dev.dequant4j.internal.safetensors.ShardIndex;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes a Llama-3-8B-shaped bitsandbytes NF4 double-quant checkpoint with {@code layers} layers (hidden 4096,
 * intermediate 14336, 32 heads / 8 KV heads, vocab 128256, blocksize 64, BF16), and an r-rank F32 LoRA adapter on
 * all seven projections. Values are pseudo-random but valid (finite weights of realistic size); the layout, keys and
 * byte sizes are exactly those of a real checkpoint, which is what the export's speed depends on.
 */
public final class SyntheticLlama {
    static final int HIDDEN = 4096;
    static final int INTER = 14336;
    static final int HEADS = 32;
    static final int KV_HEADS = 8;
    static final int HEAD_DIM = 128;
    static final int VOCAB = 128256;
    static final int BLOCKSIZE = 64;

    private SyntheticLlama() {}

    /** The seven quantized projections of a layer: name suffix and [out, in]. */
    static List<Object[]> projections() {
        return List.of(
                new Object[] {"self_attn.q_proj", HEADS * HEAD_DIM, HIDDEN},
                new Object[] {"self_attn.k_proj", KV_HEADS * HEAD_DIM, HIDDEN},
                new Object[] {"self_attn.v_proj", KV_HEADS * HEAD_DIM, HIDDEN},
                new Object[] {"self_attn.o_proj", HIDDEN, HEADS * HEAD_DIM},
                new Object[] {"mlp.gate_proj", INTER, HIDDEN},
                new Object[] {"mlp.up_proj", INTER, HIDDEN},
                new Object[] {"mlp.down_proj", HIDDEN, INTER});
    }

    /** One tensor to generate: a spec and how to fill it. */
    private record Gen(ShardedLayout.Spec spec, Filler filler) {}

    private interface Filler {
        void fill(MemorySegment dst, long seed);
    }

    public static void writeModel(Path dir, int layers) throws IOException {
        List<Gen> gens = new ArrayList<>();
        gens.add(new Gen(new ShardedLayout.Spec("model.embed_tokens.weight", DType.BF16, new long[] {VOCAB, HIDDEN}),
                SyntheticLlama::bf16));
        for (int l = 0; l < layers; l++) {
            String p = "model.layers." + l + ".";
            gens.add(new Gen(new ShardedLayout.Spec(p + "input_layernorm.weight", DType.BF16, new long[] {HIDDEN}),
                    SyntheticLlama::bf16));
            for (Object[] proj : projections()) {
                String w = p + proj[0] + ".weight";
                long out = (int) proj[1];
                long in = (int) proj[2];
                long n = out * in;
                long nb = (n + BLOCKSIZE - 1) / BLOCKSIZE;
                long nnb = (nb + 255) / 256;
                gens.add(new Gen(new ShardedLayout.Spec(w, DType.U8, new long[] {(n + 1) / 2, 1}),
                        SyntheticLlama::bytes));
                gens.add(new Gen(new ShardedLayout.Spec(w + ".absmax", DType.U8, new long[] {nb}),
                        SyntheticLlama::bytes));
                gens.add(new Gen(new ShardedLayout.Spec(w + ".quant_map", DType.F32, new long[] {16}),
                        SyntheticLlama::nf4Map));
                gens.add(new Gen(new ShardedLayout.Spec(w + ".nested_absmax", DType.F32, new long[] {nnb}),
                        (d, s) -> fillF32(d, 0.004f)));
                gens.add(new Gen(new ShardedLayout.Spec(w + ".nested_quant_map", DType.F32, new long[] {256}),
                        SyntheticLlama::dynamicMap));
                byte[] qs = ("{\"quant_type\": \"nf4\", \"blocksize\": " + BLOCKSIZE + ", \"dtype\": \"bfloat16\", "
                        + "\"shape\": [" + out + ", " + in + "], \"nested_blocksize\": 256, \"nested_dtype\": "
                        + "\"float32\", \"nested_offset\": 0.01}").getBytes(StandardCharsets.UTF_8);
                gens.add(new Gen(new ShardedLayout.Spec(w + ".quant_state.bitsandbytes__nf4", DType.U8,
                        new long[] {qs.length}), (d, s) -> MemorySegment.copy(qs, 0, d, ValueLayout.JAVA_BYTE, 0,
                        qs.length)));
            }
            gens.add(new Gen(new ShardedLayout.Spec(p + "post_attention_layernorm.weight", DType.BF16,
                    new long[] {HIDDEN}), SyntheticLlama::bf16));
        }
        gens.add(new Gen(new ShardedLayout.Spec("model.norm.weight", DType.BF16, new long[] {HIDDEN}),
                SyntheticLlama::bf16));
        gens.add(new Gen(new ShardedLayout.Spec("lm_head.weight", DType.BF16, new long[] {VOCAB, HIDDEN}),
                SyntheticLlama::bf16));
        writeTensors(dir, gens, 5_000_000_000L);
        Files.writeString(dir.resolve("config.json"), """
                {
                  "architectures": ["LlamaForCausalLM"],
                  "hidden_size": %d,
                  "intermediate_size": %d,
                  "model_type": "llama",
                  "num_attention_heads": %d,
                  "num_hidden_layers": %d,
                  "num_key_value_heads": %d,
                  "head_dim": %d,
                  "quantization_config": {"bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_type": "nf4",
                    "bnb_4bit_use_double_quant": true, "load_in_4bit": true, "quant_method": "bitsandbytes"},
                  "tie_word_embeddings": false,
                  "torch_dtype": "bfloat16",
                  "vocab_size": %d
                }
                """.formatted(HIDDEN, INTER, HEADS, layers, KV_HEADS, HEAD_DIM, VOCAB));
    }

    /** A PEFT adapter with rank {@code r} (alpha = 2r) on every projection, F32 A and B. */
    public static void writeAdapter(Path dir, int layers, int r) throws IOException {
        List<Gen> gens = new ArrayList<>();
        for (int l = 0; l < layers; l++) {
            for (Object[] proj : projections()) {
                String p = "base_model.model.model.layers." + l + "." + proj[0];
                long out = (int) proj[1];
                long in = (int) proj[2];
                gens.add(new Gen(new ShardedLayout.Spec(p + ".lora_A.weight", DType.F32, new long[] {r, in}),
                        (d, s) -> fillF32(d, (float) (1 / Math.sqrt(in)))));
                gens.add(new Gen(new ShardedLayout.Spec(p + ".lora_B.weight", DType.F32, new long[] {out, r}),
                        (d, s) -> fillF32(d, 0.01f)));
            }
        }
        writeTensors(dir, gens, Long.MAX_VALUE);
        Files.move(dir.resolve(ShardedLayout.SINGLE_FILE), dir.resolve("adapter_model.safetensors"));
        Files.writeString(dir.resolve("adapter_config.json"), """
                {"peft_type": "LORA", "r": %d, "lora_alpha": %d, "lora_dropout": 0.0, "bias": "none",
                 "fan_in_fan_out": false, "use_rslora": false, "use_dora": false, "task_type": "CAUSAL_LM",
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                 "base_model_name_or_path": "synthetic-llama-3-8b-bnb-4bit", "inference_mode": true}
                """.formatted(r, 2 * r));
    }

    private static void writeTensors(Path dir, List<Gen> gens, long maxShard) throws IOException {
        Files.createDirectories(dir);
        List<ShardedLayout.Spec> specs = gens.stream().map(Gen::spec).toList();
        ShardedLayout layout = ShardedLayout.plan(specs, maxShard, 64);
        long chunk = 64L << 20;
        try (ShardFiles files = ShardFiles.create(dir, layout); Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(chunk, 64);
            long seed = 1;
            for (Gen g : gens) {
                ShardedLayout.Placement p = layout.placement(g.spec().name());
                for (long off = 0; off < p.byteSize(); off += chunk) {
                    long n = Math.min(chunk, p.byteSize() - off);
                    MemorySegment slice = buf.asSlice(0, n);
                    g.filler().fill(slice, seed++);
                    files.write(p, off, slice);
                }
            }
        }
        byte[] index = layout.indexJson();
        if (index != null) {
            Files.write(dir.resolve(ShardIndex.FILE_NAME), index);
        }
    }

    private static long xorshift(long x) {
        x ^= x << 13;
        x ^= x >>> 7;
        x ^= x << 17;
        return x;
    }

    private static void bytes(MemorySegment d, long seed) {
        long x = 0x9E3779B97F4A7C15L * seed;
        long n = d.byteSize() / 8;
        for (long i = 0; i < n; i++) {
            x = xorshift(x);
            d.setAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, i, x);
        }
        for (long i = n * 8; i < d.byteSize(); i++) {
            d.set(ValueLayout.JAVA_BYTE, i, (byte) i);
        }
    }

    /** Small bf16 values of either sign: exponent 2^-8 .. 2^-5. */
    private static void bf16(MemorySegment d, long seed) {
        long x = 0x9E3779B97F4A7C15L * seed;
        long n = d.byteSize() / 2;
        for (long i = 0; i < n; i++) {
            x = xorshift(x);
            int bits = (int) (x & 0x807F) | ((0x77 + (int) ((x >>> 20) & 3)) << 7);
            d.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) bits);
        }
    }

    private static void fillF32(MemorySegment d, float scale) {
        long x = 0x2545F4914F6CDD1DL ^ d.byteSize();
        long n = d.byteSize() / 4;
        ValueLayout.OfFloat le = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        for (long i = 0; i < n; i++) {
            x = xorshift(x);
            float u = (x >>> 40) / (float) (1 << 24) - 0.5f;
            d.setAtIndex(le, i, u * 2 * scale);
        }
    }

    private static void nf4Map(MemorySegment d, long seed) {
        float[] nf4 = {-1.0f, -0.6961928f, -0.52507305f, -0.3949175f, -0.28444138f, -0.18477343f, -0.091050036f, 0f,
            0.0795803f, 0.1609302f, 0.2461123f, 0.33791524f, 0.44070983f, 0.562617f, 0.72295684f, 1.0f};
        MemorySegment.copy(nf4, 0, d, ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0, 16);
    }

    private static void dynamicMap(MemorySegment d, long seed) {
        ValueLayout.OfFloat le = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 256; i++) {
            d.setAtIndex(le, i, i / 127.5f - 1f);
        }
    }
}
