package dev.dequant4j.fuzz;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.cli.Main;
import dev.dequant4j.internal.bnb.QuantState;
import dev.dequant4j.internal.export.Manifest;
import dev.dequant4j.internal.gguf.GgufFile;
import dev.dequant4j.internal.gguf.GgufMetadata;
import dev.dequant4j.internal.gguf.GgufTokenizer;
import dev.dequant4j.internal.gguf.SentencePieceModel;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.lora.MergePlan;
import dev.dequant4j.internal.lora.PythonRegex;
import dev.dequant4j.internal.safetensors.AtomicDirectory;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Timeout;

/**
 * Coverage-guided fuzzing (Jazzer) of every parser that reads untrusted input, each checked against
 * {@link CleanFailure}'s property. In a plain {@code mvn test} each target replays its checked-in inputs
 * ({@code src/test/resources/dev/dequant4j/fuzz/ParsersFuzzTestInputs/<target>/}: seeds, a minimized corpus and every
 * finding), and the {@code fuzz-smoke} execution fuzzes {@link #allParsers} for a few seconds. A longer run of one
 * target: {@code JAZZER_FUZZ=1 JAZZER_MAX_DURATION=10m mvn test -Dtest=ParsersFuzzTest#json} (docs/RELIABILITY.md).
 * The 10-second timeout is also libFuzzer's per-input timeout, so a hang is a finding too.
 */
@Timeout(10)
class ParsersFuzzTest {
    private static final Path HEADER_NAME = Path.of("fuzzed.safetensors");
    private static final Path GGUF_NAME = Path.of("fuzzed.gguf");
    private static final Path SPM_NAME = Path.of("tokenizer.model");
    private static final List<String> CHECKPOINTS = Fixtures.checkpointNames();

    private static Path work;
    private static Path sharded;
    private static long shardBytes;
    private static Path adapter;
    private static long adapterBytes;
    private static Checkpoint base;
    private static Checkpoint base48;
    private static Path exported;
    private static long exportedBytes;
    private static Path bpeTokenizer;
    private static Path spmTokenizer;
    private static long tokenizerBytes;

    @BeforeAll
    static void setUp() throws IOException {
        work = Files.createTempDirectory("dequant4j-fuzz");
        // A sharded model for the index target, with decoys an index could name: a file that is not safetensors,
        // a directory, and a link to a safetensors file outside the model directory.
        sharded = Files.createDirectory(work.resolve("sharded"));
        Path mixed = Fixtures.checkpoint("llama-h64-mixed");
        try (Stream<Path> s = Files.list(mixed)) {
            for (Path p : s.toList()) {
                Files.copy(p, sharded.resolve(p.getFileName()));
                if (p.toString().endsWith(".safetensors")) {
                    shardBytes += Files.size(p);
                }
            }
        }
        Files.delete(sharded.resolve("model.safetensors.index.json"));
        Files.writeString(sharded.resolve("notes.txt"), "not weights");
        Files.createDirectory(sharded.resolve("sub.safetensors"));
        Path outside = Files.copy(mixed.resolve("model-00001-of-00002.safetensors"), work.resolve("outside.safetensors"));
        Files.createSymbolicLink(sharded.resolve("link.safetensors"), outside);

        adapter = Files.createDirectory(work.resolve("adapter"));
        Files.copy(Fixtures.adapter("h64-lora-r8").resolve("adapter_model.safetensors"),
                adapter.resolve("adapter_model.safetensors"));
        adapterBytes = Files.size(adapter.resolve("adapter_model.safetensors"));
        base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
        base48 = Checkpoint.open(Fixtures.checkpoint("llama-h48-fp16-nf4-dq"));
        // A real export, whose manifest the manifest target replaces (what `dequant4j verify` reads)
        exported = work.resolve("exported");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed"))) {
            Export.of(c).maxShardBytes(100_000).to(exported);
        }
        try (Stream<Path> s = Files.list(exported)) {
            for (Path p : s.toList()) {
                exportedBytes += Files.size(p);
            }
        }

        // Tokenizer directories for the GGUF tokenizer metadata: a Qwen2-style BPE and a Llama 2-style SentencePiece.
        bpeTokenizer = copyTokenizer("bpe-qwen2");
        spmTokenizer = copyTokenizer("spm-llama");

        // Each path once first, so that class loading and first-use caches are not counted as an input's allocation.
        Path seeds = Fixtures.root().resolveSibling("dev/dequant4j/fuzz/ParsersFuzzTestInputs");
        for (String target : List.of("json", "safetensorsHeader", "quantState", "shardIndex", "adapterConfig",
                "manifest", "gguf", "sentencepiece", "ggufTokenizer")) {
            try (Stream<Path> s = Files.list(seeds.resolve(target))) {
                for (Path p : s.sorted().toList()) {
                    try {
                        parse(target, Files.readAllBytes(p));
                    } catch (RuntimeException refused) {
                        // a seed may be refused; only its first-use costs matter here
                    }
                }
            }
        }
        for (String name : Fixtures.adapterNames()) {
            try (LoraAdapter a = LoraAdapter.open(Fixtures.adapter(name))) {
                MergePlan plan = MergePlan.build(name.startsWith("h48") ? base48 : base, List.of(a));
                for (String t : plan.tensors()) {
                    plan.ops(t);
                }
            }
        }
        for (String name : CHECKPOINTS) {
            inspect(Fixtures.checkpoint(name));
            try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name))) {
                for (TensorInfo t : c.tensors()) {
                    c.readFloats(t.name());
                }
            }
        }
    }

    private static Path copyTokenizer(String kind) throws IOException {
        Path dir = Files.createDirectory(work.resolve(kind));
        try (Stream<Path> s = Files.list(Fixtures.root().resolve("gguf/tokenizers").resolve(kind))) {
            for (Path p : s.filter(p -> !p.toString().endsWith(".gguf")).toList()) {
                Files.copy(p, dir.resolve(p.getFileName()));
                tokenizerBytes = Math.max(tokenizerBytes, Files.size(p));
            }
        }
        return dir;
    }

    /** The GGUF tokenizer metadata of {@code dir} (its {@code ARCH-config.json} is config.json). */
    private static void ggufTokenizer(Path dir, String arch) throws IOException {
        Map<String, Path> files = new HashMap<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.forEach(p -> files.put(p.getFileName().toString(), p));
        }
        JsonObject config = Json.readObject(dir.resolve(arch + "-config.json"), 1 << 20);
        GgufTokenizer.read(files, arch, config.getLong("vocab_size"), config).writeTo(new GgufMetadata());
    }

    /**
     * Runs {@code dequant4j inspect --json dir} and {@code dequant4j inspect dir} in-process; returns the exit code
     * and error output of the first, after checking that both agree and that the table, which quotes names from the
     * files, holds no control character but line ends (no terminal escapes, no forged lines).
     */
    private static String[] inspect(Path dir) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(new String[] {"inspect", "--json", dir.toString()}, new PrintWriter(out, true),
                new PrintWriter(err, true));
        StringWriter table = new StringWriter();
        StringWriter tableErr = new StringWriter();
        int tableCode = Main.run(new String[] {"inspect", dir.toString()}, new PrintWriter(table, true),
                new PrintWriter(tableErr, true));
        assertEquals(code, tableCode, tableErr.toString());
        String text = table.toString().replace(System.lineSeparator(), "\n");
        for (int i = 0; i < text.length(); i++) {
            if (text.charAt(i) != '\n' && Character.isISOControl(text.charAt(i))) {
                throw new AssertionError("control character " + (int) text.charAt(i) + " in inspect's table: " + text);
            }
        }
        return new String[] {Integer.toString(code), err.toString()};
    }

    /** What each byte-level target does with its input. */
    private static void parse(String target, byte[] in) throws IOException {
        switch (target) {
            case "json" -> Json.parse(in);
            case "safetensorsHeader" -> SafetensorsFile.parse(HEADER_NAME, safetensorsFile(in)).close();
            case "quantState" -> QuantState.parse(in);
            case "shardIndex" -> {
                Files.write(sharded.resolve("model.safetensors.index.json"), in);
                try (Checkpoint c = Checkpoint.open(sharded)) {
                    c.tensors();
                }
            }
            case "adapterConfig" -> {
                Files.write(adapter.resolve("adapter_config.json"), in);
                try (LoraAdapter a = LoraAdapter.open(adapter)) {
                    a.modules();
                    MergePlan plan = MergePlan.build(base, List.of(a));
                    for (String t : plan.tensors()) {
                        plan.ops(t);
                    }
                }
            }
            case "manifest" -> {
                Files.write(exported.resolve(Manifest.FILE_NAME), in);
                for (String problem : Manifest.verify(exported)) {
                    if (problem.isBlank() || problem.lines().count() != 1) {
                        throw new AssertionError("verify's problems are printed one per line: " + problem);
                    }
                }
            }
            case "gguf" -> GgufFile.parse(GGUF_NAME, in).close();
            case "sentencepiece" -> SentencePieceModel.parse(SPM_NAME, in);
            case "ggufTokenizer" -> {
                boolean bpe = in.length == 0 || (in[0] & 1) == 0;
                Path dir = bpe ? bpeTokenizer : spmTokenizer;
                byte[] body = in.length == 0 ? in : Arrays.copyOfRange(in, 1, in.length);
                Files.write(dir.resolve(bpe ? "tokenizer.json" : "tokenizer_config.json"), body);
                ggufTokenizer(dir, bpe ? "qwen2" : "llama");
            }
            default -> throw new IllegalArgumentException(target);
        }
    }

    @AfterAll
    static void tearDown() {
        if (base != null) {
            base.close();
        }
        if (base48 != null) {
            base48.close();
        }
        AtomicDirectory.deleteRecursively(work);
    }

    @FuzzTest(maxDuration = "2m")
    void json(byte[] in) throws Exception {
        CleanFailure.check(in.length, () -> parse("json", in));
    }

    /**
     * A whole safetensors file. The first byte chooses the form: even, the rest is the file as it is (the length
     * prefix fuzzed too); odd, the next three bytes are the data section's length (up to 1 MiB of zeros) and the rest
     * is the header JSON, behind a correct length prefix, so the fuzzer spends its time inside the header.
     */
    @FuzzTest(maxDuration = "2m")
    void safetensorsHeader(byte[] in) throws Exception {
        CleanFailure.check(safetensorsFile(in).length, () -> parse("safetensorsHeader", in));
    }

    /** A whole GGUF file: header, metadata, tensor infos and data, as llama.cpp and gguf-py lay it out. */
    @FuzzTest(maxDuration = "2m")
    void gguf(byte[] in) throws Exception {
        CleanFailure.check(in.length, () -> parse("gguf", in));
    }

    /** A SentencePiece {@code tokenizer.model} (protobuf ModelProto), read for the GGUF tokenizer metadata. */
    @FuzzTest(maxDuration = "2m")
    void sentencepiece(byte[] in) throws Exception {
        CleanFailure.check(in.length, () -> parse("sentencepiece", in));
    }

    /**
     * A tokenizer file read for the GGUF tokenizer metadata. The first byte chooses it: even, the tokenizer.json of a
     * Qwen2-style BPE (vocabulary, added tokens, pre-tokenizer, post-processor); odd, the tokenizer_config.json of a
     * Llama 2-style SentencePiece model (special tokens, added_tokens_decoder, chat template).
     */
    @FuzzTest(maxDuration = "2m")
    void ggufTokenizer(byte[] in) throws Exception {
        CleanFailure.check(in.length + 2 * tokenizerBytes, () -> parse("ggufTokenizer", in));
    }

    @FuzzTest(maxDuration = "2m")
    void quantState(byte[] in) throws Exception {
        CleanFailure.check(in.length, () -> parse("quantState", in));
    }

    /** {@code model.safetensors.index.json} of a real two-shard model, opened as a checkpoint. */
    @FuzzTest(maxDuration = "2m")
    void shardIndex(byte[] in) throws Exception {
        CleanFailure.check(in.length + shardBytes, () -> parse("shardIndex", in));
    }

    /** {@code adapter_config.json} beside real adapter weights: opened, then planned against its base. */
    @FuzzTest(maxDuration = "2m")
    void adapterConfig(byte[] in) throws Exception {
        CleanFailure.check(in.length + adapterBytes, () -> parse("adapterConfig", in));
    }

    /** {@code dequant4j-manifest.json} of a real export, checked by {@code verify}: its problem lines are lines. */
    @FuzzTest(maxDuration = "2m")
    void manifest(byte[] in) throws Exception {
        CleanFailure.check(in.length + exportedBytes, () -> parse("manifest", in));
    }

    /**
     * A {@code rank_pattern}/{@code alpha_pattern} key and a module name, matched as PEFT matches them with the step
     * budget the adapter config uses. The property: the match ends (a result, or the budget spent) well within the
     * per-input timeout however the key backtracks, and where it ends with a result, the metered pattern agrees with
     * the plain translation (the probes that count the steps do not change what matches).
     */
    @FuzzTest(maxDuration = "2m")
    void patternMatch(FuzzedDataProvider data) {
        String key = data.consumeString(200);
        String module = data.consumeRemainingAsString();
        if (module.isEmpty()) {
            return;
        }
        java.util.regex.Pattern metered;
        java.util.regex.Pattern plain;
        try {
            metered = PythonRegex.suffixPattern(key);
            plain = java.util.regex.Pattern.compile("(.*\\.)?(" + PythonRegex.translate(key) + ")$",
                    java.util.regex.Pattern.UNICODE_CHARACTER_CLASS);
        } catch (java.util.regex.PatternSyntaxException | StackOverflowError e) {
            return; // refused with a message by AdapterConfig
        }
        boolean result;
        try {
            result = PythonRegex.lookingAt(metered, module, PATTERN_STEPS);
        } catch (PythonRegex.TooManySteps | StackOverflowError e) {
            return; // refused naming the key
        }
        // without the probes the same match reads fewer characters, so it ends within the same budget
        assertEquals(result, PythonRegex.lookingAt(plain, module, PATTERN_STEPS), () -> "key " + key);
    }

    /** The budget AdapterConfig gives one match. */
    private static final long PATTERN_STEPS = 1_000_000;

    /**
     * A real fixture checkpoint with up to eight byte-level mutations (set a byte, set eight, insert, delete,
     * truncate), mostly inside the headers: opened, every tensor read as floats, and inspected by the CLI, which
     * must agree (exit 0 when the library opens it, else one {@code error:} line with the library's message).
     */
    @FuzzTest(maxDuration = "2m")
    void mutatedCheckpoint(FuzzedDataProvider data) throws Exception {
        Path dir = work.resolve("ckpt");
        AtomicDirectory.deleteRecursively(dir);
        Files.createDirectory(dir);
        String name = data.pickValue(CHECKPOINTS);
        List<Path> files = new ArrayList<>();
        try (Stream<Path> s = Files.list(Fixtures.checkpoint(name))) {
            for (Path p : s.sorted().toList()) {
                files.add(Files.copy(p, dir.resolve(p.getFileName())));
            }
        }
        int mutations = data.consumeInt(0, 8);
        for (int i = 0; i < mutations; i++) {
            Path f = data.pickValue(files);
            Files.write(f, mutate(Files.readAllBytes(f), data));
        }
        long total = 0;
        for (Path f : files) {
            total += Files.size(f);
        }
        String[] message = new String[1];
        CleanFailure.Outcome opened = CleanFailure.check(total, () -> {
            try (Checkpoint c = Checkpoint.open(dir)) {
                c.storedTensors();
                c.config();
            } catch (dev.dequant4j.Dequant4jException e) {
                message[0] = e.getMessage();
                throw e;
            }
        });
        String[] run = inspect(dir);
        if (opened == CleanFailure.Outcome.PARSED) {
            assertEquals("0", run[0], run[1]);
            CleanFailure.check(total, () -> {
                try (Checkpoint c = Checkpoint.open(dir)) {
                    for (TensorInfo t : c.tensors()) {
                        c.readFloats(t.name());
                    }
                }
            });
        } else {
            assertEquals("1", run[0], run[1]);
            assertEquals("error: " + message[0] + System.lineSeparator(), run[1]);
        }
    }

    /**
     * A real fixture adapter with up to eight byte-level mutations of its weights file or config (as above), opened
     * and planned against its base, every merge step built.
     */
    @FuzzTest(maxDuration = "2m")
    void mutatedAdapter(FuzzedDataProvider data) throws Exception {
        Path dir = work.resolve("adapter-mutated");
        AtomicDirectory.deleteRecursively(dir);
        Files.createDirectory(dir);
        String name = data.pickValue(Fixtures.adapterNames());
        List<Path> files = new ArrayList<>();
        try (Stream<Path> s = Files.list(Fixtures.adapter(name))) {
            for (Path p : s.sorted().toList()) {
                files.add(Files.copy(p, dir.resolve(p.getFileName())));
            }
        }
        int mutations = data.consumeInt(0, 8);
        for (int i = 0; i < mutations; i++) {
            Path f = data.pickValue(files);
            Files.write(f, mutate(Files.readAllBytes(f), data));
        }
        long total = 0;
        for (Path f : files) {
            total += Files.size(f);
        }
        Checkpoint against = name.startsWith("h48") ? base48 : base;
        CleanFailure.check(total + Files.size(against.files().getFirst()), () -> {
            try (LoraAdapter a = LoraAdapter.open(dir)) {
                MergePlan plan = MergePlan.build(against, List.of(a));
                for (String t : plan.tensors()) {
                    plan.ops(t);
                }
            }
        });
    }

    /** The seven byte-level targets behind one, chosen by the first byte, for the short run of every build. */
    @FuzzTest(maxDuration = "5s")
    void allParsers(byte[] in) throws Exception {
        if (in.length == 0) {
            return;
        }
        byte[] rest = Arrays.copyOfRange(in, 1, in.length);
        // counted from '0' so that the seeds, named by target, start with the target's digit
        switch (Math.floorMod((in[0] & 0xFF) - '0', 9)) {
            case 0 -> json(rest);
            case 1 -> safetensorsHeader(rest);
            case 2 -> quantState(rest);
            case 3 -> shardIndex(rest);
            case 4 -> adapterConfig(rest);
            case 5 -> manifest(rest);
            case 6 -> gguf(rest);
            case 7 -> sentencepiece(rest);
            default -> ggufTokenizer(rest);
        }
    }

    static byte[] safetensorsFile(byte[] in) {
        if (in.length == 0 || (in[0] & 1) == 0 || in.length < 4) {
            return in.length == 0 ? in : Arrays.copyOfRange(in, 1, in.length);
        }
        int dataLen = ((in[1] & 0xFF) | (in[2] & 0xFF) << 8 | (in[3] & 0xFF) << 16) % ((1 << 20) + 1);
        int jsonLen = in.length - 4;
        ByteBuffer b = ByteBuffer.allocate(8 + jsonLen + dataLen).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(jsonLen).put(in, 4, jsonLen);
        return b.array();
    }

    /** One byte-level mutation, at a position inside the header (length prefix included) three times in four. */
    static byte[] mutate(byte[] b, FuzzedDataProvider data) {
        if (b.length == 0) {
            return data.consumeBytes(16);
        }
        long declared = b.length >= 8 ? ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong() : 0;
        int headerEnd = (int) Math.clamp(8 + Math.max(0, declared), 1, b.length);
        int pos = data.consumeInt(0, 3) > 0 ? data.consumeInt(0, headerEnd - 1) : data.consumeInt(0, b.length - 1);
        switch (data.consumeInt(0, 4)) {
            case 0 -> b[pos] = data.consumeByte();
            case 1 -> {
                if (pos + 8 <= b.length) {
                    ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(pos, data.consumeLong());
                }
            }
            case 2 -> {
                return Arrays.copyOf(b, pos);
            }
            case 3 -> {
                byte[] ins = data.consumeBytes(16);
                byte[] out = new byte[b.length + ins.length];
                System.arraycopy(b, 0, out, 0, pos);
                System.arraycopy(ins, 0, out, pos, ins.length);
                System.arraycopy(b, pos, out, pos + ins.length, b.length - pos);
                return out;
            }
            default -> {
                int n = Math.min(data.consumeInt(1, 64), b.length - pos);
                byte[] out = new byte[b.length - n];
                System.arraycopy(b, 0, out, 0, pos);
                System.arraycopy(b, pos + n, out, pos, b.length - pos - n);
                return out;
            }
        }
        return b;
    }
}
