package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.OutputFormat;
import dev.dequant4j.internal.export.Manifest;
import dev.dequant4j.internal.gguf.GgufFile;
import dev.dequant4j.internal.gguf.GgufMetadata;
import dev.dequant4j.internal.gguf.GgufWriter;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * {@code export --format gguf} against files llama.cpp's own converter (81ff7ab) wrote from our safetensors export of
 * the same real NF4 Llama + LoRA and BPE tokenizer (and, for the K-quant mixes, files llama-quantize made of the
 * converter's F32 file; fixtures/gguf/README.md): every metadata key but the converter's
 * provenance ({@code general.name}), every tensor's name, type, shape, offset and bytes, in the same order, and then
 * the whole file with that one value put in.
 */
public class GgufExportTest {
    @TempDir
    Path tmp;

    private static Path reference(String type) {
        return Fixtures.root().resolve("gguf/llama-bpe/llama-lora-" + type + ".gguf");
    }

    /** The model the references were made from: the real NF4 Llama with the llama-bpe tokenizer beside it. */
    public static Path modelWithTokenizer(Path dir) {
        return modelWithTokenizer(dir, "llama-nf4-dq", "llama");
    }

    /** A real checkpoint of fixtures/real with the llama-bpe tokenizer beside it. */
    static Path modelWithTokenizer(Path dir, String checkpoint, String arch) {
        try {
            Files.createDirectories(dir);
            Path synthetic = Fixtures.root().resolve("gguf/archs/" + checkpoint);
            Path source = Files.isDirectory(synthetic) ? synthetic : Fixtures.real().resolve(checkpoint);
            for (String f : new String[] {"config.json", "model.safetensors"}) {
                Files.copy(source.resolve(f), dir.resolve(f));
            }
            Path config = Fixtures.root().resolve("gguf/archs/" + arch + "-config.json");
            if (Files.exists(config)) {
                Files.copy(config, dir.resolve("config.json"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            }
            Path spm = Fixtures.root().resolve("gguf/archs/" + arch + "-tokenizer.model");
            if (Files.exists(spm)) {
                Files.copy(spm, dir.resolve("tokenizer.model"));
                Files.copy(spm.resolveSibling(arch + "-tokenizer_config.json"), dir.resolve("tokenizer_config.json"));
                return dir;
            }
            for (String f : new String[] {"tokenizer.json", "tokenizer_config.json"}) {
                Files.copy(Fixtures.root().resolve("gguf/llama-bpe").resolve(f), dir.resolve(f));
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        return dir;
    }

    private ExportResult export(GgufFileType type, Path out) {
        return export("llama", "llama-nf4-dq", "adapter-llama-lora", type, out);
    }

    private ExportResult export(String arch, String checkpoint, String adapter, GgufFileType type, Path out) {
        try (Checkpoint base = Checkpoint.open(modelWithTokenizer(tmp.resolve("export-bpe-f32"), checkpoint, arch));
             LoraAdapter lora = adapter.equals("none") ? null : LoraAdapter.open(Fixtures.real().resolve(adapter))) {
            Export e = Export.of(base).format(OutputFormat.GGUF).ggufType(type).threads(2);
            if (lora != null) {
                e.adapter(lora);
            }
            return e.to(out);
        }
    }

    @ParameterizedTest
    @EnumSource(GgufFileType.class)
    void equalsTheConvertersFileButItsProvenance(GgufFileType type) throws Exception {
        Path out = tmp.resolve("out");
        ExportResult r = export(type, out);
        assertEquals(List.of(out.resolve("model.gguf"), out.resolve(Manifest.FILE_NAME)), r.files());
        assertSameAsConverter(out.resolve("model.gguf"), reference(type.name().toLowerCase(java.util.Locale.ROOT)));
    }

    /**
     * An adapter that grew the vocabulary (PEFT modules_to_save on embed_tokens and lm_head, 260 rows, its own
     * tokenizer with 4 added tokens) gives the converter's file made from our safetensors export: vocab_size 260, the
     * adapter's tokens at 220-223 and [PAD224]..[PAD259], the new rows (fixtures/gguf/llama-bpe/adapter-resized).
     */
    @Test
    void anAdapterThatResizedTheVocabularyEqualsTheConvertersFile() throws Exception {
        Path out = tmp.resolve("out");
        try (Checkpoint base = Checkpoint.open(modelWithTokenizer(tmp.resolve("export-bpe-f32")));
             LoraAdapter lora = LoraAdapter.open(Fixtures.root().resolve("gguf/llama-bpe/adapter-resized"))) {
            Export.of(base).adapter(lora).format(OutputFormat.GGUF).ggufType(GgufFileType.F32).threads(2).to(out);
        }
        assertSameAsConverter(out.resolve("model.gguf"),
                Fixtures.root().resolve("gguf/llama-bpe/llama-resized-f32.gguf"));
    }

    /**
     * A maximum file size splits the file as {@code convert_hf_to_gguf.py --split-max-size 100K} does: the same three
     * files (names, split.* keys, tensors), each equal as a whole.
     */
    @Test
    void aMaximumSizeSplitsAsTheConverterDoes() throws Exception {
        Path out = tmp.resolve("out");
        ExportResult r;
        try (Checkpoint base = Checkpoint.open(modelWithTokenizer(tmp.resolve("export-bpe-f32")));
             LoraAdapter lora = LoraAdapter.open(Fixtures.real().resolve("adapter-llama-lora"))) {
            r = Export.of(base).adapter(lora).format(OutputFormat.GGUF).ggufType(GgufFileType.F16).maxShardBytes(100_000)
                    .threads(2).to(out);
        }
        List<Path> expected = new ArrayList<>();
        for (int i = 1; i <= 3; i++) {
            String name = String.format("model-%05d-of-00003.gguf", i);
            expected.add(out.resolve(name));
            Path ref = Fixtures.root().resolve(String.format("gguf/llama-bpe/split/llama-lora-f16-%05d-of-00003.gguf",
                    i));
            assertSameAsConverter(out.resolve(name), ref);
        }
        expected.add(out.resolve(Manifest.FILE_NAME));
        assertEquals(expected, r.files());
        assertEquals(List.of(), Manifest.verify(out));
    }

    /**
     * The other architectures, each against the converter's file for our export of its real checkpoint + adapter
     * (fixtures/gguf/archs, made by scripts/fixtures/make_gguf_archs.py).
     */
    /** Every architecture but llama (above) with its checkpoint and adapter, as make_gguf_archs.py converts them. */
    private static final String[][] ARCHS = {
        {"qwen2", "qwen2-nf4-dq", "adapter-qwen2-lora"},
        {"mistral", "mistral-nf4-dq", "adapter-mistral-dora"},
        {"gemma2", "gemma2-nf4-dq", "none"},
        {"phi3", "phi3-nf4-dq", "adapter-phi3-lora"},
        {"gemma3", "gemma3-nf4-dq", "adapter-gemma3-lora"},
        {"llama31", "llama-nf4-dq", "adapter-llama-lora"},
        {"qwen3", "qwen3-model", "none"}};

    /** The types the converter writes itself (the K-quants need llama-quantize; llama has those above). */
    private static final GgufFileType[] CONVERTER_TYPES = {
        GgufFileType.F32, GgufFileType.F16, GgufFileType.BF16, GgufFileType.Q8_0};

    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> architecturesAndTypes() {
        return java.util.Arrays.stream(ARCHS).flatMap(a -> java.util.Arrays.stream(CONVERTER_TYPES)
                .map(t -> org.junit.jupiter.params.provider.Arguments.of(a[0], a[1], a[2], t)));
    }

    /**
     * The other architectures, each type against the converter's file for our export of its real checkpoint +
     * adapter (fixtures/gguf/archs, made by scripts/fixtures/make_gguf_archs.py).
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.MethodSource("architecturesAndTypes")
    void otherArchitecturesEqualTheConvertersFiles(String arch, String checkpoint, String adapter, GgufFileType type)
            throws Exception {
        Path out = tmp.resolve("out");
        export(arch, checkpoint, adapter, type, out);
        assertSameAsConverter(out.resolve("model.gguf"), Fixtures.root().resolve("gguf/archs/" + arch + "-lora-"
                + type.name().toLowerCase(java.util.Locale.ROOT) + ".gguf"));
    }

    /**
     * Every key (tokenizer.* included; for qwen2 transformers' Qwen2Tokenizer adds its default {@code <|endoftext|>}
     * to the borrowed llama-bpe vocabulary, which GgufTokenizer mirrors) and the whole file but the provenance.
     */
    private static void assertSameAsConverter(Path file, Path reference) throws Exception {
        try (GgufFile ours = GgufFile.open(file);
             GgufFile ref = GgufFile.open(reference)) {
            assertEquals(comparable(ref.metadata()), comparable(ours.metadata()));
            assertEquals(List.copyOf(ref.tensors().keySet()), List.copyOf(ours.tensors().keySet()), "tensor order");
            for (GgufFile.Tensor t : ref.tensors().values()) {
                GgufFile.Tensor o = ours.tensors().get(t.name());
                assertEquals(t.type(), o.type(), t.name());
                assertArrayEquals(t.ne(), o.ne(), t.name());
                assertEquals(t.offset(), o.offset(), t.name());
                assertEquals(-1, ref.data(t).mismatch(ours.data(o)), t.name() + ": bytes differ");
            }
            long dataBytes = ref.fileSize() - ref.dataOffset();
            assertEquals(dataBytes, ours.fileSize() - ours.dataOffset());
            assertArrayEquals(Files.readAllBytes(ref.path()), withProvenanceOf(ref, ours), "the whole file");
        }
        assertEquals(List.of(), Manifest.verify(file.getParent()));
    }

    /**
     * Our file with the reference's {@code general.name} and {@code general.size_label} (the converter's provenance,
     * derived from its directory name and parameter count) put in their places, rewritten through the writer.
     */
    private static byte[] withProvenanceOf(GgufFile ref, GgufFile ours) throws Exception {
        GgufMetadata md = new GgufMetadata();
        ours.metadata().entries().forEach((k, v) -> md.put(k, k.equals("general.name") ? ref.metadata().get(k) : v));
        List<GgufWriter.Planned> planned = new ArrayList<>();
        List<java.nio.ByteBuffer> data = new ArrayList<>();
        for (GgufFile.Tensor t : ours.tensors().values()) {
            planned.add(new GgufWriter.Planned(t.name(), t.ne(), t.type()));
            data.add(ours.data(t).asByteBuffer());
        }
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        new GgufWriter(md, planned).writeTo(java.nio.channels.Channels.newChannel(bytes), data);
        return bytes.toByteArray();
    }

    /** Key, type and value of every entry but the provenance ones, in file order. */
    private static List<String> comparable(GgufMetadata md) {
        List<String> out = new ArrayList<>();
        for (Map.Entry<String, GgufMetadata.Value> e : md.entries().entrySet()) {
            String k = e.getKey();
            if (k.startsWith("general.") && !k.equals("general.architecture")
                    && !k.equals("general.type") && !k.equals("general.file_type")
                    && !k.equals("general.quantization_version") && !k.equals("general.alignment")) {
                continue;
            }
            GgufMetadata.Value v = e.getValue();
            out.add(k + " " + v.type() + " " + render(v.value()));
        }
        return out;
    }

    private static String render(Object v) {
        return switch (v) {
            case int[] a -> java.util.Arrays.toString(a);
            case long[] a -> java.util.Arrays.toString(a);
            case float[] a -> java.util.Arrays.toString(a);
            case double[] a -> java.util.Arrays.toString(a);
            case boolean[] a -> java.util.Arrays.toString(a);
            default -> String.valueOf(v);
        };
    }

    @Test
    void aModelWithoutTokenizerIsRefused() {
        Path out = tmp.resolve("out");
        try (Checkpoint base = Checkpoint.open(Fixtures.real().resolve("llama-nf4-dq"))) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(base).format(OutputFormat.GGUF).to(out));
            assertTrue(e.getMessage().endsWith("no tokenizer.json or tokenizer.model: a GGUF file holds the"
                    + " vocabulary, so a GGUF export needs the tokenizer"), e.getMessage());
        }
        assertFalse(Files.exists(out));
    }

    @Test
    void verifyFindsAChangedByte() throws Exception {
        Path out = tmp.resolve("out");
        export(GgufFileType.F16, out);
        Path file = out.resolve("model.gguf");
        byte[] b = Files.readAllBytes(file);
        b[b.length - 100] ^= 1;
        Files.write(file, b);
        List<String> problems = Manifest.verify(out);
        assertEquals(1, problems.size(), problems.toString());
        assertTrue(problems.getFirst().contains("sha256"), problems.getFirst());
    }


    @Test
    void anUnsupportedArchitectureIsRefusedByName() {
        Path out = tmp.resolve("out");
        try (Checkpoint base = Checkpoint.open(Fixtures.real().resolve("mixtral-nf4-dq"))) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(base).format(OutputFormat.GGUF).to(out));
            assertTrue(e.getMessage().contains("MixtralForCausalLM cannot be exported as GGUF"), e.getMessage());
        }
        assertFalse(Files.exists(out));
    }

    @Test
    void theFileIsMappedAsGgufWithItsDataAligned() {
        Path out = tmp.resolve("out");
        export(GgufFileType.BF16, out);
        try (GgufFile f = GgufFile.open(out.resolve("model.gguf"))) {
            assertEquals(0, f.dataOffset() % f.alignment());
            MemorySegment norm = f.data(f.tensors().get("output_norm.weight"));
            assertEquals(64 * 4, norm.byteSize(), "norms stay F32");
        }
    }
}
